//! LoRA factor state for a set of adapted modules, as flat `f32` buffers with names.
//!
//! This is the one representation every part of fedsoft exchanges: the model crate reads and writes its
//! adapters from and to it, the sparsifiers score and select from it, the server aggregates into it.

use crate::error::CoreError;
use crate::rng::{Purpose, stream};
use rand::RngExt;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

/// A linear layer of a transformer block that can carry an adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Query,
    Key,
    Value,
    /// Attention output projection.
    Output,
    /// First MLP layer (hidden -> intermediate).
    MlpIn,
    /// Second MLP layer (intermediate -> hidden).
    MlpOut,
}

impl Target {
    /// `(d, k)` = (out, in) widths of this layer.
    pub fn dims(self, hidden: usize, intermediate: usize) -> (usize, usize) {
        match self {
            Target::Query | Target::Key | Target::Value | Target::Output => (hidden, hidden),
            Target::MlpIn => (intermediate, hidden),
            Target::MlpOut => (hidden, intermediate),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Query => "query",
            Target::Key => "key",
            Target::Value => "value",
            Target::Output => "output",
            Target::MlpIn => "mlp_in",
            Target::MlpOut => "mlp_out",
        }
    }
}
/// Geometry of one adapted linear layer: `W0` is `d x k` (out x in), the LoRA rank is `r`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ModuleShape {
    /// Module path, e.g. `encoder.layer.0.attention.self.query`.
    pub name: String,
    /// Output width (rows of `B`).
    pub d: usize,
    /// Input width (columns of `A`).
    pub k: usize,
    /// LoRA rank.
    pub r: usize,
}

impl ModuleShape {
    pub fn new(name: impl Into<String>, d: usize, k: usize, r: usize) -> Self {
        ModuleShape { name: name.into(), d, k, r }
    }
    /// Entries of `B`.
    pub fn b_len(&self) -> usize {
        self.d * self.r
    }
    /// Entries of `A`.
    pub fn a_len(&self) -> usize {
        self.r * self.k
    }
    /// Entries of `B` and `A` together: `r (d + k)`.
    pub fn numel(&self) -> usize {
        self.b_len() + self.a_len()
    }
    /// Length of one rank component `[b_j; a_j^T]`.
    pub fn component_len(&self) -> usize {
        self.d + self.k
    }
    /// Flat entry indices of rank component `j`, `b_j` first then `a_j`, in increasing order within each part.
    pub fn component_indices(&self, j: usize) -> impl Iterator<Item = usize> + '_ {
        let r = self.r;
        let off = self.b_len() + j * self.k;
        (0..self.d).map(move |i| i * r + j).chain(off..off + self.k)
    }
    /// Which rank component a flat entry index belongs to.
    pub fn component_of(&self, idx: usize) -> usize {
        if idx < self.b_len() { idx % self.r } else { (idx - self.b_len()) / self.k }
    }
    /// Refuses an empty dimension or a module too large for the wire format's `u32` indices.
    pub fn validate(&self) -> Result<(), CoreError> {
        if self.d == 0 || self.k == 0 || self.r == 0 {
            return Err(CoreError::invalid(
                format!("module {}", self.name),
                format!("d, k and r must be positive, got d={} k={} r={}", self.d, self.k, self.r),
            ));
        }
        if self.numel() > u32::MAX as usize {
            return Err(CoreError::invalid(format!("module {}", self.name), "more than 2^32 LoRA entries"));
        }
        Ok(())
    }
}

/// The two factors of one module, row-major.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModuleFactors {
    /// `B`, `d x r`.
    pub b: Vec<f32>,
    /// `A`, `r x k`.
    pub a: Vec<f32>,
}

impl ModuleFactors {
    /// Entry `idx` of the module's flat numbering (`B` then `A`).
    pub fn get(&self, idx: usize) -> f32 {
        if idx < self.b.len() { self.b[idx] } else { self.a[idx - self.b.len()] }
    }
    pub fn get_mut(&mut self, idx: usize) -> &mut f32 {
        let nb = self.b.len();
        if idx < nb { &mut self.b[idx] } else { &mut self.a[idx - nb] }
    }
    /// All entries in flat order.
    pub fn iter(&self) -> impl Iterator<Item = f32> + '_ {
        self.b.iter().chain(self.a.iter()).copied()
    }
}

/// Module shapes as errors name them: `name dxk r=R`, comma-separated.
pub fn describe_shapes<'a>(shapes: impl IntoIterator<Item = &'a ModuleShape>) -> String {
    shapes.into_iter().map(|s| format!("{} {}x{} r={}", s.name, s.d, s.k, s.r)).collect::<Vec<_>>().join(", ")
}

