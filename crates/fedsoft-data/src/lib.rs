//! Data for fedsoft: the packaged assets ([`assets`]), readers for the paper's and the packaged data sets
//! ([`readers`]), preprocessing ([`image`], [`text`]) and train/test splitting ([`split`]).
//!
//! The pipeline is reader → preprocessing → partition (in `fedsoft-core`) → cached tensors, each step
//! testable alone. Every reader validates what it reads and names the file and the problem.

pub mod assets;
pub mod dataset;
pub mod error;
pub mod image;
pub mod manifest;
pub mod readers;
pub mod split;
pub mod text;

pub use dataset::{ImageSet, TextSet};
pub use error::DataError;
