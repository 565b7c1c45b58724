//! Error feedback (docs/algorithms.md §4.4): what a client did not send this round is kept and added to its next update, so
//! no part of the update is lost for good, only delayed.

use crate::error::CoreError;
use crate::lora::LoraState;
use crate::sparsify::{SelectInput, SparseUpdate, Sparsifier, UploadKey};
use serde::{Deserialize, Serialize};

/// What is compressed: the update relative to the received global factors, or the local model itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedbackMode {
    /// `U = (local - global) + E` (recommended, D1): Stich-style memory on increments.
    #[default]
    Delta,
    /// `U = local + E`: the paper's literal wording; the server then averages sparse models.
    Model,
}

/// The quantity to compress: the update (or model) plus the memory, if error feedback is on.
pub fn compensate(
    mode: FeedbackMode,
    local: &LoraState,
    global: &LoraState,
    memory: Option<&LoraState>,
) -> Result<LoraState, CoreError> {
    let mut u = match mode {
        FeedbackMode::Delta => local.sub(global)?,
        FeedbackMode::Model => {
            local.check_compatible(global, "local vs global factors")?;
            local.clone()
        }
    };
    if let Some(e) = memory {
        u.add_scaled(e, 1.0)?;
    }
    Ok(u)
}

/// The new memory `E' = U - sent`: `U` with the sent entries zeroed. Since each sent value is read from `U`,
/// `sent + E' == U` holds exactly, bit for bit.
pub fn residual(u: &LoraState, sent: &SparseUpdate) -> Result<LoraState, CoreError> {
    let mut e = u.clone();
    if sent.modules.len() != e.modules.len() {
        return Err(CoreError::shape("upload module count", e.modules.len(), sent.modules.len()));
    }
    for ((m, f), s) in sent.modules.iter().zip(e.modules.iter_mut()).zip(&u.shapes) {
        for &i in &m.indices {
            if i as usize >= s.numel() {
                return Err(CoreError::invalid(&s.name, format!("entry index {i} beyond {} entries", s.numel())));
            }
            *f.get_mut(i as usize) = 0.0;
        }
    }
    Ok(e)
}

/// What a client sends, and what it keeps for its next round (`None` without error feedback).
#[derive(Debug, Clone, PartialEq)]
pub struct Compressed {
    pub sent: SparseUpdate,
    pub memory: Option<LoraState>,
}

/// A client's side of an upload (docs/algorithms.md §4.4 then §5): compensate with the memory, let the method select,
/// send the selected entries, keep the rest. The engine's client step and the Python `Compressor` both run
/// this, so the order of the steps (and with it every bit of the upload) cannot differ between them.
#[derive(Clone, Copy)]
pub struct Compression<'a> {
    pub mode: FeedbackMode,
    pub error_feedback: bool,
    pub sparsifier: &'a dyn Sparsifier,
}

impl Compression<'_> {
    /// Compresses the trained `local` factors against the received `global` ones; `memory` is what the
    /// client kept last time (ignored without error feedback).
    pub fn compress(
        &self,
        local: &LoraState,
        global: &LoraState,
        memory: Option<&LoraState>,
        key: UploadKey,
    ) -> Result<Compressed, CoreError> {
        let previous = if self.error_feedback { memory } else { None };
        let update = compensate(self.mode, local, global, previous)?;
        let input = SelectInput { update: &update, local, key };
        let selection = self.sparsifier.select(&input)?;
        let sent = SparseUpdate::gather(&update, &selection)?;
        let memory = if self.error_feedback { Some(residual(&update, &sent)?) } else { None };
        Ok(Compressed { sent, memory })
    }
}
