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

/// Source coordinate of output pixel `o` (half-pixel centres).
fn src_coord(o: usize, scale: f32) -> f32 {
    (o as f32 + 0.5) * scale - 0.5
}

/// Where the outputs along one axis read from: output `o` is `(1 - frac[o]) * src[lo[o]] + frac[o] *
/// src[hi[o]]` (nearest: `lo[o]` alone). The same for every row or column, so computed once per plane.
struct Taps {
    lo: Vec<usize>,
    hi: Vec<usize>,
    frac: Vec<f32>,
}

fn taps(n: usize, s: usize, mode: Resize) -> Taps {
    let scale = n as f32 / s as f32;
    let mut t = Taps { lo: Vec::with_capacity(s), hi: Vec::with_capacity(s), frac: Vec::with_capacity(s) };
    for o in 0..s {
        match mode {
            Resize::Nearest => {
                let i = ((o as f32 * scale).floor() as usize).min(n - 1);
                t.lo.push(i);
                t.hi.push(i);
                t.frac.push(0.0);
            }
            Resize::Bilinear => {
                let f = src_coord(o, scale).clamp(0.0, (n - 1) as f32);
                let lo = f.floor() as usize;
                t.lo.push(lo);
                t.hi.push((lo + 1).min(n - 1));
                t.frac.push(f - lo as f32);
            }
        }
    }
    t
}

/// Resizes one `h x w` plane to `s x s`. Bilinear is separable: each source row is interpolated along x
/// once, then output rows blend two of those, the same products and sums as the per-pixel formula.
pub fn resize_plane(src: &[f32], h: usize, w: usize, s: usize, mode: Resize) -> Vec<f32> {
    let (ty, tx) = (taps(h, s, mode), taps(w, s, mode));
    let mut out = Vec::with_capacity(s * s);
    match mode {
        Resize::Nearest => {
            for &y in &ty.lo {
                out.extend(tx.lo.iter().map(|&x| src[y * w + x]));
            }
        }
        Resize::Bilinear => {
            let mut along_x = vec![0.0f32; h * s];
            for (y, row) in along_x.chunks_exact_mut(s).enumerate() {
                let line = &src[y * w..(y + 1) * w];
                for (o, v) in row.iter_mut().enumerate() {
                    let dx = tx.frac[o];
                    *v = line[tx.lo[o]] * (1.0 - dx) + line[tx.hi[o]] * dx;
                }
            }
            for oy in 0..s {
                let (top, bot, dy) = (ty.lo[oy] * s, ty.hi[oy] * s, ty.frac[oy]);
                out.extend((0..s).map(|ox| along_x[top + ox] * (1.0 - dy) + along_x[bot + ox] * dy));
            }
        }
    }
    out
}

impl ImagePrep {
    pub fn imagenet(size: usize, resize: Resize) -> Self {
        ImagePrep { size, resize, mean: IMAGENET_MEAN, std: IMAGENET_STD }
    }

    /// Refuses what [`ImagePrep::append`] cannot prepare: a zero size, a channel count other than 1 or 3, a
    /// non-positive standard deviation.
    pub fn check(&self, set: &ImageSet) -> Result<(), DataError> {
        if self.size == 0 {
            return Err(DataError::invalid("data.image_size", "must be positive"));
        }
        if set.channels != 1 && set.channels != 3 {
            return Err(DataError::invalid("images", format!("{} channels; expected 1 or 3", set.channels)));
        }
        if self.std.iter().any(|&s| s <= 0.0) {
            return Err(DataError::invalid("data.std", "must be positive"));
        }
        Ok(())
    }

    /// Appends image `i` of `set` to `out` as normalised `3 x S x S` (grey replicated to three channels).
    /// The set must have passed [`ImagePrep::check`].
    pub fn append(&self, set: &ImageSet, i: usize, out: &mut Vec<f32>) {
        let (h, w, s) = (set.height, set.width, self.size);
        let img = set.image(i);
        let mut plane = vec![0.0f32; h * w];
        let resized: Vec<Vec<f32>> = (0..set.channels)
            .map(|c| {
                for (p, v) in plane.iter_mut().enumerate() {
                    *v = img[p * set.channels + c] as f32 / 255.0;
                }
                if (h, w) == (s, s) { plane.clone() } else { resize_plane(&plane, h, w, s, self.resize) }
            })
            .collect();
        for c in 0..3 {
            let src = &resized[if set.channels == 1 { 0 } else { c }];
            out.extend(src.iter().map(|v| (v - self.mean[c]) / self.std[c]));
        }
    }
}

/// All images as normalised `f32`, `N x 3 x S x S`. Grey images are replicated to three channels.
pub fn to_tensor(set: &ImageSet, prep: &ImagePrep) -> Result<Vec<f32>, DataError> {
    prep.check(set)?;
    let mut out = Vec::with_capacity(set.len() * 3 * prep.size * prep.size);
    for i in 0..set.len() {
        prep.append(set, i, &mut out);
    }
    Ok(out)
}

/// Images kept as decoded (8-bit, their own size) and prepared when a batch asks for them. A prepared image
/// takes `12 S^2 / (h w c)` times the bytes of a decoded one (48x for Fashion-MNIST at 56 px, 196x for
/// CIFAR at 224 px, where a whole prepared training set would take 30 GB); preparing a batch's images costs
/// far less than its step (500 grey images to 56 px: about 5 ms on one core), and gives the same values.
#[derive(Debug, Clone)]
pub struct OnDemand {
    set: ImageSet,
    prep: ImagePrep,
}

impl OnDemand {
    pub fn new(set: ImageSet, prep: ImagePrep) -> Result<Self, DataError> {
        prep.check(&set)?;
        Ok(OnDemand { set, prep })
    }

    /// Side of the prepared images.
    pub fn size(&self) -> usize {
        self.prep.size
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// The images at `idx`, in that order, as `idx.len() x 3 x S x S`.
    pub fn gather(&self, idx: &[usize]) -> Vec<f32> {
        let mut out = Vec::with_capacity(idx.len() * 3 * self.prep.size * self.prep.size);
        for &i in idx {
            self.prep.append(&self.set, i, &mut out);
        }
        out
    }
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
