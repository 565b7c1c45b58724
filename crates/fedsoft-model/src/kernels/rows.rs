//! Row-wise softmax and LayerNorm on f32 slices: the arithmetic of [`super::attention`](mod@super::attention)
//! and [`super::layer_norm`](mod@super::layer_norm), written so that each loop vectorises (sums over eight
//! fixed lanes, so the result does not depend on how rows are handed to threads); LayerNorm spreads blocks of
//! whole rows with rayon, the softmax runs on its caller's thread (one head of one sample at a time).

use super::math;
use rayon::prelude::*;

/// Elements a block of rows holds at least before a second thread is worth waking.
const BLOCK_ELEMENTS: usize = 1 << 15;

fn rows_per_block(width: usize) -> usize {
    BLOCK_ELEMENTS.div_ceil(width.max(1)).max(1)
}

/// Calls `f(first_row, rows_in, rows_out)` on blocks of whole rows of `width`, in parallel when there is
/// enough work. Every row is computed the same way whichever block it falls in.
pub fn for_row_blocks<F>(input: &[f32], out: &mut [f32], width: usize, f: F)
where
    F: Fn(usize, &[f32], &mut [f32]) + Sync,
{
    let width = width.max(1);
    let rows_per_block = rows_per_block(width);
    let block = rows_per_block * width;
    if out.len() <= block {
        return f(0, input, out);
    }
    out.par_chunks_mut(block)
        .zip(input.par_chunks(block))
        .enumerate()
        .for_each(|(i, (o, x))| f(i * rows_per_block, x, o));
}

