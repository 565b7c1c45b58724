//! The Gram matrices `BᵀB` and `AAᵀ` of an exported adapter (docs/algorithms.md §4.1, the paper's Fig. 4): with the
//! orthogonality regulariser they become diagonal, which is what makes `‖b_j‖·‖a_j‖` a faithful rank score.

use crate::ReportError;
use safetensors::{Dtype, SafeTensors};
use std::path::Path;

/// Both Gram matrices of one module, as correlation magnitudes `|G_ij| / sqrt(G_ii G_jj)` (diagonal 1).
#[derive(Debug, Clone)]
pub struct Gram {
    pub module: String,
    pub rank: usize,
    /// Row-major `r × r`.
    pub btb: Vec<f64>,
    pub aat: Vec<f64>,
    /// Share of the squared Frobenius norm off the diagonal (raw Grams), for B and A.
    pub off_diagonal_b: f64,
    pub off_diagonal_a: f64,
}

fn f32s(path: &Path, st: &SafeTensors<'_>, key: &str) -> Result<(Vec<f32>, Vec<usize>), ReportError> {
    let t = st.tensor(key).map_err(|e| ReportError::input(path, format!("{key}: {e}")))?;
    if t.dtype() != Dtype::F32 || t.shape().len() != 2 {
        return Err(ReportError::input(
            path,
            format!("{key}: expected a 2-D f32 tensor, found {:?} {:?}", t.dtype(), t.shape()),
        ));
    }
    let v = t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    Ok((v, t.shape().to_vec()))
}

/// `G_ij = Σ_k x(i,k)·x(j,k)` over `r` vectors read with the given accessor.
fn gram(r: usize, len: usize, at: impl Fn(usize, usize) -> f64) -> Vec<f64> {
    let mut g = vec![0.0; r * r];
    for i in 0..r {
        for j in i..r {
            let s: f64 = (0..len).map(|k| at(i, k) * at(j, k)).sum();
            g[i * r + j] = s;
            g[j * r + i] = s;
        }
    }
    g
}

fn normalise(g: &[f64], r: usize) -> (Vec<f64>, f64) {
    let total: f64 = g.iter().map(|x| x * x).sum();
    let diag: f64 = (0..r).map(|i| g[i * r + i].powi(2)).sum();
    let corr = (0..r * r)
        .map(|idx| {
            let (i, j) = (idx / r, idx % r);
            let den = (g[i * r + i] * g[j * r + j]).sqrt();
            if den > 0.0 { (g[idx] / den).abs() } else { 0.0 }
        })
        .collect();
    (corr, if total > 0.0 { (total - diag) / total } else { 0.0 })
}

/// Reads the first adapted module of `adapter_dir/adapter_model.safetensors` (PEFT layout: `lora_A` is
/// `[r, in]`, `lora_B` is `[out, r]`) and returns its Grams; `None` when the run has no exported adapter.
pub fn gram_matrices(adapter_dir: &Path) -> Result<Option<Gram>, ReportError> {
    let path = adapter_dir.join("adapter_model.safetensors");
    let Ok(bytes) = std::fs::read(&path) else { return Ok(None) };
    let st = SafeTensors::deserialize(&bytes).map_err(|e| ReportError::input(&path, e))?;
    let mut a_keys: Vec<&str> = st.names().into_iter().filter(|n| n.ends_with(".lora_A.weight")).collect();
    a_keys.sort_unstable();
    let Some(a_key) = a_keys.first().copied() else {
        return Err(ReportError::input(&path, "no `*.lora_A.weight` tensor"));
    };
    let module = a_key.trim_start_matches("base_model.model.").trim_end_matches(".lora_A.weight").to_string();
    let b_key = a_key.replace(".lora_A.", ".lora_B.");
    let (a, ashape) = f32s(&path, &st, a_key)?;
    let (b, bshape) = f32s(&path, &st, &b_key)?;
    let (r, k) = (ashape[0], ashape[1]);
    let d = bshape[0];
    if bshape[1] != r {
        return Err(ReportError::input(&path, format!("{b_key}: rank {} but lora_A has rank {r}", bshape[1])));
    }
    let btb = gram(r, d, |i, row| b[row * r + i] as f64);
    let aat = gram(r, k, |i, col| a[i * k + col] as f64);
    let (btb, off_diagonal_b) = normalise(&btb, r);
    let (aat, off_diagonal_a) = normalise(&aat, r);
    Ok(Some(Gram { module, rank: r, btb, aat, off_diagonal_b, off_diagonal_a }))
}
