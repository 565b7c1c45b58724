//! The statistics behind a verdict: a paired 95 % confidence interval over seeds.
//!
//! Seeds pair the runs (one seed gives every variant the same data split, clients, channels and test set), so
//! a claim is judged on the per-seed differences `a_s - b_s`. Their mean gets a two-sided Student t interval
//! with `n - 1` degrees of freedom: the usual choice for a handful of paired measurements, and exact when the
//! differences are normal. With fewer than [`MIN_SEEDS`] pairs no verdict is given at all: "the same sign on
//! three seeds" happens by chance a quarter of the time for two equal methods.

use statrs::distribution::{ContinuousCDF, StudentsT};

/// Fewest paired seeds a verdict is given on.
pub const MIN_SEEDS: usize = 5;

/// Two-sided coverage of the interval.
pub const CONFIDENCE: f64 = 0.95;

/// Mean of the paired differences with its confidence interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation of the differences (`n - 1` in the denominator).
    pub sd: f64,
    pub lo: f64,
    pub hi: f64,
}

/// Mean and sample standard deviation (0 for fewer than two values).
pub fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n.max(1.0);
    let var = if v.len() > 1 { v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (mean, var.sqrt())
}

/// The `p` quantile of Student's t with `df` degrees of freedom.
pub fn t_quantile(p: f64, df: usize) -> f64 {
    StudentsT::new(0.0, 1.0, df as f64).expect("df >= 1 is a valid t distribution").inverse_cdf(p)
}

/// The paired interval of `a - b`; `None` for fewer than two pairs (no spread to estimate) or unequal lengths.
pub fn paired(a: &[f64], b: &[f64]) -> Option<Interval> {
    if a.len() != b.len() || a.len() < 2 {
        return None;
    }
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let (mean, sd) = mean_sd(&d);
    let half = t_quantile(0.5 + CONFIDENCE / 2.0, d.len() - 1) * sd / (d.len() as f64).sqrt();
    Some(Interval { n: d.len(), mean, sd, lo: mean - half, hi: mean + half })
}

/// The error a verdict allows on one side: a claim holds when its [`CONFIDENCE`] interval lies wholly on the
/// claimed side, which is a one-sided test at this level.
pub fn one_sided_level() -> f64 {
    (1.0 - CONFIDENCE) / 2.0
}

/// `P(T ≥ t)` for Student's t with `df` degrees of freedom; `t` may be infinite (a spread of 0), and `NaN` (an
/// effect of exactly 0 with no spread) counts as no evidence.
pub fn t_upper_tail(t: f64, df: usize) -> f64 {
    if t.is_nan() {
        1.0
    } else if t.is_infinite() {
        if t > 0.0 { 0.0 } else { 1.0 }
    } else {
        StudentsT::new(0.0, 1.0, df as f64).expect("df >= 1 is a valid t distribution").sf(t)
    }
}

/// One-sided p-value that the mean of the differences in `i` lies above `bound`: the paired t test of
/// `mean ≤ bound`. Below [`one_sided_level`] exactly when the interval's low end is above `bound`.
pub fn p_above(i: &Interval, bound: f64) -> f64 {
    t_upper_tail((i.mean - bound) / (i.sd / (i.n as f64).sqrt()), i.n - 1)
}

/// One-sided p-value that the mean lies below `bound` (the mirror image of [`p_above`]).
pub fn p_below(i: &Interval, bound: f64) -> f64 {
    t_upper_tail((bound - i.mean) / (i.sd / (i.n as f64).sqrt()), i.n - 1)
}

/// Holm's step-down procedure: which of the hypotheses with these p-values are rejected when the chance of
/// rejecting any true one is held to `alpha` over the whole family, whatever their dependence. The smallest p is
/// compared with `alpha / m`, the next with `alpha / (m - 1)`, and so on until the first that fails.
pub fn holm(p: &[f64], alpha: f64) -> Vec<bool> {
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut rejected = vec![false; p.len()];
    for (k, &i) in order.iter().enumerate() {
        if p[i] > alpha / (p.len() - k) as f64 {
            break;
        }
        rejected[i] = true;
    }
    rejected
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_one_sided_p_below_the_level_is_an_interval_wholly_above_the_bound() {
        let d = [0.010, 0.004, 0.012, -0.002, 0.008, 0.006];
        let i = paired(&d, &[0.0; 6]).unwrap();
        for bound in [-0.01, -0.002, 0.0, 0.0005, 0.001, 0.002, 0.004, 0.01] {
            assert_eq!(p_above(&i, bound) < one_sided_level(), i.lo > bound, "bound {bound}: {i:?}");
            assert_eq!(p_below(&i, bound) < one_sided_level(), i.hi < bound, "bound {bound}: {i:?}");
        }
        // At the interval's low end the p-value is the level itself.
        assert!((p_above(&i, i.lo) - one_sided_level()).abs() < 1e-9);
        // A t of 2.015 on 5 degrees of freedom is the 95th percentile of any t table.
        assert!((t_upper_tail(2.015, 5) - 0.05).abs() < 1e-4);
        assert_eq!((t_upper_tail(f64::INFINITY, 4), t_upper_tail(f64::NEG_INFINITY, 4)), (0.0, 1.0));
        assert_eq!(t_upper_tail(f64::NAN, 4), 1.0);
    }

    #[test]
    fn holm_steps_down_until_the_first_p_above_its_threshold() {
        // m = 4, alpha = 0.05: thresholds 0.0125, 0.0167, 0.025, 0.05 in p order.
        assert_eq!(holm(&[0.01, 0.04, 0.015, 0.03], 0.05), [true, false, true, false]);
        // Every p below alpha / m: all rejected; the smallest above it: none, even where a later one is small.
        assert_eq!(holm(&[0.001, 0.002, 0.003], 0.05), [true; 3]);
        assert_eq!(holm(&[0.02, 0.03, 0.04], 0.05), [false; 3]);
        // One hypothesis: Holm is the plain test.
        assert_eq!(holm(&[0.049], 0.05), [true]);
        assert!(holm(&[], 0.05).is_empty());
    }

    #[test]
    fn t_quantiles_match_the_tables() {
        // Two-sided 95 % critical values from any t table.
        for (df, t) in [(1, 12.706), (2, 4.303), (4, 2.776), (9, 2.262), (29, 2.045)] {
            assert!((t_quantile(0.975, df) - t).abs() < 1e-3, "df {df}: {}", t_quantile(0.975, df));
        }
    }

    #[test]
    fn the_interval_is_mean_plus_minus_t_times_the_standard_error() {
        let i = paired(&[1.0, 2.0, 3.0, 4.0, 5.0], &[0.0; 5]).unwrap();
        let half = 2.776445 * (2.5f64).sqrt() / 5f64.sqrt();
        assert_eq!(i.n, 5);
        assert!((i.mean - 3.0).abs() < 1e-12);
        assert!((i.lo - (3.0 - half)).abs() < 1e-5 && (i.hi - (3.0 + half)).abs() < 1e-5, "{i:?}");
        assert!(paired(&[1.0], &[0.0]).is_none());
        assert!(paired(&[1.0, 2.0], &[0.0]).is_none());
    }

    #[test]
    fn sample_standard_deviation() {
        let (m, s) = mean_sd(&[1.0, 2.0, 3.0]);
        assert_eq!(m, 2.0);
        assert!((s - 1.0).abs() < 1e-12);
        assert_eq!(mean_sd(&[4.0]), (4.0, 0.0));
    }
}
