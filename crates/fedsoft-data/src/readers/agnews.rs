//! AG News CSV (`train.csv`, `test.csv`): rows of `"class index","title","description"`, classes 1 to 4, no
//! header.

use crate::dataset::TextSet;
use crate::error::DataError;
use std::path::Path;

pub const AG_NEWS_CLASSES: [&str; 4] = ["world", "sports", "business", "sci/tech"];

/// Reads one AG News CSV file; the text of a sample is its title and description.
pub fn read_ag_news(path: &Path) -> Result<TextSet, DataError> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_path(path)
        .map_err(|e| DataError::file(path, e.to_string()))?;
    let mut set = TextSet {
        texts: Vec::new(),
        labels: Vec::new(),
        classes: AG_NEWS_CLASSES.map(String::from).to_vec(),
        groups: None,
    };
    for (row, rec) in rdr.records().enumerate() {
        let rec = rec.map_err(|e| DataError::file(path, format!("row {}: {e}", row + 1)))?;
        if rec.len() != 3 {
            return Err(DataError::file(
                path,
                format!("row {}: {} fields, expected 3 (class, title, description)", row + 1, rec.len()),
            ));
        }
        let class: u32 = rec[0].trim().parse().map_err(|_| {
            DataError::file(path, format!("row {}: class index {:?} is not a number", row + 1, &rec[0]))
        })?;
        if !(1..=4).contains(&class) {
            return Err(DataError::file(path, format!("row {}: class index {class} outside 1..=4", row + 1)));
        }
        set.labels.push(class - 1);
        set.texts.push(format!("{} {}", rec[1].trim(), rec[2].trim().replace("\\n", " ").replace("\\", " ")));
    }
    if set.is_empty() {
        return Err(DataError::file(path, "no rows"));
    }
    Ok(set)
}

/// `dir/train.csv` and `dir/test.csv`.
pub fn load_ag_news(dir: &Path) -> Result<(TextSet, TextSet), DataError> {
    Ok((read_ag_news(&dir.join("train.csv"))?, read_ag_news(&dir.join("test.csv"))?))
}
