//! Kernels that the CPU backend runs as many small single-threaded passes, written here as one vectorised
//! (and, for row-wise work, multi-threaded) sweep each and wired into burn's autodiff as custom operations.
//!
//! Profiling the embedded default showed the exact GELU (forward `erf`, backward `erf` and `exp`) taking
//! about a fifth of a training step on the flex backend: burn evaluates `libm::erff` per element. The
//! polynomial forms in [`math`] agree with libm within 4.5e-7 (absolute, erf) and 3e-7 (relative, exp) and
//! run several elements per instruction. Attention's softmax and LayerNorm are burn compositions of six or
//! seven passes each, forward and backward, on one thread: [`softmax`] and [`layer_norm`] do one pass per
//! row each way (see [`rows`]). Every kernel runs on the flex backend in f32, with and without autodiff,
//! and defers to burn everywhere else (CUDA), so results on other devices are unchanged.

pub mod gelu;
pub mod layer_norm;
pub mod math;
pub mod rows;
pub mod softmax;

pub use gelu::gelu;
pub use layer_norm::layer_norm;
pub use softmax::attention_softmax;

use burn_flex::FlexTensor;

/// `x` itself when its elements are in row-major order (an offset is fine), else a row-major copy.
fn contiguous(x: &FlexTensor) -> FlexTensor {
    if x.layout().contiguous_offsets().is_some() { x.clone() } else { x.to_contiguous() }
}
