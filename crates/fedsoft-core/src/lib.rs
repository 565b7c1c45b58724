//! Backend-free algorithms of fedsoft.
//!
//! Everything a client does to its LoRA factors before they leave the device, and everything the server
//! does on reception, lives here as plain `f32` slices: the per-module factor state ([`lora`]), the exact
//! upload budget ([`budget`]), the sparsifiers ([`sparsify`]), error feedback ([`feedback`]), aggregation
//! and the covariance metric ([`aggregate`]), the classification head's values ([`head`]), the wire format of an upload ([`encoding`]) and its bit
//! ledger ([`ledger`]), and data partitioners ([`partition`]). No tensor library is involved, so the
//! simulator, the networked server and the benchmarks share one tested implementation.
//!
//! Layout convention (the paper's and PEFT's): `B` is `d x r` (`lora_B.weight`, `[out, r]`) and `A` is
//! `r x k` (`lora_A.weight`, `[r, in]`), both row-major. Inside one module, entries are numbered
//! `0..d*r` for `B` (row-major) followed by `d*r..d*r + r*k` for `A`.

pub mod aggregate;
pub mod budget;
pub mod encoding;
pub mod error;
pub mod feedback;
pub mod head;
pub mod le;
pub mod ledger;
pub mod lora;
pub mod mutate;
pub mod partition;
pub mod rng;
pub mod robust;
pub mod schedule;
pub mod sparsify;

pub use error::CoreError;
pub use lora::{LoraState, ModuleShape};