/// Sum over eight interleaved lanes, then the lanes pairwise: a fixed order that the compiler can keep
/// in one vector register.
#[inline(always)]
fn sum(v: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut chunks = v.chunks_exact(8);
    for c in &mut chunks {
        for l in 0..8 {
            acc[l] += c[l];
        }
    }
    for (l, x) in chunks.remainder().iter().enumerate() {
        acc[l] += x;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 8];
    let (mut ca, mut cb) = (a.chunks_exact(8), b.chunks_exact(8));
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    for (l, (x, y)) in ca.remainder().iter().zip(cb.remainder()).enumerate() {
        acc[l] += x * y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

#[inline(always)]
fn max(v: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let mut chunks = v.chunks_exact(8);
    for c in &mut chunks {
        for l in 0..8 {
            acc[l] = acc[l].max(c[l]);
        }
    }
    for (l, x) in chunks.remainder().iter().enumerate() {
        acc[l] = acc[l].max(*x);
    }
    acc.into_iter().fold(f32::NEG_INFINITY, f32::max)
}

/// `y = softmax(scale * x + bias)` over one row (`bias` is added element-wise when given).
#[inline(always)]
fn softmax_row(x: &[f32], bias: Option<&[f32]>, scale: f32, y: &mut [f32]) {
    let n = y.len().min(x.len());
    let (x, y) = (&x[..n], &mut y[..n]);
    match bias {
        Some(b) => {
            let b = &b[..n];
            for j in 0..n {
                y[j] = scale * x[j] + b[j];
            }
        }
        None => {
            for j in 0..n {
                y[j] = scale * x[j];
            }
        }
    }
    let m = max(y);
    for v in y.iter_mut() {
        *v = math::exp(*v - m);
    }
    let inv = 1.0 / sum(y);
    for v in y.iter_mut() {
        *v *= inv;
    }
}

/// `dx = scale * y * (dy - <dy, y>)` over one row: the softmax's backward step.
#[inline(always)]
fn softmax_back_row(y: &[f32], dy: &[f32], scale: f32, dx: &mut [f32]) {
    let n = dx.len().min(y.len()).min(dy.len());
    let (y, dy, dx) = (&y[..n], &dy[..n], &mut dx[..n]);
    let d = dot(y, dy);
    for j in 0..n {
        dx[j] = scale * y[j] * (dy[j] - d);
    }
}

/// Mean and `1 / sqrt(var + eps)` (biased variance) of one row, then `y = (x - mean) * rstd * g + b`.
#[inline(always)]
fn layer_norm_row(x: &[f32], g: &[f32], b: &[f32], eps: f32, y: &mut [f32]) -> (f32, f32) {
    let n = y.len().min(x.len()).min(g.len()).min(b.len());
    let (x, g, b, y) = (&x[..n], &g[..n], &b[..n], &mut y[..n]);
    let mean = sum(x) / n as f32;
    for j in 0..n {
        y[j] = x[j] - mean;
    }
    let var = dot(y, y) / n as f32;
    let rstd = 1.0 / (var + eps).sqrt();
    for j in 0..n {
        y[j] = y[j] * rstd * g[j] + b[j];
    }
    (mean, rstd)
}

/// The LayerNorm's gradient with respect to its input for one row, with the scale `g` held fixed:
/// `dx = rstd * (g dy - mean(g dy) - xhat * mean(g dy xhat))`, `xhat = (x - mean) * rstd`.
/// `dx` is used as scratch for `g dy`.
#[inline(always)]
fn layer_norm_back_row(x: &[f32], dy: &[f32], g: &[f32], (mean, rstd): (f32, f32), dx: &mut [f32]) {
    let n = dx.len().min(x.len()).min(dy.len()).min(g.len());
    let (x, dy, g, dx) = (&x[..n], &dy[..n], &g[..n], &mut dx[..n]);
    for j in 0..n {
        dx[j] = g[j] * dy[j];
    }
    let mut acc = [0.0f32; 8];
    let (mut cx, mut cd) = (x.chunks_exact(8), dx.chunks_exact(8));
    for (xs, ds) in (&mut cx).zip(&mut cd) {
        for l in 0..8 {
            acc[l] += ds[l] * ((xs[l] - mean) * rstd);
        }
    }
    for (l, (xs, ds)) in cx.remainder().iter().zip(cd.remainder()).enumerate() {
        acc[l] += ds * ((xs - mean) * rstd);
    }
    let c = (((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))) / n as f32;
    let a = sum(dx) / n as f32;
    for j in 0..n {
        dx[j] = rstd * (dx[j] - a - (x[j] - mean) * rstd * c);
    }
}

// The row loops, compiled once per vector width (see `simd`); every copy gives the same bits.
super::simd::copies! {
    fn softmax_rows(x: &[f32], bias: Option<&[f32]>, scale: f32, width: usize, y: &mut [f32]) {
        let bias = bias.map(|b| &b[..width]);
        for (xr, yr) in x.chunks(width).zip(y.chunks_mut(width)) {
            softmax_row(xr, bias, scale, yr);
        }
    }

    fn softmax_back_rows(y: &[f32], dy: &[f32], scale: f32, width: usize, dx: &mut [f32]) {
        for ((yr, dyr), dxr) in y.chunks(width).zip(dy.chunks(width)).zip(dx.chunks_mut(width)) {
            softmax_back_row(yr, dyr, scale, dxr);
        }
    }

    fn layer_norm_rows(x: &[f32], g: &[f32], b: &[f32], eps: f32, y: &mut [f32], stats: &mut [(f32, f32)]) {
        let width = g.len();
        for ((xr, yr), st) in x.chunks(width).zip(y.chunks_mut(width)).zip(stats.iter_mut()) {
            *st = layer_norm_row(xr, g, b, eps, yr);
        }
    }

    fn layer_norm_back_rows(x: &[f32], dy: &[f32], g: &[f32], stats: &[(f32, f32)], dx: &mut [f32]) {
        let width = g.len();
        for (((xr, dyr), st), dxr) in x.chunks(width).zip(dy.chunks(width)).zip(stats).zip(dx.chunks_mut(width)) {
            layer_norm_back_row(xr, dyr, g, *st, dxr);
        }
    }
}

/// Row-wise `softmax(scale * x + bias)` of rows of `width` on the calling thread, every row shifted by the
/// same `bias` row (of `width`): one attention head's scores of one sample, whose caller already runs
/// side by side with others.
pub fn softmax(x: &[f32], bias: Option<&[f32]>, scale: f32, width: usize, y: &mut [f32]) {
    if width > 0 {
        softmax_rows::best(x, bias, scale, width, y);
    }
}

/// The softmax's input gradient from its output `y` and the output gradient `dy`, on the calling thread.
pub fn softmax_backward(y: &[f32], dy: &[f32], scale: f32, width: usize, dx: &mut [f32]) {
    if width > 0 {
        softmax_back_rows::best(y, dy, scale, width, dx);
    }
}

/// Row-wise LayerNorm with scale `g` and shift `b` (their length is the row width); returns each row's
/// mean and reciprocal standard deviation for the backward step.
pub fn layer_norm(x: &[f32], g: &[f32], b: &[f32], eps: f32, y: &mut [f32]) -> Vec<(f32, f32)> {
    let width = g.len().max(1);
    let mut stats = vec![(0.0, 0.0); y.len() / width];
    let per = rows_per_block(width);
    if stats.len() <= per {
        layer_norm_rows::best(x, g, b, eps, y, &mut stats);
    } else {
        y.par_chunks_mut(per * width)
            .zip(x.par_chunks(per * width))
            .zip(stats.par_chunks_mut(per))
            .for_each(|((ys, xs), st)| layer_norm_rows::best(xs, g, b, eps, ys, st));
    }
    stats
}

/// The LayerNorm's input gradient (scale and shift are frozen).
pub fn layer_norm_backward(x: &[f32], dy: &[f32], g: &[f32], stats: &[(f32, f32)], dx: &mut [f32]) {
    let width = g.len().max(1);
    for_row_blocks(x, dx, width, |first, xs, dxs| {
        let rows = xs.len() / width;
        layer_norm_back_rows::best(xs, &dy[first * width..][..xs.len()], g, &stats[first..first + rows], dxs)
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_support::in_pool;
    use proptest::prelude::*;

    /// Rows of a width and count drawn by proptest, with values spread over a wide range.
    fn rows() -> impl Strategy<Value = (usize, Vec<f32>, Vec<f32>)> {
        (1usize..40, 1usize..12).prop_flat_map(|(width, n)| {
            let len = width * n;
            (Just(width), prop::collection::vec(-30.0f32..30.0, len), prop::collection::vec(-3.0f32..3.0, len))
        })
    }

    proptest! {
        /// Softmax rows are probability vectors, and their backward step leaves each row's gradient
        /// summing to zero (adding a constant to a row's scores changes nothing).
        #[test]
        fn softmax_laws((width, x, dy) in rows(), scale in 0.05f32..2.0) {
            let mut y = vec![0.0; x.len()];
            softmax(&x, None, scale, width, &mut y);
            let mut dx = vec![0.0; x.len()];
            softmax_backward(&y, &dy, scale, width, &mut dx);
            for (yr, dxr) in y.chunks(width).zip(dx.chunks(width)) {
                prop_assert!(yr.iter().all(|v| (0.0..=1.0).contains(v)));
                prop_assert!((yr.iter().sum::<f32>() - 1.0).abs() < 1e-5);
                let scale_of = dy.iter().fold(1.0f32, |m, v| m.max(v.abs())) * scale;
                prop_assert!(dxr.iter().sum::<f32>().abs() < 1e-5 * scale_of, "{dxr:?}");
            }
        }

        /// With unit scale and no shift, LayerNorm rows have mean 0 and mean square 1 (up to eps), and the
        /// input gradient of every row sums to zero.
        #[test]
        fn layer_norm_laws((width, x, dy) in rows()) {
            prop_assume!(width >= 2);
            let (g, b) = (vec![1.0; width], vec![0.0; width]);
            let mut y = vec![0.0; x.len()];
            let stats = layer_norm(&x, &g, &b, 1e-6, &mut y);
            let mut dx = vec![0.0; x.len()];
            layer_norm_backward(&x, &dy, &g, &stats, &mut dx);
            let rows = x.chunks(width).zip(y.chunks(width)).zip(dx.chunks(width)).zip(&stats);
            for (((xr, yr), dxr), &(_, rstd)) in rows {
                // "Up to eps": the mean square is var / (var + eps), within 1e-3 of 1 only when var >= 1e-3;
                // a spread of 0.04 between two values (var 4e-4) was once drawn and missed by 2.6e-3.
                let n = width as f32;
                let mean = xr.iter().sum::<f32>() / n;
                prop_assume!(xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n > 1e-2);
                prop_assert!((yr.iter().sum::<f32>() / n).abs() < 1e-4);
                prop_assert!((yr.iter().map(|v| v * v).sum::<f32>() / n - 1.0).abs() < 1e-3);
                prop_assert!(dxr.iter().sum::<f32>().abs() < 1e-4 * rstd.max(1.0) * n, "{dxr:?}");
            }
        }
    }

    /// Enough rows to be cut into blocks, with a ragged width: every LayerNorm output bit is the same on
    /// one thread and on three, and a row in a later block equals that row normalised alone.
    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let width = 67;
        let rows = 3 * BLOCK_ELEMENTS / width + 5;
        let x: Vec<f32> = (0..rows * width).map(|i| ((i * 7919 % 1013) as f32 - 506.0) * 0.01).collect();
        let dy: Vec<f32> = (0..rows * width).map(|i| ((i * 31 % 17) as f32 - 8.0) * 0.1).collect();
        let g: Vec<f32> = (0..width).map(|i| 1.0 + i as f32 * 0.01).collect();
        let b: Vec<f32> = (0..width).map(|i| i as f32 * -0.02).collect();
        let run = || {
            let mut z = vec![0.0; x.len()];
            let stats = layer_norm(&x, &g, &b, 1e-5, &mut z);
            let mut dz = vec![0.0; x.len()];
            layer_norm_backward(&x, &dy, &g, &stats, &mut dz);
            [z, dz].map(|v| v.iter().map(|f| f.to_bits()).collect::<Vec<u32>>())
        };
        let one = in_pool(1, run);
        assert_eq!(one, in_pool(3, run));
        let r = rows - 2;
        let mut alone = vec![0.0; width];
        layer_norm(&x[r * width..(r + 1) * width], &g, &b, 1e-5, &mut alone);
        assert_eq!(alone.iter().map(|f| f.to_bits()).collect::<Vec<_>>(), one[0][r * width..(r + 1) * width]);
    }

    /// Every vector width this CPU runs gives the baseline copy's bits, on ragged widths (vector tails).
    #[test]
    fn every_compiled_copy_gives_the_same_bits() {
        use crate::kernels::simd::Isa;
        for width in [1usize, 7, 17, 64, 67] {
            let rows = 9;
            let x: Vec<f32> = (0..rows * width).map(|i| ((i * 7919 % 1013) as f32 - 506.0) * 0.013).collect();
            let dy: Vec<f32> = (0..rows * width).map(|i| ((i * 31 % 17) as f32 - 8.0) * 0.1).collect();
            let g: Vec<f32> = (0..width).map(|i| 1.0 + i as f32 * 0.01).collect();
            let b: Vec<f32> = (0..width).map(|i| i as f32 * -0.02).collect();
            let bias: Vec<f32> = (0..width).map(|i| if i % 3 == 1 { -1e9 } else { 0.1 * i as f32 }).collect();
            let run = |isa: Isa| {
                let n = rows * width;
                let (mut s, mut ds, mut y, mut dx) = (vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n]);
                let mut stats = vec![(0.0, 0.0); rows];
                softmax_rows::on(isa, &x, Some(&bias), 0.3, width, &mut s);
                softmax_back_rows::on(isa, &s, &dy, 0.3, width, &mut ds);
                layer_norm_rows::on(isa, &x, &g, &b, 1e-5, &mut y, &mut stats);
                layer_norm_back_rows::on(isa, &x, &dy, &g, &stats, &mut dx);
                let stats: Vec<f32> = stats.iter().flat_map(|&(m, r)| [m, r]).collect();
                [s, ds, y, dx, stats].map(|v| v.iter().map(|f| f.to_bits()).collect::<Vec<u32>>())
            };
            let baseline = run(Isa::baseline());
            for isa in Isa::available() {
                assert_eq!(run(isa), baseline, "{isa:?}, width {width}");
            }
        }
    }

    /// A bias row shifts every row's scores alike: -1e9 on a key leaves it (next to) no weight in any row.
    #[test]
    fn a_bias_row_masks_the_same_key_in_every_row() {
        let (width, rows) = (7, 5);
        let x: Vec<f32> = (0..rows * width).map(|i| ((i * 53 % 97) as f32 - 48.0) * 0.21).collect();
        let mut bias = vec![0.0f32; width];
        bias[3] = -1e9;
        let mut y = vec![0.0; x.len()];
        softmax(&x, Some(&bias), 0.37, width, &mut y);
        for row in y.chunks(width) {
            assert!(row[3] < 1e-30, "{row:?}");
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
    }
}
