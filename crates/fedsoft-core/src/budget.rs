//! The exact upload budget and its split over rank components (docs/algorithms.md §4.3, D7, D8).

use crate::error::CoreError;
use crate::lora::ModuleShape;
use serde::{Deserialize, Serialize};

/// Sparsification ratio `rho`: the fraction of LoRA entries that are **dropped** (higher means fewer bits).
/// A newtype so it cannot be confused with the kept fraction `1 - rho`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DropRatio(f64);

impl DropRatio {
    /// `rho` must lie in `[0, 1)`: at 1 nothing would be sent.
    pub fn new(rho: f64) -> Result<Self, CoreError> {
        if !(0.0..1.0).contains(&rho) {
            return Err(CoreError::invalid("rho", format!("the dropped fraction must be in [0, 1), got {rho}")));
        }
        Ok(DropRatio(rho))
    }
    pub const DENSE: DropRatio = DropRatio(0.0);
    pub fn get(self) -> f64 {
        self.0
    }
    /// The kept fraction `1 - rho`.
    pub fn kept(self) -> f64 {
        1.0 - self.0
    }
}

/// Kept entries of one module: `K_l = max(1, round((1 - rho) r (d + k)))`.
pub fn module_budget(shape: &ModuleShape, rho: DropRatio) -> usize {
    let exact = rho.kept() * shape.numel() as f64;
    ((exact + 0.5).floor() as usize).clamp(1, shape.numel())
}

/// Kept entries of a whole upload: the sum of the module budgets, so every method sends the same count.
pub fn total_budget(shapes: &[ModuleShape], rho: DropRatio) -> usize {
    shapes.iter().map(|s| module_budget(s, rho)).sum()
}

/// How per-rank quotas are rounded to integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rounding {
    /// Capped largest-remainder: the quotas add up to the budget exactly (recommended, D8).
    #[default]
    LargestRemainder,
    /// The paper's literal `floor` in Eq. (9); may leave up to `r - 1` slots of the budget unused.
    Floor,
}

/// Splits an integer budget `budget` over components in proportion to `scores`, each at most `cap`.
///
/// Water-filling handles the cap: components whose proportional quota reaches it are fixed at `cap` and the
/// rest is re-split. With [`Rounding::LargestRemainder`] the result sums to `min(budget, r * cap)` exactly;
/// ties in the fractional parts go to the larger score, then to the lower index. Negative or non-finite
/// scores count as zero; if all scores are zero the split is uniform.
pub fn allocate(scores: &[f64], budget: usize, cap: usize, rounding: Rounding) -> Vec<usize> {
    let r = scores.len();
    let s: Vec<f64> = scores.iter().map(|&x| if x.is_finite() && x > 0.0 { x } else { 0.0 }).collect();
    let mut k = vec![0usize; r];
    if r == 0 {
        return k;
    }
    let mut remaining = budget.min(r * cap);
    let mut active: Vec<usize> = (0..r).collect();
    let mut quota = vec![0.0f64; r];
    loop {
        let total: f64 = active.iter().map(|&j| s[j]).sum();
        for &j in &active {
            quota[j] =
                if total > 0.0 { remaining as f64 * s[j] / total } else { remaining as f64 / active.len() as f64 };
        }
        let over: Vec<usize> = active.iter().copied().filter(|&j| quota[j] >= cap as f64).collect();
        if over.is_empty() {
            break;
        }
        for &j in &over {
            k[j] = cap;
            remaining -= cap;
        }
        active.retain(|j| !over.contains(j));
        if active.is_empty() || remaining == 0 {
            return k;
        }
    }
    let mut used = 0;
    for &j in &active {
        k[j] = quota[j].floor() as usize;
        used += k[j];
    }
    if rounding == Rounding::Floor {
        return k;
    }
    let mut left = remaining - used;
    let mut order = active.clone();
    order.sort_by(|&x, &y| {
        let fx = quota[x] - quota[x].floor();
        let fy = quota[y] - quota[y].floor();
        fy.total_cmp(&fx).then(s[y].total_cmp(&s[x])).then(x.cmp(&y))
    });
    for j in order {
        if left == 0 {
            break;
        }
        if k[j] < cap {
            k[j] += 1;
            left -= 1;
        }
    }
    debug_assert_eq!(left, 0);
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_example() {
        assert_eq!(allocate(&[4.0, 2.0, 1.0, 1.0], 100, 1536, Rounding::LargestRemainder), vec![50, 25, 13, 12]);
        assert_eq!(allocate(&[4.0, 2.0, 1.0, 1.0], 100, 1536, Rounding::Floor), vec![50, 25, 12, 12]);
    }

    #[test]
    fn cap_water_fills() {
        // 90 % of the score on one component, but it can hold only 10.
        assert_eq!(allocate(&[9.0, 0.5, 0.5], 20, 10, Rounding::LargestRemainder), vec![10, 5, 5]);
        assert_eq!(allocate(&[0.0, 0.0, 0.0], 7, 10, Rounding::LargestRemainder), vec![3, 2, 2]);
        assert_eq!(allocate(&[1.0, 1.0], 50, 10, Rounding::LargestRemainder), vec![10, 10]);
    }

    #[test]
    fn drop_ratio_range() {
        assert!(DropRatio::new(1.0).is_err());
        assert!(DropRatio::new(-0.1).is_err());
        assert!(DropRatio::new(f64::NAN).is_err());
        let s = ModuleShape::new("m", 768, 768, 8);
        assert_eq!(module_budget(&s, DropRatio::new(0.75).unwrap()), 3072);
        assert_eq!(module_budget(&s, DropRatio::new(0.9999999).unwrap()), 1);
    }
}
