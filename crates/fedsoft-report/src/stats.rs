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

#[cfg(test)]
mod tests {
    use super::*;

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
