//! CIFAR-10 and CIFAR-100 in their official binary layout: fixed-size records of label byte(s) followed by
//! 3072 bytes of a 32x32 image stored channel-planar (1024 red, 1024 green, 1024 blue).

use crate::dataset::ImageSet;
use crate::error::{DataError, read};
use std::path::Path;

const PLANE: usize = 32 * 32;
const IMAGE: usize = 3 * PLANE;

pub const CIFAR10_CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// Which CIFAR-100 label to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cifar100Label {
    /// 100 fine classes (the paper's task).
    #[default]
    Fine,
    /// 20 superclasses.
    Coarse,
}

/// Parses one binary file. `label_bytes` is 1 (CIFAR-10) or 2 (CIFAR-100: coarse, fine); `pick` chooses
/// which of them is the label; `classes` bounds it.
pub fn read_batch(
    path: &Path,
    label_bytes: usize,
    pick: usize,
    classes: usize,
) -> Result<(Vec<u8>, Vec<u32>), DataError> {
    let buf = read(path)?;
    let record = label_bytes + IMAGE;
    if buf.is_empty() || buf.len() % record != 0 {
        return Err(DataError::file(
            path,
            format!("{} bytes is not a whole number of {record}-byte records (wrong variant or truncated)", buf.len()),
        ));
    }
    let n = buf.len() / record;
    let mut pixels = Vec::with_capacity(n * IMAGE);
    let mut labels = Vec::with_capacity(n);
    for (i, rec) in buf.chunks_exact(record).enumerate() {
        let l = rec[pick] as usize;
        if l >= classes {
            return Err(DataError::file(path, format!("record {i} has label {l}, expected below {classes}")));
        }
        labels.push(l as u32);
        let img = &rec[label_bytes..];
        for p in 0..PLANE {
            pixels.extend_from_slice(&[img[p], img[PLANE + p], img[2 * PLANE + p]]);
        }
    }
    Ok((pixels, labels))
}

fn class_names(dir: &Path, file: &str, fallback: usize) -> Vec<String> {
    std::fs::read_to_string(dir.join(file))
        .ok()
        .map(|s| s.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect::<Vec<_>>())
        .filter(|v| v.len() == fallback)
        .unwrap_or_else(|| (0..fallback).map(|i| format!("class{i}")).collect())
}

fn assemble(parts: Vec<(Vec<u8>, Vec<u32>)>, classes: Vec<String>) -> ImageSet {
    let mut set = ImageSet { height: 32, width: 32, channels: 3, pixels: Vec::new(), labels: Vec::new(), classes };
    for (p, l) in parts {
        set.pixels.extend(p);
        set.labels.extend(l);
    }
    set
}

/// CIFAR-10 from `dir` (`data_batch_1.bin` .. `data_batch_5.bin`, `test_batch.bin`): (train, test).
pub fn load_cifar10(dir: &Path) -> Result<(ImageSet, ImageSet), DataError> {
    let classes: Vec<String> = {
        let names = class_names(dir, "batches.meta.txt", 10);
        if names.iter().all(|n| n.starts_with("class")) {
            CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect()
        } else {
            names
        }
    };
    let train = (1..=5)
        .map(|i| read_batch(&dir.join(format!("data_batch_{i}.bin")), 1, 0, 10))
        .collect::<Result<Vec<_>, _>>()?;
    let test = read_batch(&dir.join("test_batch.bin"), 1, 0, 10)?;
    Ok((assemble(train, classes.clone()), assemble(vec![test], classes)))
}

/// CIFAR-100 from `dir` (`train.bin`, `test.bin`, optional `fine_label_names.txt` / `coarse_label_names.txt`).
pub fn load_cifar100(dir: &Path, label: Cifar100Label) -> Result<(ImageSet, ImageSet), DataError> {
    let (pick, classes, names) = match label {
        Cifar100Label::Fine => (1, 100, "fine_label_names.txt"),
        Cifar100Label::Coarse => (0, 20, "coarse_label_names.txt"),
    };
    let names = class_names(dir, names, classes);
    let train = read_batch(&dir.join("train.bin"), 2, pick, classes)?;
    let test = read_batch(&dir.join("test.bin"), 2, pick, classes)?;
    Ok((assemble(vec![train], names.clone()), assemble(vec![test], names)))
}
