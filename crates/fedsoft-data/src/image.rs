//! Image preprocessing: resize (nearest or bilinear), grey to three channels, mean/std normalisation, and
//! seeded random crop and flip for training. Output is `f32` in `N x 3 x S x S` (CHW), what the encoders eat.

use crate::dataset::ImageSet;
use crate::error::DataError;
use rand::RngExt;
use serde::{Deserialize, Serialize};

/// Resampling filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resize {
    Nearest,
    /// Half-pixel-centred bilinear, as torch's `interpolate(mode="bilinear", align_corners=False)`.
    #[default]
    Bilinear,
}

/// ImageNet statistics, which the ViT and DINOv2 checkpoints were trained with.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ImagePrep {
    pub size: usize,
    pub resize: Resize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl ImagePrep {
    pub fn imagenet(size: usize, resize: Resize) -> Self {
        ImagePrep { size, resize, mean: IMAGENET_MEAN, std: IMAGENET_STD }
    }
}

/// Source coordinate of output pixel `o` (half-pixel centres).
fn src_coord(o: usize, scale: f32) -> f32 {
    (o as f32 + 0.5) * scale - 0.5
}

/// Resizes one `h x w` plane to `s x s`.
pub fn resize_plane(src: &[f32], h: usize, w: usize, s: usize, mode: Resize) -> Vec<f32> {
    let (sy, sx) = (h as f32 / s as f32, w as f32 / s as f32);
    let mut out = Vec::with_capacity(s * s);
    for oy in 0..s {
        for ox in 0..s {
            let v = match mode {
                Resize::Nearest => {
                    let y = ((oy as f32 * sy).floor() as usize).min(h - 1);
                    let x = ((ox as f32 * sx).floor() as usize).min(w - 1);
                    src[y * w + x]
                }
                Resize::Bilinear => {
                    let fy = src_coord(oy, sy).clamp(0.0, (h - 1) as f32);
                    let fx = src_coord(ox, sx).clamp(0.0, (w - 1) as f32);
                    let (y0, x0) = (fy.floor() as usize, fx.floor() as usize);
                    let (y1, x1) = ((y0 + 1).min(h - 1), (x0 + 1).min(w - 1));
                    let (dy, dx) = (fy - y0 as f32, fx - x0 as f32);
                    let top = src[y0 * w + x0] * (1.0 - dx) + src[y0 * w + x1] * dx;
                    let bot = src[y1 * w + x0] * (1.0 - dx) + src[y1 * w + x1] * dx;
                    top * (1.0 - dy) + bot * dy
                }
            };
            out.push(v);
        }
    }
    out
}

/// All images as normalised `f32`, `N x 3 x S x S`. Grey images are replicated to three channels.
pub fn to_tensor(set: &ImageSet, prep: &ImagePrep) -> Result<Vec<f32>, DataError> {
    if prep.size == 0 {
        return Err(DataError::invalid("data.image_size", "must be positive"));
    }
    if set.channels != 1 && set.channels != 3 {
        return Err(DataError::invalid("images", format!("{} channels; expected 1 or 3", set.channels)));
    }
    if prep.std.iter().any(|&s| s <= 0.0) {
        return Err(DataError::invalid("data.std", "must be positive"));
    }
    let (h, w, s) = (set.height, set.width, prep.size);
    let mut out = Vec::with_capacity(set.len() * 3 * s * s);
    let mut plane = vec![0.0f32; h * w];
    for i in 0..set.len() {
        let img = set.image(i);
        let resized: Vec<Vec<f32>> = (0..set.channels)
            .map(|c| {
                for (p, v) in plane.iter_mut().enumerate() {
                    *v = img[p * set.channels + c] as f32 / 255.0;
                }
                if (h, w) == (s, s) { plane.clone() } else { resize_plane(&plane, h, w, s, prep.resize) }
            })
            .collect();
        for c in 0..3 {
            let src = &resized[if set.channels == 1 { 0 } else { c }];
            out.extend(src.iter().map(|v| (v - prep.mean[c]) / prep.std[c]));
        }
    }
    Ok(out)
}

/// Training augmentation on one normalised `3 x S x S` image: a random crop from the image padded by
/// `pad` pixels of zeros (the mean after normalisation), then a horizontal flip with probability 1/2.
pub fn augment(img: &mut [f32], size: usize, pad: usize, rng: &mut impl rand::Rng) {
    let dy = rng.random_range(0..=2 * pad) as isize - pad as isize;
    let dx = rng.random_range(0..=2 * pad) as isize - pad as isize;
    let flip = rng.random_bool(0.5);
    let src = img.to_vec();
    let s = size as isize;
    for c in 0..3 {
        for y in 0..s {
            for x in 0..s {
                let sy = y + dy;
                let sx0 = if flip { s - 1 - x } else { x };
                let sx = sx0 + dx;
                let v = if (0..s).contains(&sy) && (0..s).contains(&sx) {
                    src[(c as isize * s * s + sy * s + sx) as usize]
                } else {
                    0.0
                };
                img[(c as isize * s * s + y * s + x) as usize] = v;
            }
        }
    }
}