/// LoRA factors of every adapted module of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraState {
    pub shapes: Vec<ModuleShape>,
    pub modules: Vec<ModuleFactors>,
}

impl LoraState {
    /// All-zero factors (the error-feedback memory starts here).
    pub fn zeros(shapes: &[ModuleShape]) -> Result<Self, CoreError> {
        for s in shapes {
            s.validate()?;
        }
        let modules =
            shapes.iter().map(|s| ModuleFactors { b: vec![0.0; s.b_len()], a: vec![0.0; s.a_len()] }).collect();
        Ok(LoraState { shapes: shapes.to_vec(), modules })
    }

    /// The paper's initialisation: `B = 0`, `A ~ N(0, (1/r)^2)` (PEFT's "gaussian"), drawn from the run seed so
    /// that the server and every client agree on `A^0`.
    pub fn init_gaussian(shapes: &[ModuleShape], seed: u64) -> Result<Self, CoreError> {
        let mut st = Self::zeros(shapes)?;
        for (m, (shape, f)) in st.shapes.iter().zip(st.modules.iter_mut()).enumerate() {
            let normal = Normal::new(0.0f64, 1.0 / shape.r as f64).expect("positive std");
            let mut rng = stream(seed, Purpose::Init, &[m as u64]);
            for v in f.a.iter_mut() {
                *v = normal.sample(&mut rng) as f32;
            }
        }
        Ok(st)
    }

    /// Random factors with entries uniform in `[-scale, scale]`; for tests and benchmarks.
    pub fn random(shapes: &[ModuleShape], seed: u64, scale: f32) -> Result<Self, CoreError> {
        let mut st = Self::zeros(shapes)?;
        for (m, f) in st.modules.iter_mut().enumerate() {
            let mut rng = stream(seed, Purpose::Init, &[u64::MAX, m as u64]);
            for v in f.b.iter_mut().chain(f.a.iter_mut()) {
                *v = rng.random_range(-scale..=scale);
            }
        }
        Ok(st)
    }

    /// Builds a state from given buffers, checking every length.
    pub fn from_parts(shapes: Vec<ModuleShape>, modules: Vec<ModuleFactors>) -> Result<Self, CoreError> {
        if shapes.len() != modules.len() {
            return Err(CoreError::shape("module count", shapes.len(), modules.len()));
        }
        for (s, f) in shapes.iter().zip(&modules) {
            s.validate()?;
            if f.b.len() != s.b_len() {
                return Err(CoreError::shape(format!("{}.lora_B", s.name), s.b_len(), f.b.len()));
            }
            if f.a.len() != s.a_len() {
                return Err(CoreError::shape(format!("{}.lora_A", s.name), s.a_len(), f.a.len()));
            }
        }
        Ok(LoraState { shapes, modules })
    }

    /// Total LoRA entries `M_r = sum_l r (d_l + k_l)`.
    pub fn numel(&self) -> usize {
        self.shapes.iter().map(ModuleShape::numel).sum()
    }

    /// Errors unless `other` has exactly the same modules.
    pub fn check_compatible(&self, other: &LoraState, what: &str) -> Result<(), CoreError> {
        if self.shapes != other.shapes {
            let describe = |s: &[ModuleShape]| {
                s.iter().map(|m| format!("{}[{}x{} r{}]", m.name, m.d, m.k, m.r)).collect::<Vec<_>>().join(", ")
            };
            return Err(CoreError::shape(what, describe(&self.shapes), describe(&other.shapes)));
        }
        Ok(())
    }

    /// Elementwise `self - other`.
    pub fn sub(&self, other: &LoraState) -> Result<LoraState, CoreError> {
        self.check_compatible(other, "difference of LoRA states")?;
        let modules = self
            .modules
            .iter()
            .zip(&other.modules)
            .map(|(x, y)| ModuleFactors {
                b: x.b.iter().zip(&y.b).map(|(p, q)| p - q).collect(),
                a: x.a.iter().zip(&y.a).map(|(p, q)| p - q).collect(),
            })
            .collect();
        Ok(LoraState { shapes: self.shapes.clone(), modules })
    }

    /// Elementwise `self += w * other`.
    pub fn add_scaled(&mut self, other: &LoraState, w: f32) -> Result<(), CoreError> {
        self.check_compatible(other, "sum of LoRA states")?;
        for (x, y) in self.modules.iter_mut().zip(&other.modules) {
            for (p, q) in x.b.iter_mut().zip(&y.b).chain(x.a.iter_mut().zip(&y.a)) {
                *p += w * q;
            }
        }
        Ok(())
    }

