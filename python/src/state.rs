//! LoRA factors and sparse uploads as Python objects backed by the core's types.

use crate::convert::value_error;
use fedsoft_core::encoding;
use fedsoft_core::lora::{LoraState, ModuleFactors, ModuleShape};
use fedsoft_core::sparsify::{SparseModule, SparseUpdate};
use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// `(name, B, A)` of one module as numpy arrays.
type NamedFactors<'py> = (String, Bound<'py, PyArray2<f32>>, Bound<'py, PyArray2<f32>>);
/// `(indices, values)` of one module's upload as numpy arrays.
type SparseArrays<'py> = (Bound<'py, PyArray1<u32>>, Bound<'py, PyArray1<f32>>);

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Shape>()?;
    m.add_class::<Factors>()?;
    m.add_class::<Sparse>()?;
    Ok(())
}

/// One adapted module: `B` is `d x r` (`lora_B.weight`), `A` is `r x k` (`lora_A.weight`).
#[pyclass(name = "ModuleShape", module = "fedsoft", frozen, eq, from_py_object)]
#[derive(Clone, PartialEq)]
pub struct Shape(pub ModuleShape);

#[pymethods]
impl Shape {
    #[new]
    fn new(name: String, d: usize, k: usize, r: usize) -> PyResult<Self> {
        let s = ModuleShape::new(name, d, k, r);
        s.validate().map_err(value_error)?;
        Ok(Shape(s))
    }
    #[getter]
    fn name(&self) -> &str {
        &self.0.name
    }
    #[getter]
    fn d(&self) -> usize {
        self.0.d
    }
    #[getter]
    fn k(&self) -> usize {
        self.0.k
    }
    #[getter]
    fn r(&self) -> usize {
        self.0.r
    }
    /// `r (d + k)`: the module's LoRA entries.
    #[getter]
    fn numel(&self) -> usize {
        self.0.numel()
    }
    fn __repr__(&self) -> String {
        format!("ModuleShape({:?}, d={}, k={}, r={})", self.0.name, self.0.d, self.0.k, self.0.r)
    }
}

pub fn shapes_of(shapes: &[Shape]) -> Vec<ModuleShape> {
    shapes.iter().map(|s| s.0.clone()).collect()
}

/// The LoRA factors of every adapted module, in a fixed module order.
#[pyclass(name = "LoraFactors", module = "fedsoft", from_py_object)]
#[derive(Clone)]
pub struct Factors(pub LoraState);

fn flat<'py>(a: &PyReadonlyArray2<'py, f32>) -> (Vec<f32>, [usize; 2]) {
    let shape = a.shape();
    (a.as_array().iter().copied().collect(), [shape[0], shape[1]])
}

/// `x` as a 2-D float32 array, or a `ValueError` naming the module and factor and saying what `x` was.
fn matrix<'py>(
    module: &str,
    factor: &str,
    layout: &str,
    x: &Bound<'py, PyAny>,
) -> PyResult<PyReadonlyArray2<'py, f32>> {
    x.extract::<PyReadonlyArray2<'py, f32>>().map_err(|_| {
        let got = match (x.getattr("ndim").and_then(|n| n.extract::<usize>()), x.getattr("dtype")) {
            (Ok(2), Ok(dtype)) => format!("a 2-D array of {dtype}"),
            (Ok(n), _) => format!("{n} dimension(s)"),
            _ => format!("a {}", x.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "value".into())),
        };
        value_error(format!("module {module:?}: {factor} must be a 2-D float32 array ({layout}), got {got}"))
    })
}

