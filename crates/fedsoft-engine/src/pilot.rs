//! The pilot run of TSFA's offline stage: the bound's rank term needs the singular-value profile `σ_r` of the
//! full fine-tuning update, which no one knows before training. A few rounds of ILoRA at the largest rank
//! the bound considers, with no sparsification and no regulariser, give an estimate: the singular values
//! of the trained `BA`, pooled over modules.

use crate::checkpoint;
use crate::config::{ConfigError, ControllerKind, ExperimentConfig};
use crate::engine::{Experiment, RunOptions, method_err};
use fedsoft_core::sparsify::MethodKind;
use fedsoft_core::sparsify::svd::singular_values;
use std::path::Path;

/// The pilot's variant of an experiment: same model, data, clients, seed and uplink; ILoRA at rank
/// `tsfa.bound.max_rank`, `tsfa.pilot.rounds` rounds.
pub fn pilot_config(cfg: &ExperimentConfig) -> Result<ExperimentConfig, ConfigError> {
    let pilot = cfg.tsfa.pilot.ok_or_else(|| ConfigError::invalid("tsfa.pilot", "is not configured"))?;
    let mut p = cfg.clone();
    p.name = format!("{}-pilot", cfg.name);
    p.method.name = MethodKind::Ilora;
    p.method.error_feedback = Some(false);
    p.training.orthogonality = Some(0.0);
    p.controller.kind = ControllerKind::Fixed;
    p.controller.rho = 0.0;
    p.lora.rank = cfg.tsfa.bound.max_rank;
    p.rounds.total = pilot.rounds;
    p.rounds.eval_every = pilot.rounds;
    p.rounds.checkpoint_every = 1;
    p.tsfa.pilot = None;
    Ok(p)
}

/// Runs (or, when `dir` already holds it, resumes or reuses) the pilot and returns `σ_1..σ_R`, scaled so
/// that `σ_1 = 1` — the scale the bound's weights are calibrated for (SPEC §7.3).
///
/// Modules are pooled by index: `σ_j = sqrt(Σ_m σ_{m,j}²)`, the energy of every module's `j`-th direction.
pub fn measure_sigma(cfg: &ExperimentConfig, cache: &Path, dir: &Path) -> Result<Vec<f64>, ConfigError> {
    let p = pilot_config(cfg)?;
    let exp = Experiment::prepare(&p, cache)?;
    let opts = RunOptions { out_dir: dir.to_path_buf(), resume: true, cache: cache.to_path_buf(), stop_after: None };
    exp.run(&opts, |_| {})?;
    let state = checkpoint::load(dir, &exp.plan.shapes)?
        .ok_or_else(|| ConfigError::invalid("tsfa.pilot", format!("{} holds no checkpoint", dir.display())))?;
    let mut energy = vec![0.0f64; p.lora.rank];
    for (shape, f) in state.global.shapes.iter().zip(&state.global.modules) {
        for (e, s) in energy.iter_mut().zip(singular_values(shape, f).map_err(method_err)?) {
            *e += s * s;
        }
    }
    let top = energy.first().copied().unwrap_or(0.0).sqrt();
    if !(top.is_finite() && top > 0.0) {
        return Err(ConfigError::invalid(
            "tsfa.pilot",
            "the pilot left every adapter at zero: raise tsfa.pilot.rounds or training.lr",
        ));
    }
    Ok(energy.iter().map(|e| e.sqrt() / top).collect())
}
