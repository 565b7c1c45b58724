//! The server's check of one upload before it can reach the aggregate.

use crate::pool::{ClientUpload, RoundTask};
use fedsoft_core::encoding::decode;
use fedsoft_core::lora::ModuleShape;
use fedsoft_core::sparsify::{MethodKind, MethodRules, SparseUpdate, SparsifierOptions};

/// Why the server refused an upload; its text is the reason `clients.jsonl` records and the network reply
/// carries.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejection {
    /// The bytes are not a valid upload for these modules (length, checksum, shape, encoding).
    #[error("{0}")]
    Malformed(String),
    #[error("stale upload: round {sent} while the server is in round {current}")]
    Stale { sent: u64, current: u64 },
    #[error("upload names client {named} but came from client {from}")]
    WrongSender { named: usize, from: usize },
    #[error("over budget: {entries} entries where {method} at rho {rho} allows {budget}")]
    OverBudget { entries: usize, method: MethodKind, rho: f64, budget: usize },
    #[error("non-finite values in the update")]
    NonFiniteUpdate,
    /// The decoder found a value that is not finite (its words say where).
    #[error("{0}")]
    NonFiniteEncoded(String),
    #[error("head has {weights} + {biases} values, expected {want_weights} + {want_biases}")]
    HeadShape { weights: usize, biases: usize, want_weights: usize, want_biases: usize },
    #[error("non-finite values in the head")]
    NonFiniteHead,
    /// A client that reports its own sample count (the aggregation weight) reported none that is positive.
    #[error("no positive sample count reported (num-examples): the aggregate weighs each upload by it")]
    NoSamples,
}

impl Rejection {
    /// Whether the upload held values that are not finite: what a client whose training diverged sends.
    pub fn is_non_finite(&self) -> bool {
        matches!(self, Rejection::NonFiniteUpdate | Rejection::NonFiniteEncoded(_) | Rejection::NonFiniteHead)
    }
}

/// What an upload must be for the server to take it: the adapted modules' shapes, the method and its budget
/// options, the head's size. One value, built with the experiment, that the server's round and the networked
/// server's early verdict both ask, so validation has one home.
#[derive(Debug, Clone)]
pub struct UploadCheck {
    shapes: Vec<ModuleShape>,
    method: MethodKind,
    options: SparsifierOptions,
    /// `(hidden, classes)` of the classification head.
    head: (usize, usize),
}

impl UploadCheck {
    /// The check for these modules, `method` with its budget `options`, and a head of `(hidden, classes)`.
    pub fn new(shapes: Vec<ModuleShape>, method: MethodKind, options: SparsifierOptions, head: (usize, usize)) -> Self {
        UploadCheck { shapes, method, options, head }
    }

    /// The entries one upload may carry at ratio `rho`.
    pub fn budget(&self, rho: fedsoft_core::budget::DropRatio) -> usize {
        self.method.upload_budget(&self.shapes, rho, &self.options)
    }

    /// The server's check of one upload before it may reach the aggregate: the wire format (lengths,
    /// checksum, module shapes), the round and sender, finite values, and the method's budget at this
    /// round's ratio.
    pub fn accept(&self, task: &RoundTask<'_>, upload: &ClientUpload) -> Result<SparseUpdate, Rejection> {
        // A decoding error already says "malformed upload"; say it once.
        let msg = decode(&upload.bytes, &self.shapes).map_err(|e| match e {
            fedsoft_core::CoreError::NonFinite { .. } => Rejection::NonFiniteEncoded(e.to_string()),
            fedsoft_core::CoreError::Decode(_) => Rejection::Malformed(e.to_string()),
            other => Rejection::Malformed(format!("malformed upload: {other}")),
        })?;
        if u64::from(msg.round) != task.round {
            return Err(Rejection::Stale { sent: u64::from(msg.round), current: task.round });
        }
        if msg.client as usize != upload.client {
            return Err(Rejection::WrongSender { named: msg.client as usize, from: upload.client });
        }
        let nnz = msg.update.nnz();
        let budget = self.budget(task.rho);
        if nnz > budget {
            return Err(Rejection::OverBudget { entries: nnz, method: self.method, rho: task.rho.get(), budget });
        }
        if msg.update.modules.iter().any(|m| m.values.iter().any(|v| !v.is_finite())) {
            return Err(Rejection::NonFiniteUpdate);
        }
        let (hw, hb) = (self.head.0 * self.head.1, self.head.1);
        if upload.head.weight.len() != hw || upload.head.bias.len() != hb {
            return Err(Rejection::HeadShape {
                weights: upload.head.weight.len(),
                biases: upload.head.bias.len(),
                want_weights: hw,
                want_biases: hb,
            });
        }
        if upload.head.weight.iter().chain(&upload.head.bias).any(|v| !v.is_finite()) {
            return Err(Rejection::NonFiniteHead);
        }
        Ok(msg.update)
    }
}
