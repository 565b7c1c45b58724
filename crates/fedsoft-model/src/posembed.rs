//! Resizing a learned position grid to another patch grid by bicubic interpolation, computed exactly as
//! torch's `interpolate(mode="bicubic", align_corners=False)` (cubic convolution with `A = -0.75`, half-pixel
//! source coordinates, edge taps clamped), so the positions match the original model's at every resolution.

const A: f64 = -0.75;

fn cc1(x: f64) -> f64 {
    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
}

fn cc2(x: f64) -> f64 {
    ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A
}

fn weights(t: f64) -> [f64; 4] {
    [cc2(t + 1.0), cc1(t), cc1(1.0 - t), cc2(2.0 - t)]
}

/// How source coordinates are derived from output ones.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scale {
    /// `in / out`: torch with `size=(out, out)`.
    Sizes,
    /// `1 / factor`: torch with `scale_factor=factor` (HF's DINOv2 passes `(out + 0.1) / in`).
    Factor(f64),
}

/// Resizes `channels` planes of `in_h x in_w` (channel-last: `[in_h, in_w, channels]`) to `out_h x out_w`.
pub fn bicubic(
    src: &[f32],
    in_h: usize,
    in_w: usize,
    channels: usize,
    out_h: usize,
    out_w: usize,
    scale: Scale,
) -> Vec<f32> {
    let (sh, sw) = match scale {
        Scale::Sizes => (in_h as f64 / out_h as f64, in_w as f64 / out_w as f64),
        Scale::Factor(f) => (1.0 / f, 1.0 / f),
    };
    let taps = |o: usize, s: f64, n: usize| -> ([usize; 4], [f64; 4]) {
        let real = s * (o as f64 + 0.5) - 0.5;
        let base = real.floor();
        let t = real - base;
        let idx = [-1i64, 0, 1, 2].map(|d| (base as i64 + d).clamp(0, n as i64 - 1) as usize);
        (idx, weights(t))
    };
    let mut out = vec![0.0f32; out_h * out_w * channels];
    for oy in 0..out_h {
        let (ys, wy) = taps(oy, sh, in_h);
        for ox in 0..out_w {
            let (xs, wx) = taps(ox, sw, in_w);
            for c in 0..channels {
                let mut acc = 0.0f64;
                for (i, &y) in ys.iter().enumerate() {
                    let mut row = 0.0f64;
                    for (j, &x) in xs.iter().enumerate() {
                        row += wx[j] * src[(y * in_w + x) * channels + c] as f64;
                    }
                    acc += wy[i] * row;
                }
                out[(oy * out_w + ox) * channels + c] = acc as f32;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_and_constant() {
        let src: Vec<f32> = (0..16).map(|x| x as f32).collect();
        assert_eq!(bicubic(&src, 4, 4, 1, 4, 4, Scale::Sizes), src);
        let c = vec![2.5f32; 9];
        assert!(bicubic(&c, 3, 3, 1, 7, 5, Scale::Sizes).iter().all(|v| (v - 2.5).abs() < 1e-6));
    }

    #[test]
    fn cubic_convolution_taps() {
        // A 1 x 2 signal [0, 1] upsampled to 4: source x = 0.5 (o + 0.5) - 0.5 gives t = 0.75, 0.25, 0.75, 0.25
        // with edge taps clamped; the weights are Keys' cubic with A = -0.75 (worked by hand).
        let x = bicubic(&[0.0, 1.0], 1, 2, 1, 1, 4, Scale::Sizes);
        let want = [-0.10546875f64, 0.2265625, 0.7734375, 1.10546875];
        for (a, b) in x.iter().zip(want) {
            assert!((*a as f64 - b).abs() < 1e-6, "{x:?}");
        }
        // Weights of every fractional offset sum to one.
        for t in [0.0, 0.1, 0.5, 0.9] {
            assert!((weights(t).iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
    }
}
