//! Server-side aggregation (docs/algorithms.md §2.3, §4.5) and the covariance of separately averaged factors (§2.4).
//!
//! Sums are taken in `f64` in the order the uploads are given, so a run is deterministic and the simulator and
//! the networked server, fed the same uploads, produce the same bits.

use crate::error::CoreError;
use crate::lora::LoraState;
use crate::sparsify::SparseUpdate;

/// Aggregation weights `p_i = n_i / sum_j n_j` over the scheduled clients (docs/algorithms.md D2).
pub fn weights(samples: &[usize]) -> Result<Vec<f64>, CoreError> {
    let total: usize = samples.iter().sum();
    if total == 0 {
        return Err(CoreError::invalid("aggregation weights", "the scheduled clients hold no samples"));
    }
    Ok(samples.iter().map(|&n| n as f64 / total as f64).collect())
}

fn check_weights(n: usize, w: &[f64]) -> Result<(), CoreError> {
    if n != w.len() {
        return Err(CoreError::shape("aggregation weights", n, w.len()));
    }
    if w.iter().any(|x| !x.is_finite() || *x < 0.0) {
        return Err(CoreError::invalid("aggregation weights", "weights must be finite and non-negative"));
    }
    Ok(())
}

/// A zeroed `f64` accumulator shaped like `like`: per module, `B` then `A` entries.
fn accumulator(like: &LoraState) -> Vec<Vec<f64>> {
    like.shapes.iter().map(|s| vec![0.0; s.numel()]).collect()
}

fn accumulate_sparse(acc: &mut [Vec<f64>], like: &LoraState, u: &SparseUpdate, w: f64) -> Result<(), CoreError> {
    if u.modules.len() != acc.len() {
        return Err(CoreError::shape("upload module count", acc.len(), u.modules.len()));
    }
    for ((m, a), s) in u.modules.iter().zip(acc.iter_mut()).zip(&like.shapes) {
        if m.indices.len() != m.values.len() {
            return Err(CoreError::shape(format!("{}: upload values", s.name), m.indices.len(), m.values.len()));
        }
        for (&i, &v) in m.indices.iter().zip(&m.values) {
            let slot = a
                .get_mut(i as usize)
                .ok_or_else(|| CoreError::invalid(&s.name, format!("entry index {i} beyond {} entries", s.numel())))?;
            *slot += w * v as f64;
        }
    }
    Ok(())
}

/// `x <- x + sum_i p_i (x_i - x)` for a dense parameter every client holds in full (the classification head):
/// FedAvg of the clients' values, accumulated in f64 like the LoRA factors.
pub fn move_toward_average(global: &mut [f32], locals: &[&[f32]], p: &[f64]) -> Result<(), CoreError> {
    if locals.len() != p.len() {
        return Err(CoreError::shape("aggregation weights", locals.len(), p.len()));
    }
    if let Some(bad) = locals.iter().find(|l| l.len() != global.len()) {
        return Err(CoreError::shape("a client's dense parameter", global.len(), bad.len()));
    }
    let mut delta = vec![0.0f64; global.len()];
    for (local, &pi) in locals.iter().zip(p) {
        for (acc, (x, g)) in delta.iter_mut().zip(local.iter().zip(global.iter())) {
            *acc += pi * (*x - *g) as f64;
        }
    }
    for (g, d) in global.iter_mut().zip(delta) {
        *g = (*g as f64 + d) as f32;
    }
    Ok(())
}

/// Delta mode: `X <- X + sum_i p_i dX_i` for both factors; entries a client did not send count as zero.
pub fn apply_deltas(global: &mut LoraState, uploads: &[&SparseUpdate], w: &[f64]) -> Result<(), CoreError> {
    check_weights(uploads.len(), w)?;
    let mut acc = accumulator(global);
    for (u, &wi) in uploads.iter().zip(w) {
        accumulate_sparse(&mut acc, global, u, wi)?;
    }
    for (f, a) in global.modules.iter_mut().zip(&acc) {
        let nb = f.b.len();
        for (x, d) in f.b.iter_mut().zip(&a[..nb]).chain(f.a.iter_mut().zip(&a[nb..])) {
            *x = (*x as f64 + d) as f32;
        }
    }
    Ok(())
}

