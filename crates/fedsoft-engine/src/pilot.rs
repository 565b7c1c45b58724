//! The pilot run of TSFA's offline stage: the bound's rank term needs the singular-value profile `σ_r` of the
//! full fine-tuning update, which no one knows before training. A few rounds of ILoRA at the largest rank
//! the bound considers, with no sparsification and no regulariser, give an estimate: the singular values
//! of each module's trained `BA`, pooled over modules (module-averaged, as docs/algorithms.md §7.3 says, by default).

use crate::checkpoint;
use crate::config::{ControllerKind, ExperimentConfig, SigmaPooling};
use crate::engine::{Experiment, RunOptions};
use crate::error::EngineError;
use crate::pool::method_err;
use fedsoft_core::sparsify::MethodKind;
use fedsoft_core::sparsify::svd::singular_values;
use std::path::Path;

/// The pilot's variant of an experiment: same model, data, clients, seed and uplink; ILoRA at rank
/// `tsfa.bound.max_rank`, `tsfa.pilot.rounds` rounds.
pub fn pilot_config(cfg: &ExperimentConfig) -> Result<ExperimentConfig, EngineError> {
    let pilot = cfg.tsfa.pilot.ok_or_else(|| EngineError::invalid("tsfa.pilot", "is not configured"))?;
    let mut p = cfg.clone();
    p.name = format!("{}-pilot", cfg.name);
    p.method.name = MethodKind::Ilora;
    p.method.error_feedback = Some(false);
    p.training.orthogonality = Some(0.0);
    p.controller.kind = ControllerKind::Fixed;
    p.controller.rho = 0.0;
    p.lora.rank = cfg.tsfa.settings.bound.max_rank;
    p.rounds.total = pilot.rounds;
    p.rounds.eval_every = pilot.rounds;
    p.rounds.checkpoint_every = 1;
    p.tsfa.pilot = None;
    Ok(p)
}

/// Runs (or, when `dir` already holds it, resumes or reuses) the pilot and returns `σ_1..σ_R`, pooled over
/// modules as `tsfa.pilot.pooling` says and scaled so that `σ_1 = 1`, the scale the bound's weights are
/// calibrated for (docs/algorithms.md §7.3).
pub fn measure_sigma(cfg: &ExperimentConfig, cache: &Path, dir: &Path) -> Result<Vec<f64>, EngineError> {
    let p = pilot_config(cfg)?;
    let pooling = cfg.tsfa.pilot.map(|c| c.pooling).unwrap_or_default();
    let exp = Experiment::prepare(&p, cache)?;
    let opts = RunOptions { out_dir: dir.to_path_buf(), resume: true, cache: cache.to_path_buf(), stop_after: None };
    exp.run(&opts, |_| {})?;
    let state = checkpoint::load(dir, &exp.plan.shapes)?
        .ok_or_else(|| EngineError::invalid("tsfa.pilot", format!("{} holds no checkpoint", dir.display())))?;
    let per_module = state
        .global
        .shapes
        .iter()
        .zip(&state.global.modules)
        .map(|(shape, f)| singular_values(shape, f).map_err(method_err))
        .collect::<Result<Vec<_>, _>>()?;
    pool_profile(&per_module, p.lora.rank, pooling).ok_or_else(|| {
        EngineError::invalid(
            "tsfa.pilot",
            "the pilot left every adapter at zero: raise tsfa.pilot.rounds or training.lr",
        )
    })
}

/// `σ_1..σ_rank` from each module's singular values (largest first), scaled to `σ_1 = 1`; `None` when every
/// module is zero.
pub fn pool_profile(per_module: &[Vec<f64>], rank: usize, pooling: SigmaPooling) -> Option<Vec<f64>> {
    let mut pooled = vec![0.0f64; rank];
    for sv in per_module {
        for (p, &s) in pooled.iter_mut().zip(sv) {
            *p += match pooling {
                SigmaPooling::Mean => s,
                SigmaPooling::Energy => s * s,
            };
        }
    }
    if pooling == SigmaPooling::Energy {
        pooled.iter_mut().for_each(|p| *p = p.sqrt());
    }
    // The mean's 1 / modules cancels in the scaling.
    let top = pooled.first().copied().unwrap_or(0.0);
    (top.is_finite() && top > 0.0).then(|| pooled.iter().map(|p| p / top).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_pooling_averages_modules_and_energy_pooling_weights_the_large_ones() {
        let modules = vec![vec![3.0, 1.0], vec![1.0, 1.0]];
        assert_eq!(pool_profile(&modules, 2, SigmaPooling::Mean), Some(vec![1.0, 0.5]));
        let energy = pool_profile(&modules, 2, SigmaPooling::Energy).unwrap();
        assert!((energy[1] - (2.0f64 / 10.0).sqrt()).abs() < 1e-12);
        assert_eq!(pool_profile(&[vec![0.0, 0.0]], 2, SigmaPooling::Mean), None);
    }
}