    /// Per-rank scores `s_j = ||b_j|| ||a_j||` of module `m` (the paper's Eq. (8)): the singular values of `BA` when
    /// the factors are orthogonal, at `O(r (d + k))` cost.
    pub fn rank_scores(&self, m: usize) -> Vec<f64> {
        let s = &self.shapes[m];
        let f = &self.modules[m];
        // Row-wise passes over both row-major buffers keep the accesses contiguous (and vectorisable).
        let mut nb = vec![0.0f64; s.r];
        for row in f.b.chunks_exact(s.r) {
            for (acc, &x) in nb.iter_mut().zip(row) {
                *acc += (x as f64) * (x as f64);
            }
        }
        nb.iter()
            .zip(f.a.chunks_exact(s.k))
            .map(|(b2, row)| {
                let a2: f64 = row.iter().map(|&x| (x as f64) * (x as f64)).sum();
                (b2 * a2).sqrt()
            })
            .collect()
    }

    /// `B^T B` of module `m` (r x r, row-major): inner products of `B`'s columns.
    pub fn gram_b(&self, m: usize) -> Vec<f64> {
        let s = &self.shapes[m];
        let b = &self.modules[m].b;
        let mut g = vec![0.0; s.r * s.r];
        for row in b.chunks_exact(s.r) {
            for p in 0..s.r {
                for q in 0..s.r {
                    g[p * s.r + q] += row[p] as f64 * row[q] as f64;
                }
            }
        }
        g
    }

    /// `A A^T` of module `m` (r x r, row-major): inner products of `A`'s rows.
    pub fn gram_a(&self, m: usize) -> Vec<f64> {
        let s = &self.shapes[m];
        let a = &self.modules[m].a;
        let mut g = vec![0.0; s.r * s.r];
        for p in 0..s.r {
            for q in 0..s.r {
                g[p * s.r + q] = a[p * s.k..(p + 1) * s.k]
                    .iter()
                    .zip(&a[q * s.k..(q + 1) * s.k])
                    .map(|(x, y)| *x as f64 * *y as f64)
                    .sum();
            }
        }
        g
    }

    /// The orthogonality regulariser of the paper's Eq. (7) without its weight: squared off-diagonal Frobenius energy
    /// of `B^T B` and `A A^T`, summed over modules.
    pub fn orthogonality_penalty(&self) -> f64 {
        (0..self.shapes.len())
            .map(|m| off_diagonal_energy(&self.gram_b(m)) + off_diagonal_energy(&self.gram_a(m)))
            .sum()
    }

    /// The gradient of [`Self::orthogonality_penalty`] with respect to every factor: with `G` a Gram matrix and
    /// `G_off` its off-diagonal part, `dP/dB = 4 B G_off(B^T B)` and `dP/dA = 4 G_off(A A^T) A`. Frameworks
    /// other than burn (the Python package's torch training) take the regulariser's gradient from here.
    pub fn orthogonality_gradient(&self) -> LoraState {
        let mut out = self.clone();
        for (m, (s, g)) in self.shapes.iter().zip(out.modules.iter_mut()).enumerate() {
            let r = s.r;
            let off = |mut gram: Vec<f64>| {
                for p in 0..r {
                    gram[p * r + p] = 0.0;
                }
                gram
            };
            let gb = off(self.gram_b(m));
            let ga = off(self.gram_a(m));
            let f = &self.modules[m];
            for (row_out, row) in g.b.chunks_exact_mut(r).zip(f.b.chunks_exact(r)) {
                for q in 0..r {
                    let v: f64 = (0..r).map(|p| row[p] as f64 * gb[p * r + q]).sum();
                    row_out[q] = (4.0 * v) as f32;
                }
            }
            for p in 0..r {
                for c in 0..s.k {
                    let v: f64 = (0..r).map(|q| ga[p * r + q] * f.a[q * s.k + c] as f64).sum();
                    g.a[p * s.k + c] = (4.0 * v) as f32;
                }
            }
        }
        out
    }

    /// Does every entry hold a finite number?
    pub fn all_finite(&self) -> bool {
        self.modules.iter().all(|f| f.iter().all(f32::is_finite))
    }

    /// The first entry that is not a finite number, as `(module, "lora_B" or "lora_A", row, column, value)`,
    /// so an error can say where a NaN came in.
    pub fn first_non_finite(&self) -> Option<(&str, &'static str, usize, usize, f32)> {
        self.shapes.iter().zip(&self.modules).find_map(|(s, f)| {
            let at = |v: &[f32], cols: usize| v.iter().position(|x| !x.is_finite()).map(|i| (i / cols, i % cols, v[i]));
            if let Some((row, col, v)) = at(&f.b, s.r) {
                return Some((s.name.as_str(), "lora_B", row, col, v));
            }
            at(&f.a, s.k).map(|(row, col, v)| (s.name.as_str(), "lora_A", row, col, v))
        })
    }
}