/// Model mode: `X <- sum_i p_i X~_i`, the sparse models averaged with zeros where nothing was sent.
pub fn average_sparse_models(like: &LoraState, uploads: &[&SparseUpdate], w: &[f64]) -> Result<LoraState, CoreError> {
    check_weights(uploads.len(), w)?;
    let mut acc = accumulator(like);
    for (u, &wi) in uploads.iter().zip(w) {
        accumulate_sparse(&mut acc, like, u, wi)?;
    }
    Ok(from_accumulator(like, &acc))
}

fn from_accumulator(like: &LoraState, acc: &[Vec<f64>]) -> LoraState {
    let mut out = like.clone();
    for (f, a) in out.modules.iter_mut().zip(acc) {
        let nb = f.b.len();
        for (x, v) in f.b.iter_mut().zip(&a[..nb]).chain(f.a.iter_mut().zip(&a[nb..])) {
            *x = *v as f32;
        }
    }
    out
}

/// Dense FedAvg of factors, Eq. (5): `B = sum_i p_i B_i`, `A = sum_i p_i A_i`, separately.
pub fn average_dense(states: &[&LoraState], w: &[f64]) -> Result<LoraState, CoreError> {
    check_weights(states.len(), w)?;
    let first = states.first().ok_or_else(|| CoreError::invalid("aggregation", "no client states to average"))?;
    let mut acc = accumulator(first);
    for (s, &wi) in states.iter().zip(w) {
        first.check_compatible(s, "client states")?;
        for (a, f) in acc.iter_mut().zip(&s.modules) {
            for (x, v) in a.iter_mut().zip(f.iter()) {
                *x += wi * v as f64;
            }
        }
    }
    Ok(from_accumulator(first, &acc))
}

/// `||Cov||` of docs/algorithms.md §2.4: `(sum_l ||sum_i p_i B_i A_i - B_bar A_bar||_F^2)^(1/2)` with `p` normalised to 1,
/// computed from `r x r` cross-Gram matrices, never forming a `d x k` product:
/// `||sum_i p_i dB_i dA_i||^2 = sum_{i,j} p_i p_j <dB_i^T dB_j, dA_i dA_j^T>`.
pub fn covariance_norm(states: &[&LoraState], w: &[f64]) -> Result<f64, CoreError> {
    check_weights(states.len(), w)?;
    let total: f64 = w.iter().sum();
    if states.is_empty() || total <= 0.0 {
        return Ok(0.0);
    }
    let p: Vec<f64> = w.iter().map(|x| x / total).collect();
    let first = states[0];
    for s in states {
        first.check_compatible(s, "client states")?;
    }
    let mut sq = 0.0;
    for (m, shape) in first.shapes.iter().enumerate() {
        let (d, k, r) = (shape.d, shape.k, shape.r);
        let mut bbar = vec![0.0f64; d * r];
        let mut abar = vec![0.0f64; r * k];
        for (s, &pi) in states.iter().zip(&p) {
            for (x, v) in bbar.iter_mut().zip(&s.modules[m].b) {
                *x += pi * *v as f64;
            }
            for (x, v) in abar.iter_mut().zip(&s.modules[m].a) {
                *x += pi * *v as f64;
            }
        }
        let db: Vec<Vec<f64>> =
            states.iter().map(|s| s.modules[m].b.iter().zip(&bbar).map(|(v, c)| *v as f64 - c).collect()).collect();
        let da: Vec<Vec<f64>> =
            states.iter().map(|s| s.modules[m].a.iter().zip(&abar).map(|(v, c)| *v as f64 - c).collect()).collect();
        for i in 0..states.len() {
            for j in i..states.len() {
                let mut inner = 0.0;
                for x in 0..r {
                    for y in 0..r {
                        let gb: f64 = (0..d).map(|row| db[i][row * r + x] * db[j][row * r + y]).sum();
                        let ga: f64 = (0..k).map(|col| da[i][x * k + col] * da[j][y * k + col]).sum();
                        inner += gb * ga;
                    }
                }
                let mult = if i == j { 1.0 } else { 2.0 };
                sq += mult * p[i] * p[j] * inner;
            }
        }
    }
    Ok(sq.max(0.0).sqrt())
}
