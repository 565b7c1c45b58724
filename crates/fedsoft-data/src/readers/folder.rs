//! Bring-your-own data: an image folder (`root/<class>/<image>`) or a CSV file of labelled texts.

use crate::dataset::{ImageSet, TextSet};
use crate::error::DataError;
use std::collections::BTreeMap;
use std::path::Path;

/// Images under `root/<class>/`, classes in name order, each decoded (PNG or JPEG), converted to RGB and
/// resized to `size x size` (bilinear).
pub fn load_image_folder(root: &Path, size: usize) -> Result<ImageSet, DataError> {
    if size == 0 {
        return Err(DataError::invalid("data.image_size", "must be positive"));
    }
    let classes = super::sorted_entries(root, Path::is_dir)?;
    if classes.is_empty() {
        return Err(DataError::file(root, "no class directories"));
    }
    let mut set = ImageSet {
        height: size,
        width: size,
        channels: 3,
        pixels: Vec::new(),
        labels: Vec::new(),
        classes: Vec::new(),
    };
    for (label, dir) in classes.iter().enumerate() {
        set.classes.push(dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
        let files = super::sorted_entries(dir, Path::is_file)?;
        for f in files {
            let img = image::open(&f).map_err(|e| DataError::file(&f, format!("cannot decode image: {e}")))?.to_rgb8();
            let img = image::imageops::resize(&img, size as u32, size as u32, image::imageops::FilterType::Triangle);
            set.pixels.extend_from_slice(img.as_raw());
            set.labels.push(label as u32);
        }
    }
    if set.is_empty() {
        return Err(DataError::file(root, "no images"));
    }
    Ok(set)
}

/// A CSV file with a header; `label_column` holds class names (or numbers), `text_column` the text. Classes
/// are numbered in sorted order of their names.
pub fn load_csv_text(path: &Path, label_column: &str, text_column: &str) -> Result<TextSet, DataError> {
    let mut rdr = csv::Reader::from_path(path).map_err(|e| DataError::file(path, e.to_string()))?;
    let headers = rdr.headers().map_err(|e| DataError::file(path, e.to_string()))?.clone();
    let col = |name: &str| {
        headers.iter().position(|h| h == name).ok_or_else(|| {
            DataError::file(
                path,
                format!("no column {name:?}; the header has {:?}", headers.iter().collect::<Vec<_>>()),
            )
        })
    };
    let (li, ti) = (col(label_column)?, col(text_column)?);
    let mut rows = Vec::new();
    for (i, rec) in rdr.records().enumerate() {
        let rec = rec.map_err(|e| DataError::file(path, format!("row {}: {e}", i + 2)))?;
        let (Some(l), Some(t)) = (rec.get(li), rec.get(ti)) else {
            return Err(DataError::file(path, format!("row {}: missing fields", i + 2)));
        };
        rows.push((l.to_string(), t.to_string()));
    }
    if rows.is_empty() {
        return Err(DataError::file(path, "no rows"));
    }
    let names: BTreeMap<String, u32> = {
        let mut n: Vec<String> = rows.iter().map(|(l, _)| l.clone()).collect();
        n.sort();
        n.dedup();
        n.into_iter().enumerate().map(|(i, s)| (s, i as u32)).collect()
    };
    Ok(TextSet {
        labels: rows.iter().map(|(l, _)| names[l]).collect(),
        texts: rows.into_iter().map(|(_, t)| t).collect(),
        classes: names.into_keys().collect(),
        groups: None,
    })
}