#[pymethods]
impl Factors {
    /// Builds factors from `(name, B, A)` triples; `B` must be `d x r` and `A` `r x k` float32 arrays of
    /// finite numbers. A wrong array or a NaN is a `ValueError` naming the module and the factor.
    #[staticmethod]
    fn from_arrays(modules: Vec<(String, Bound<'_, PyAny>, Bound<'_, PyAny>)>) -> PyResult<Self> {
        let mut shapes = Vec::with_capacity(modules.len());
        let mut factors = Vec::with_capacity(modules.len());
        for (name, b, a) in &modules {
            let (b, [d, rb]) = flat(&matrix(name, "lora_B", "d x r", b)?);
            let (a, [ra, k]) = flat(&matrix(name, "lora_A", "r x k", a)?);
            if rb != ra {
                return Err(value_error(format!(
                    "{name}: lora_B is {d}x{rb} and lora_A is {ra}x{k}; their ranks (B's columns, A's rows) differ"
                )));
            }
            shapes.push(ModuleShape::new(name.clone(), d, k, rb));
            factors.push(ModuleFactors { b, a });
        }
        let state = LoraState::from_parts(shapes, factors).map_err(value_error)?;
        if let Some((module, factor, row, col, v)) = state.first_non_finite() {
            return Err(value_error(format!(
                "module {module:?}: {factor}[{row}, {col}] is {v}; factors must be finite"
            )));
        }
        Ok(Factors(state))
    }
    /// All-zero factors of the given shapes (where error feedback starts).
    #[staticmethod]
    fn zeros(shapes: Vec<Shape>) -> PyResult<Self> {
        LoraState::zeros(&shapes_of(&shapes)).map(Factors).map_err(value_error)
    }
    /// The paper's initialisation from a seed: `B = 0`, `A ~ N(0, 1/r^2)`, as the engine draws it.
    #[staticmethod]
    fn init_gaussian(shapes: Vec<Shape>, seed: u64) -> PyResult<Self> {
        LoraState::init_gaussian(&shapes_of(&shapes), seed).map(Factors).map_err(value_error)
    }
    /// Entries uniform in `[-scale, scale]` from a seed (tests, benchmarks).
    #[staticmethod]
    fn random(shapes: Vec<Shape>, seed: u64, scale: f32) -> PyResult<Self> {
        LoraState::random(&shapes_of(&shapes), seed, scale).map(Factors).map_err(value_error)
    }
    #[getter]
    fn shapes(&self) -> Vec<Shape> {
        self.0.shapes.iter().cloned().map(Shape).collect()
    }
    /// `(name, B, A)` for every module, as new float32 arrays.
    fn to_arrays<'py>(&self, py: Python<'py>) -> PyResult<Vec<NamedFactors<'py>>> {
        self.0
            .shapes
            .iter()
            .zip(&self.0.modules)
            .map(|(s, f)| {
                let b = Array2::from_shape_vec((s.d, s.r), f.b.clone()).map_err(value_error)?;
                let a = Array2::from_shape_vec((s.r, s.k), f.a.clone()).map_err(value_error)?;
                Ok((s.name.clone(), b.into_pyarray(py), a.into_pyarray(py)))
            })
            .collect()
    }
    /// Every entry in the core's flat order (each module's `B` row-major, then its `A`).
    fn flat<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f32>> {
        let v: Vec<f32> = self.0.modules.iter().flat_map(|m| m.iter()).collect();
        v.into_pyarray(py)
    }
    /// `M = sum_l r (d_l + k_l)`.
    #[getter]
    fn numel(&self) -> usize {
        self.0.numel()
    }
    /// `self - other`, module by module.
    fn sub(&self, other: &Factors) -> PyResult<Factors> {
        self.0.sub(&other.0).map(Factors).map_err(value_error)
    }
    /// `self + w * other`, as a new object.
    fn add_scaled(&self, other: &Factors, w: f32) -> PyResult<Factors> {
        let mut out = self.0.clone();
        out.add_scaled(&other.0, w).map_err(value_error)?;
        Ok(Factors(out))
    }
    /// SOFT's importance of each rank component of module `m`: `||b_j|| ||a_j||`.
    fn rank_scores(&self, m: usize) -> PyResult<Vec<f64>> {
        self.check_module(m)?;
        Ok(self.0.rank_scores(m))
    }
    /// The orthogonality regulariser of the paper's Eq. (7) without its weight: the off-diagonal energy of `B^T B`
    /// and `A A^T`, summed over modules.
    fn orthogonality_penalty(&self) -> f64 {
        self.0.orthogonality_penalty()
    }
    /// The regulariser's gradient for every factor (what `fedsoft.peft` feeds torch's autograd).
    fn orthogonality_gradient(&self) -> Factors {
        Factors(self.0.orthogonality_gradient())
    }
    /// Share of the Gram matrices' energy off the diagonal, per module: `(B^T B, A A^T)`.
    fn off_diagonal_fractions(&self) -> Vec<(f64, f64)> {
        (0..self.0.modules.len())
            .map(|m| {
                (
                    fedsoft_core::lora::off_diagonal_fraction(&self.0.gram_b(m)),
                    fedsoft_core::lora::off_diagonal_fraction(&self.0.gram_a(m)),
                )
            })
            .collect()
    }
    /// Whether every entry is a finite number.
    fn all_finite(&self) -> bool {
        self.0.all_finite()
    }
    fn __len__(&self) -> usize {
        self.0.modules.len()
    }
    fn __eq__(&self, other: &Factors) -> bool {
        self.0 == other.0
    }
    fn __repr__(&self) -> String {
        format!("LoraFactors({} modules, {} entries)", self.0.modules.len(), self.0.numel())
    }
}

