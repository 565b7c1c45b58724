//! MNIST / Fashion-MNIST IDX files (raw or gzip): big-endian magic `0x0000_08DD`, where `08` is unsigned
//! bytes and `DD` the number of dimensions, then one big-endian `u32` per dimension, then the data.

use crate::dataset::ImageSet;
use crate::error::{DataError, read};
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::Path;

/// The Fashion-MNIST class names, in label order.
pub const FASHION_MNIST_CLASSES: [&str; 10] =
    ["t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"];

/// The file's bytes, gunzipped if they start with the gzip magic.
fn contents(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = read(path)?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| DataError::file(path, format!("bad gzip stream: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Reads an IDX file of unsigned bytes with the expected number of dimensions; returns dims and data.
pub fn read_idx(path: &Path, want_dims: usize) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let buf = contents(path)?;
    if buf.len() < 4 {
        return Err(DataError::file(path, "too short for an IDX header"));
    }
    if buf[0] != 0 || buf[1] != 0 || buf[2] != 0x08 {
        return Err(DataError::file(
            path,
            format!(
                "bad IDX magic {:02x}{:02x}{:02x}{:02x}: expected 0x0000080{want_dims} (unsigned bytes)",
                buf[0], buf[1], buf[2], buf[3]
            ),
        ));
    }
    let dims = buf[3] as usize;
    if dims != want_dims {
        return Err(DataError::file(path, format!("IDX file has {dims} dimensions, expected {want_dims}")));
    }
    let header = 4 + 4 * dims;
    if buf.len() < header {
        return Err(DataError::file(path, "truncated IDX header"));
    }
    let shape: Vec<usize> = (0..dims)
        .map(|d| u32::from_be_bytes(buf[4 + 4 * d..8 + 4 * d].try_into().expect("4 bytes")) as usize)
        .collect();
    let expected = shape
        .iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b))
        .ok_or_else(|| DataError::file(path, "IDX dimensions overflow"))?;
    let body = buf.len() - header;
    if body != expected {
        return Err(DataError::file(
            path,
            format!("IDX body has {body} bytes, but dimensions {shape:?} need {expected} (truncated or wrong file)"),
        ));
    }
    Ok((shape, buf[header..].to_vec()))
}

/// Reads an image file and a label file into a grey [`ImageSet`].
pub fn read_images_and_labels(images: &Path, labels: &Path, classes: &[&str]) -> Result<ImageSet, DataError> {
    let (shape, pixels) = read_idx(images, 3)?;
    let (lshape, lab) = read_idx(labels, 1)?;
    if shape[0] != lshape[0] {
        return Err(DataError::file(
            labels,
            format!("{} labels for {} images in {}", lshape[0], shape[0], images.display()),
        ));
    }
    if let Some((i, l)) = lab.iter().enumerate().find(|(_, l)| **l as usize >= classes.len()) {
        return Err(DataError::file(
            labels,
            format!("label {l} of sample {i} is out of range: {} classes", classes.len()),
        ));
    }
    Ok(ImageSet {
        height: shape[1],
        width: shape[2],
        channels: 1,
        pixels,
        labels: lab.into_iter().map(u32::from).collect(),
        classes: classes.iter().map(|s| s.to_string()).collect(),
    })
}

/// The four files of MNIST or Fashion-MNIST in `dir` (`train-images-idx3-ubyte[.gz]` etc.): (train, test).
pub fn load_mnist_like(dir: &Path, classes: &[&str]) -> Result<(ImageSet, ImageSet), DataError> {
    let find = |stem: &str| -> Result<std::path::PathBuf, DataError> {
        for name in [format!("{stem}.gz"), stem.to_string()] {
            let p = dir.join(&name);
            if p.is_file() {
                return Ok(p);
            }
        }
        Err(DataError::file(&dir.join(stem), "missing (looked for it with and without .gz)"))
    };
    let train = read_images_and_labels(&find("train-images-idx3-ubyte")?, &find("train-labels-idx1-ubyte")?, classes)?;
    let test = read_images_and_labels(&find("t10k-images-idx3-ubyte")?, &find("t10k-labels-idx1-ubyte")?, classes)?;
    if (train.height, train.width) != (test.height, test.width) {
        return Err(DataError::file(dir, "train and test images differ in size"));
    }
    Ok((train, test))
}
