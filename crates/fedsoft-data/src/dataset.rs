//! In-memory data sets: raw pixels or raw text with integer labels and class names.

use serde::{Deserialize, Serialize};

/// Images stored as `u8` in `n x height x width x channels` (HWC) order.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSet {
    pub height: usize,
    pub width: usize,
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    pub pixels: Vec<u8>,
    pub labels: Vec<u32>,
    pub classes: Vec<String>,
}

impl ImageSet {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    pub fn image_len(&self) -> usize {
        self.height * self.width * self.channels
    }
    /// Pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[i * n..(i + 1) * n]
    }
    /// The images at `idx`, in that order.
    pub fn subset(&self, idx: &[usize]) -> ImageSet {
        let mut pixels = Vec::with_capacity(idx.len() * self.image_len());
        for &i in idx {
            pixels.extend_from_slice(self.image(i));
        }
        ImageSet {
            pixels,
            labels: idx.iter().map(|&i| self.labels[i]).collect(),
            classes: self.classes.clone(),
            ..*self
        }
    }
    /// Samples per class.
    pub fn class_counts(&self) -> Vec<usize> {
        counts(&self.labels, self.classes.len())
    }
}

/// Texts with labels; `groups` ties samples cut from one document together (Brown), so splits can keep a
/// document on one side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextSet {
    pub texts: Vec<String>,
    pub labels: Vec<u32>,
    pub classes: Vec<String>,
    pub groups: Option<Vec<u32>>,
}

impl TextSet {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    pub fn subset(&self, idx: &[usize]) -> TextSet {
        TextSet {
            texts: idx.iter().map(|&i| self.texts[i].clone()).collect(),
            labels: idx.iter().map(|&i| self.labels[i]).collect(),
            classes: self.classes.clone(),
            groups: self.groups.as_ref().map(|g| idx.iter().map(|&i| g[i]).collect()),
        }
    }
    pub fn class_counts(&self) -> Vec<usize> {
        counts(&self.labels, self.classes.len())
    }
}

pub(crate) fn counts(labels: &[u32], classes: usize) -> Vec<usize> {
    let mut c = vec![0; classes];
    for &l in labels {
        if let Some(x) = c.get_mut(l as usize) {
            *x += 1;
        }
    }
    c
}