impl Factors {
    fn check_module(&self, m: usize) -> PyResult<()> {
        if m >= self.0.modules.len() {
            return Err(value_error(format!("module index {m} out of range: {} modules", self.0.modules.len())));
        }
        Ok(())
    }
}

/// What one client uploads: per module, strictly increasing flat indices (`B` row-major, then `A`) and values.
#[pyclass(name = "SparseUpdate", module = "fedsoft", from_py_object)]
#[derive(Clone)]
pub struct Sparse(pub SparseUpdate);

#[pymethods]
impl Sparse {
    /// From per-module `(indices uint32, values float32)` pairs; checked against shapes when used.
    #[new]
    fn new(modules: Vec<(PyReadonlyArray1<'_, u32>, PyReadonlyArray1<'_, f32>)>) -> PyResult<Self> {
        let modules = modules
            .iter()
            .enumerate()
            .map(|(m, (i, v))| {
                let indices: Vec<u32> = i.as_array().iter().copied().collect();
                let values: Vec<f32> = v.as_array().iter().copied().collect();
                if indices.len() != values.len() {
                    return Err(value_error(format!(
                        "module {m}: {} indices but {} values",
                        indices.len(),
                        values.len()
                    )));
                }
                if indices.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(value_error(format!("module {m}: indices must be strictly increasing")));
                }
                Ok(SparseModule { indices, values })
            })
            .collect::<PyResult<_>>()?;
        Ok(Sparse(SparseUpdate { modules }))
    }
    /// Per module, `(indices, values)` as new numpy arrays.
    fn modules<'py>(&self, py: Python<'py>) -> Vec<SparseArrays<'py>> {
        self.0.modules.iter().map(|m| (m.indices.clone().into_pyarray(py), m.values.clone().into_pyarray(py))).collect()
    }
    /// Entries sent, over all modules.
    #[getter]
    fn nnz(&self) -> usize {
        self.0.nnz()
    }
    /// Entries sent per module.
    fn counts(&self) -> Vec<usize> {
        self.0.modules.iter().map(|m| m.indices.len()).collect()
    }
    /// The dense factors this upload stands for (zeros where nothing was sent), shaped like `like`.
    fn to_dense(&self, like: &Factors) -> PyResult<Factors> {
        self.0.to_dense(&like.0).map(Factors).map_err(value_error)
    }
    /// The wire format of fedsoft's server (`FSUP` v1: smallest layout per module, CRC32).
    fn encode<'py>(
        &self,
        py: Python<'py>,
        round: u32,
        client: u32,
        shapes: Vec<Shape>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let bytes = encoding::encode(round, client, &shapes_of(&shapes), &self.0).map_err(value_error)?;
        Ok(PyBytes::new(py, &bytes))
    }
    /// Bytes of [`encode`] without building them.
    fn encoded_len(&self, shapes: Vec<Shape>) -> PyResult<usize> {
        encoding::encoded_len(&shapes_of(&shapes), &self.0).map_err(value_error)
    }
    /// Reads an encoded upload, checking it against the expected shapes: `(round, client, update)`.
    #[staticmethod]
    fn decode(data: &[u8], shapes: Vec<Shape>) -> PyResult<(u32, u32, Sparse)> {
        let up = encoding::decode(data, &shapes_of(&shapes)).map_err(value_error)?;
        Ok((up.round, up.client, Sparse(up.update)))
    }
    fn __eq__(&self, other: &Sparse) -> bool {
        self.0 == other.0
    }
    fn __repr__(&self) -> String {
        format!("SparseUpdate({} modules, {} entries)", self.0.modules.len(), self.0.nnz())
    }
}
