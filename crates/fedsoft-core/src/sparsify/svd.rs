//! The exact selector: per-rank importance from the true SVD of `BA`, for comparison with SOFT's proxy.
//!
//! SOFT scores component `j` by `||b_j|| ||a_j||`, which equals a singular value only when the factors are
//! orthogonal. The exact selector computes the SVD `BA = sum_m sigma_m u_m v_m^T` and attributes each singular
//! value to the rank components that build it: `sigma_m = sum_j (u_m^T b_j)(a_j v_m)`, so component `j` scores
//! `sum_m |(u_m^T b_j)(a_j v_m)|`. With orthogonal factors every `sigma_m` comes from one component and the
//! score is exactly SOFT's, so both select the same entries; otherwise the exact selector is the oracle.
//!
//! Two ways to get there: the factored path (thin QR of `B` and `A^T`, then the SVD of an `r x r` core,
//! `O(r^2 (d + k))`) that a practical system would use, and the dense path (form the `d x k` product, then
//! its SVD, `O(dkr + dk min(d, k))`) that the paper's Fig. 2 compares SOFT against.

use super::soft::{SoftSplit, select_by_rank_scores};
use super::{SelectInput, Selection, Sparsifier};
use crate::budget::Rounding;
use crate::error::CoreError;
use crate::lora::{ModuleFactors, ModuleShape};
use faer::Mat;

/// The exact selector: SOFT's allocation and selection driven by SVD-attributed scores.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExactSvd {
    pub rounding: Rounding,
    pub split: SoftSplit,
}

impl Sparsifier for ExactSvd {
    fn name(&self) -> &'static str {
        "svd"
    }
    fn select(&self, input: &SelectInput<'_>) -> Result<Selection, CoreError> {
        input.per_module(|m| {
            let scores = exact_rank_scores(m.shape, m.local)?;
            Ok(select_by_rank_scores(m.shape, m.update, &scores, m.budget, self.rounding, self.split))
        })
    }
}

fn b_matrix(shape: &ModuleShape, f: &ModuleFactors) -> Mat<f64> {
    Mat::from_fn(shape.d, shape.r, |i, j| f.b[i * shape.r + j] as f64)
}

fn a_transposed(shape: &ModuleShape, f: &ModuleFactors) -> Mat<f64> {
    Mat::from_fn(shape.k, shape.r, |i, j| f.a[j * shape.k + i] as f64)
}

fn check_finite(shape: &ModuleShape, f: &ModuleFactors) -> Result<(), CoreError> {
    if f.iter().all(f32::is_finite) {
        Ok(())
    } else {
        Err(CoreError::invalid(&shape.name, "non-finite LoRA factor entries; cannot take an SVD"))
    }
}

fn svd_error(shape: &ModuleShape) -> CoreError {
    CoreError::invalid(&shape.name, "the SVD of BA did not converge")
}

/// Scores from the singular directions: `sum_m |(U^T b_j)_m (V^T a_j^T)_m|` for the given projections.
fn attribute(proj_b: &Mat<f64>, proj_a: &Mat<f64>, rows: usize, r: usize) -> Vec<f64> {
    (0..r).map(|j| (0..rows).map(|m| (proj_b[(m, j)] * proj_a[(m, j)]).abs()).sum()).collect()
}

/// Exact per-rank scores by the factored path (no `d x k` product).
pub fn exact_rank_scores(shape: &ModuleShape, f: &ModuleFactors) -> Result<Vec<f64>, CoreError> {
    check_finite(shape, f)?;
    let rb = b_matrix(shape, f).qr().thin_R().to_owned();
    let ra = a_transposed(shape, f).qr().thin_R().to_owned();
    let core = &rb * ra.transpose();
    let svd = core.thin_svd().map_err(|_| svd_error(shape))?;
    let proj_b = svd.U().transpose() * &rb;
    let proj_a = svd.V().transpose() * &ra;
    Ok(attribute(&proj_b, &proj_a, proj_b.nrows(), shape.r))
}

/// Exact per-rank scores by the dense path: form `BA`, take its SVD. For benchmarks and as a test oracle.
pub fn exact_rank_scores_dense(shape: &ModuleShape, f: &ModuleFactors) -> Result<Vec<f64>, CoreError> {
    check_finite(shape, f)?;
    let b = b_matrix(shape, f);
    let at = a_transposed(shape, f);
    let product = &b * at.transpose();
    let svd = product.thin_svd().map_err(|_| svd_error(shape))?;
    let top = shape.r.min(svd.U().ncols());
    let proj_b = svd.U().subcols(0, top).transpose() * &b;
    let proj_a = svd.V().subcols(0, top).transpose() * &at;
    Ok(attribute(&proj_b, &proj_a, top, shape.r))
}

/// Singular values of `BA` (largest first, at most `r`) by the factored path.
pub fn singular_values(shape: &ModuleShape, f: &ModuleFactors) -> Result<Vec<f64>, CoreError> {
    check_finite(shape, f)?;
    let rb = b_matrix(shape, f).qr().thin_R().to_owned();
    let ra = a_transposed(shape, f).qr().thin_R().to_owned();
    (&rb * ra.transpose()).singular_values().map_err(|_| svd_error(shape))
}

/// Singular values of `BA` by the dense path (all `min(d, k)` of them).
pub fn singular_values_dense(shape: &ModuleShape, f: &ModuleFactors) -> Result<Vec<f64>, CoreError> {
    check_finite(shape, f)?;
    let product = &b_matrix(shape, f) * a_transposed(shape, f).transpose();
    product.singular_values().map_err(|_| svd_error(shape))
}
