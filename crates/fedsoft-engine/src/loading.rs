//! Loading the configured backbone: a packaged asset or a local checkpoint, and its tokenizer.

use crate::config::ExperimentConfig;
use crate::error::EngineError;
use burn::tensor::Device;
use fedsoft_data::assets;
use fedsoft_model::backbone::Backbone;
use fedsoft_model::load::{load_dinov2_onnx, load_hf_dir};
use std::path::{Path, PathBuf};

/// Loads the configured backbone; returns it and the directory holding its tokenizer (text models).
pub fn load_backbone(
    cfg: &ExperimentConfig,
    cache: &Path,
    device: &Device,
) -> Result<(Backbone, Option<PathBuf>), EngineError> {
    use crate::arch::Arch;
    let path = match (&cfg.model.path, cfg.model.arch) {
        (Some(p), _) => p.clone(),
        (None, Arch::MinilmL6) => assets::ensure(cache, "minilm")?,
        (None, Arch::Dinov2S14) => assets::ensure(cache, "dinov2")?.join("vit_s_focus.onnx"),
        (None, other) => {
            return Err(EngineError::invalid("model.path", format!("{other} needs a checkpoint directory")));
        }
    };
    if !path.exists() {
        return Err(EngineError::invalid("model.path", format!("{} does not exist", path.display())));
    }
    let backbone = if path.is_file() && path.extension().is_some_and(|e| e == "onnx") {
        load_dinov2_onnx(&path, device)?
    } else {
        load_hf_dir(&path, device)?
    };
    let g = cfg.geometry()?;
    let s = &backbone.spec;
    if (s.hidden, s.layers, s.intermediate) != (g.hidden, g.layers, g.intermediate) {
        return Err(EngineError::invalid(
            "model.arch",
            format!(
                "{} expects hidden {} / {} layers / MLP {}, but {} has {} / {} / {}",
                cfg.model.arch,
                g.hidden,
                g.layers,
                g.intermediate,
                path.display(),
                s.hidden,
                s.layers,
                s.intermediate
            ),
        ));
    }
    let tokenizer = s
        .is_text()
        .then(|| if path.is_dir() { path.clone() } else { path.parent().map(Path::to_path_buf).unwrap_or_default() });
    Ok((backbone, tokenizer))
}
