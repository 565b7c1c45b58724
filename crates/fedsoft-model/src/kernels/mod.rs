//! Kernels that the CPU backend runs as many small single-threaded passes, written here as one vectorised
//! (and, for row-wise work, multi-threaded) sweep each and wired into burn's autodiff as custom operations.
//!
//! Profiling the embedded default showed the exact GELU (forward `erf`, backward `erf` and `exp`) taking
//! about a fifth of a training step on the flex backend: burn evaluates `libm::erff` per element. The
//! polynomial forms in [`math`] agree with libm within 4.5e-7 (absolute, erf) and 3e-7 (relative, exp) and
//! run several elements per instruction. Attention's softmax and LayerNorm are burn compositions of six or
//! seven passes each, forward and backward, on one thread: [`layer_norm`](mod@layer_norm) does one pass per
//! row each way (see [`rows`]), and [`attention`](mod@attention) is one operation from the heads' products to
//! their contexts, with the softmax's row pass inside. A frozen linear layer, burn's product plus a broadcast
//! bias with two freshly zeroed and re-copied buffers, is one accumulating product in [`linear`]. Every
//! kernel runs on the flex backend in f32, with and without autodiff, and defers to burn everywhere else
//! (CUDA), so results on other devices are unchanged.

pub mod attention;
pub mod gelu;
pub mod layer_norm;
pub mod linear;
pub mod math;
pub mod product;
pub mod rows;
pub mod simd;

pub use attention::attention;
pub use gelu::gelu;
pub use layer_norm::layer_norm;
pub use linear::frozen_linear;

use burn::tensor::{DType, Shape, Tensor};
use burn_autodiff::Autodiff;
use burn_autodiff::checkpoint::strategy::NoCheckpointing;
use burn_autodiff::ops::{Backward, OpsKind};
use burn_backend::Bytes;
use burn_flex::{Flex, FlexTensor, Layout};

/// `x` through a custom operation, when it is an f32 tensor of the flex backend with or without autodiff:
/// `forward` computes the output and the state that `step`, the backward step, reads later. Under autodiff
/// the output is recorded with `step` (its state dropped when nothing upstream wants a gradient). `None`
/// for any other tensor, which the caller then sends through burn's own composition.
fn custom_op<const D: usize, S: Backward<Flex, 1>>(
    x: &Tensor<D>,
    step: S,
    forward: impl FnOnce(&FlexTensor) -> (FlexTensor, S::State),
) -> Option<Tensor<D>> {
    custom_op_n([x], step, |[x]| forward(x))
}

/// [`custom_op`] of `N` inputs, which must all be f32 tensors of the flex backend, all with autodiff or
/// all without.
fn custom_op_n<const D: usize, const N: usize, S: Backward<Flex, N>>(
    xs: [&Tensor<D>; N],
    step: S,
    forward: impl FnOnce([&FlexTensor; N]) -> (FlexTensor, S::State),
) -> Option<Tensor<D>> {
    if xs.iter().any(|x| x.dtype() != DType::F32) {
        return None;
    }
    let tracked: Option<Vec<_>> = xs.iter().map(|x| (*x).clone().try_into_primitive::<Autodiff<Flex>>().ok()).collect();
    if let Some(tracked) = tracked {
        let (out, state) = forward(std::array::from_fn(|i| tracked[i].primitive()));
        let nodes = std::array::from_fn(|i| tracked[i].node());
        let out = match step.prepare::<NoCheckpointing>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(state, out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        };
        return Some(Tensor::from_primitive::<Autodiff<Flex>>(out));
    }
    let plain: Option<Vec<_>> = xs.iter().map(|x| (*x).clone().try_into_primitive::<Flex>().ok()).collect();
    let plain = plain?;
    Some(Tensor::from_primitive::<Flex>(forward(std::array::from_fn(|i| &plain[i])).0))
}

/// `x` itself when its elements are in row-major order (an offset is fine), else a row-major copy.
fn contiguous(x: &FlexTensor) -> FlexTensor {
    if x.layout().contiguous_offsets().is_some() { x.clone() } else { x.to_contiguous() }
}

/// A row-major f32 tensor holding `values`. burn-flex's `FlexTensor::empty` zero-fills a byte vector and then
/// copies it into a new, aligned allocation (bytes carry no alignment); a vector of f32 is aligned for its
/// elements already, so this is one allocation and no copy.
fn from_vec(values: Vec<f32>, shape: Shape) -> FlexTensor {
    debug_assert_eq!(values.len(), shape.num_elements());
    FlexTensor::new(Bytes::from_elems(values), Layout::contiguous(shape), DType::F32)
}

/// A zero-filled row-major f32 tensor of `shape`, for a kernel to write its output into.
fn zeros(shape: &Shape) -> FlexTensor {
    from_vec(vec![0.0; shape.num_elements()], shape.clone())
}

/// What the kernels' tests share: reading a tensor back and comparing it with burn's result.
#[cfg(test)]
mod test_support {
    use burn::tensor::Tensor;

    pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    /// Every element within `tol` times `max(|reference|, 1)` of the reference.
    pub fn assert_relative(ours: &[f32], reference: &[f32], tol: f32, what: &str) {
        assert_eq!(ours.len(), reference.len(), "{what}: sizes");
        for (a, b) in ours.iter().zip(reference) {
            assert!((a - b).abs() <= tol * b.abs().max(1.0), "{what}: {a} vs {b}");
        }
    }

    /// `f` run on a fresh rayon pool of `threads` threads.
    pub fn in_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(f)
    }

    /// Every element within `tol` of the reference.
    pub fn assert_absolute(ours: &[f32], reference: &[f32], tol: f32, what: &str) {
        assert_eq!(ours.len(), reference.len(), "{what}: sizes");
        for (a, b) in ours.iter().zip(reference) {
            assert!((a - b).abs() <= tol, "{what}: {a} vs {b}");
        }
    }
}
