//! `erf` and `exp` for f32 as straight-line arithmetic (no calls, no table lookups, no branches other than
//! clamps), so a loop over a slice vectorises. NaN passes through both.

use std::f32::consts::{FRAC_1_SQRT_2, LOG2_E};

/// erf(x) as x·P(x²)/Q(x²), a rational minimax fit on [-4, 4]; outside it erf is ±1 to f32 precision.
/// The coefficients are the published ones of the fit used by Eigen and XLA for single precision.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    const P: [f32; 7] = [
        -1.609_603_3e-2,
        -2.954_6e-3,
        -7.349_906_3e-4,
        -5.692_506_4e-5,
        -2.101_024e-6,
        2.770_681_4e-8,
        -2.726_142_3e-10,
    ];
    const Q: [f32; 5] = [-1.426_473_9e-2, -7.373_329_2e-3, -1.682_827e-3, -2.133_740_6e-4, -1.456_607_2e-5];
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let p = ((((((P[6] * x2 + P[5]) * x2 + P[4]) * x2 + P[3]) * x2 + P[2]) * x2 + P[1]) * x2 + P[0]) * x;
    let q = (((Q[4] * x2 + Q[3]) * x2 + Q[2]) * x2 + Q[1]) * x2 + Q[0];
    p / q
}

/// e^x: x = n·ln2 + r with |r| <= ln2/2, e^r by a degree-7 polynomial (Cephes' coefficients), 2^n built in
/// the exponent bits. Clamped to the range where the result is a normal f32.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5·2^23 rounds to the nearest integer without a call.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p =
        ((((1.987_569_1e-4 * r + 1.398_2e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1) * r + 5e-1;
    let e = p * r * r + r + 1.0;
    // The low mantissa bits of `shifted` hold n in two's complement; adding the bias and shifting them into
    // the exponent field builds 2^n with integer operations only (a float-to-int cast would not vectorise).
    e * f32::from_bits(shifted.to_bits().wrapping_add(127) << 23)
}

/// Φ(x), the standard normal CDF.
#[inline(always)]
pub fn normal_cdf(x: f32) -> f32 {
    0.5 * (1.0 + erf(x * FRAC_1_SQRT_2))
}

/// φ(x), the standard normal density.
#[inline(always)]
pub fn normal_pdf(x: f32) -> f32 {
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    INV_SQRT_2PI * exp(-0.5 * x * x)
}

/// `out[i] = x[i]·Φ(x[i])`.
pub fn gelu_forward(x: &[f32], out: &mut [f32]) {
    gelu_forward_loop::best(x, out)
}

/// `out[i] = g[i]·(Φ(x[i]) + x[i]·φ(x[i]))`, the derivative of the exact GELU times the incoming gradient.
pub fn gelu_backward(x: &[f32], g: &[f32], out: &mut [f32]) {
    gelu_backward_loop::best(x, g, out)
}

super::simd::copies! {
    fn gelu_forward_loop(x: &[f32], out: &mut [f32]) {
        let n = out.len().min(x.len());
        let (out, x) = (&mut out[..n], &x[..n]);
        for i in 0..n {
            out[i] = x[i] * normal_cdf(x[i]);
        }
    }

    fn gelu_backward_loop(x: &[f32], g: &[f32], out: &mut [f32]) {
        let n = out.len().min(x.len()).min(g.len());
        let (out, x, g) = (&mut out[..n], &x[..n], &g[..n]);
        for i in 0..n {
            out[i] = g[i] * (normal_cdf(x[i]) + x[i] * normal_pdf(x[i]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> impl Iterator<Item = f32> {
        (-120_000..=120_000).map(|i| i as f32 * 1e-4)
    }

    #[test]
    fn erf_matches_libm_to_a_few_ulp() {
        // Absolute error at most 7 ulp of 1 (where erf saturates), relative error small near 0.
        let worst = grid().map(|x| (erf(x) - libm_erf(x)).abs()).fold(0.0f32, f32::max);
        assert!(worst < 4.5e-7, "max |erf - libm| = {worst:e}");
        let rel = grid().filter(|x| x.abs() < 1.0 && *x != 0.0).map(|x| ((erf(x) - libm_erf(x)) / libm_erf(x)).abs());
        let rel = rel.fold(0.0f32, f32::max);
        assert!(rel < 5e-7, "max relative error below 1: {rel:e}");
        assert_eq!(erf(0.0), 0.0);
        assert!((erf(30.0) - 1.0).abs() <= f32::EPSILON && erf(-30.0) == -erf(30.0), "{}", erf(30.0));
        assert!(erf(f32::NAN).is_nan());
    }

    #[test]
    fn exp_matches_std_in_relative_terms() {
        let worst = (-870_000..=880_000)
            .map(|i| i as f32 * 1e-4)
            .map(|x| ((exp(x) - x.exp()) / x.exp()).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 3e-7, "max relative error {worst:e}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(-1e4) >= 0.0 && exp(-1e4) < 1e-37);
    }

    #[test]
    fn slices_agree_with_the_scalar_definition() {
        let x: Vec<f32> = grid().step_by(7).collect();
        let g: Vec<f32> = x.iter().map(|v| 1.0 - 0.3 * v).collect();
        let mut y = vec![0.0; x.len()];
        gelu_forward(&x, &mut y);
        let mut d = vec![0.0; x.len()];
        gelu_backward(&x, &g, &mut d);
        for i in 0..x.len() {
            let cdf = 0.5 * (1.0 + libm_erf(x[i] / std::f32::consts::SQRT_2));
            let pdf = (-0.5 * x[i] * x[i]).exp() / (2.0 * std::f32::consts::PI).sqrt();
            assert!((y[i] - x[i] * cdf).abs() <= 1e-6 * x[i].abs().max(1.0), "gelu({})", x[i]);
            assert!((d[i] - g[i] * (cdf + x[i] * pdf)).abs() <= 2e-6 * g[i].abs().max(1.0), "gelu'({})", x[i]);
        }
    }

    /// Every vector width this CPU runs gives the baseline copy's bits, NaN and the clamps included.
    #[test]
    fn every_compiled_copy_gives_the_same_bits() {
        use crate::kernels::simd::Isa;
        let mut x: Vec<f32> = grid().step_by(13).collect();
        x.extend([f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 1e-30, -1e30, f32::MAX]);
        let g: Vec<f32> = x.iter().enumerate().map(|(i, v)| 0.7 - 0.01 * v + (i % 5) as f32).collect();
        let run = |isa: Isa| {
            let (mut y, mut d) = (vec![0.0f32; x.len()], vec![0.0f32; x.len()]);
            gelu_forward_loop::on(isa, &x, &mut y);
            gelu_backward_loop::on(isa, &x, &g, &mut d);
            [y, d].map(|v| v.iter().map(|f| f.to_bits()).collect::<Vec<u32>>())
        };
        let baseline = run(Isa::baseline());
        for isa in Isa::available() {
            assert_eq!(run(isa), baseline, "{isa:?}");
        }
    }

    fn libm_erf(x: f32) -> f32 {
        libm::erf(x as f64) as f32
    }
}