/// Sum of squares of the off-diagonal entries of a square row-major matrix.
pub fn off_diagonal_energy(g: &[f64]) -> f64 {
    let r = (g.len() as f64).sqrt() as usize;
    let mut e = 0.0;
    for p in 0..r {
        for q in 0..r {
            if p != q {
                e += g[p * r + q].powi(2);
            }
        }
    }
    e
}

/// Fraction of a Gram matrix's squared Frobenius energy that lies off the diagonal (0 = orthogonal).
pub fn off_diagonal_fraction(g: &[f64]) -> f64 {
    let total: f64 = g.iter().map(|x| x * x).sum();
    if total == 0.0 { 0.0 } else { off_diagonal_energy(g) / total }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orthogonality_gradient_matches_finite_differences() {
        let shapes = [ModuleShape::new("m0", 6, 5, 3), ModuleShape::new("m1", 4, 7, 2)];
        let st = LoraState::random(&shapes, 11, 0.8).unwrap();
        let grad = st.orthogonality_gradient();
        let h = 1e-3f32;
        for (m, shape) in shapes.iter().enumerate() {
            for i in 0..shape.numel() {
                let mut up = st.clone();
                *up.modules[m].get_mut(i) += h;
                let mut down = st.clone();
                *down.modules[m].get_mut(i) -= h;
                let fd = (up.orthogonality_penalty() - down.orthogonality_penalty()) / (2.0 * h as f64);
                let g = grad.modules[m].get(i) as f64;
                assert!((fd - g).abs() <= 2e-3 * (1.0 + g.abs()), "module {m} entry {i}: {fd} vs {g}");
            }
        }
        // Orthogonal factors are a stationary point.
        let mut diag = LoraState::zeros(&shapes[..1]).unwrap();
        for j in 0..3 {
            diag.modules[0].b[j * 3 + j] = 1.0 + j as f32;
            diag.modules[0].a[j * 5 + j] = 2.0;
        }
        assert!(diag.orthogonality_gradient().modules[0].iter().all(|x| x == 0.0));
    }

    #[test]
    fn the_first_non_finite_entry_is_found_by_module_factor_row_and_column() {
        let shapes = [ModuleShape::new("m0", 6, 5, 3), ModuleShape::new("m1", 4, 7, 2)];
        let mut st = LoraState::random(&shapes, 3, 0.5).unwrap();
        assert_eq!(st.first_non_finite(), None);
        st.modules[1].a[2 * 7 - 1] = f32::INFINITY; // A is 2 x 7: row 1, column 6
        st.modules[1].b[5] = f32::NAN; // B is 4 x 2: row 2, column 1, found first
        let (m, f, row, col, v) = st.first_non_finite().unwrap();
        assert_eq!((m, f, row, col), ("m1", "lora_B", 2, 1));
        assert!(v.is_nan());
        st.modules[1].b[5] = 0.0;
        assert_eq!(st.first_non_finite(), Some(("m1", "lora_A", 1, 6, f32::INFINITY)));
        assert!(!st.all_finite());
    }

    #[test]
    fn component_indices_cover_module_once() {
        let s = ModuleShape::new("m", 5, 3, 4);
        let mut seen = vec![0u8; s.numel()];
        for j in 0..s.r {
            for i in s.component_indices(j) {
                assert_eq!(s.component_of(i), j);
                seen[i] += 1;
            }
        }
        assert!(seen.iter().all(|&c| c == 1));
    }

    #[test]
    fn init_is_paper_init_and_seeded() {
        let shapes = vec![ModuleShape::new("q", 64, 64, 8)];
        let a = LoraState::init_gaussian(&shapes, 1).unwrap();
        let b = LoraState::init_gaussian(&shapes, 1).unwrap();
        assert_eq!(a, b);
        assert!(a.modules[0].b.iter().all(|&x| x == 0.0));
        let var: f64 = a.modules[0].a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / 512.0;
        assert!((var.sqrt() - 1.0 / 8.0).abs() < 0.02, "std {}", var.sqrt());
    }

    #[test]
    fn zero_rank_is_rejected_with_the_module_name() {
        let err = LoraState::zeros(&[ModuleShape::new("layer.3.value", 4, 4, 0)]).unwrap_err();
        assert!(err.to_string().contains("layer.3.value"), "{err}");
    }
}
