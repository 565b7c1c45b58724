//! TSFA planning from a config (the plan itself is `fedsoft_wireless::tsfa::TsfaPlan`), the controller-only
//! simulation of `fedsoft plan --simulate`, and its report.

use crate::config::ControllerKind;
use crate::config::ExperimentConfig;
use crate::error::EngineError;
use fedsoft_wireless::channel::Cell;
use fedsoft_wireless::control::{OnlineRule, RatioController};
use fedsoft_wireless::rate::RateModel;
use fedsoft_wireless::simulate::{Scenario, SimulationSummary, simulate};
use fedsoft_wireless::tsfa::{LyapunovController, OfflinePlan, PlanInputs, RatioRule, TsfaPlan};
use fedsoft_wireless::units::linear_to_db;
use fedsoft_wireless::uplink::Uplink;
use serde::{Deserialize, Serialize};

/// A run's TSFA plan and the config it came from.
#[derive(Debug, Clone)]
pub struct Planner {
    pub tsfa: TsfaPlan,
    config: ExperimentConfig,
}

impl Planner {
    pub fn new(cfg: &ExperimentConfig) -> Result<Self, EngineError> {
        cfg.validate()?;
        let w = &cfg.wireless;
        let uplink =
            Uplink { bandwidth_hz: w.bandwidth_hz, rate_model: w.rate_model, bandwidth_rule: w.bandwidth_rule };
        let inputs = PlanInputs {
            cell: Cell::new(&w.channel, cfg.clients.total, w.bandwidth_hz, cfg.seed)?,
            uplink,
            value_bits: w.value_bits as f64,
            index_overhead: w.index_overhead,
            params_per_rank: cfg.params_per_rank()?,
            per_round: cfg.clients.per_round,
            seed: cfg.seed,
        };
        Ok(Planner { tsfa: TsfaPlan::new(inputs, cfg.tsfa.settings.clone())?, config: cfg.clone() })
    }

    /// The paper's online controller (TSFA at `r*`, or OSFA at any rank with the same `V` and budget).
    pub fn controller(&self) -> Result<LyapunovController, EngineError> {
        Ok(self.tsfa.lyapunov()?)
    }

    /// The run's ratio rule at `rank`.
    pub fn ratio_controller(&self, rank: usize) -> Result<Box<dyn RatioController>, EngineError> {
        let rule = match self.config.controller.kind {
            ControllerKind::Fixed => RatioRule::Fixed(self.config.controller.rho),
            ControllerKind::Tsfa | ControllerKind::Osfa => RatioRule::Online(self.config.tsfa.settings.online),
        };
        Ok(self.tsfa.ratio_controller(rule, rank)?)
    }

    /// The controller-only scenario at rank `r`.
    pub fn scenario(&self, r: usize) -> Scenario {
        self.tsfa.scenario(r)
    }

    /// Runs the online rules alone for `rounds` rounds at `r*` over `seeds` fading draws (seeds
    /// `seed, seed + 1, ...` of client sampling and fading on the config's cell): the Lyapunov controller once
    /// per `kappa_V`, then the finite-horizon rule.
    pub fn simulate(&self, rounds: u64, kappas: &[f64], seeds: u64) -> Result<Vec<RuleSummary>, EngineError> {
        let r = self.tsfa.offline.best_rank;
        let seeds = seeds.max(1);
        let mut out = Vec::new();
        for &k in kappas {
            if !(k.is_finite() && k > 0.0) {
                return Err(EngineError::invalid("--kappa", format!("must be positive, got {k}")));
            }
            let v = self.tsfa.calibrated_v(k);
            let runs = self.over_seeds(rounds, seeds, || Ok(Box::new(self.tsfa.lyapunov_with_v(v)?)))?;
            out.push(RuleSummary::new(OnlineRule::Lyapunov, Some(k), Some(v), self.tsfa.link.tau_bar, &runs));
        }
        let horizon = RatioRule::Online(OnlineRule::Horizon);
        let runs = self.over_seeds(rounds, seeds, || Ok(self.tsfa.ratio_controller(horizon, r)?))?;
        out.push(RuleSummary::new(OnlineRule::Horizon, None, None, self.tsfa.link.tau_bar, &runs));
        Ok(out)
    }

    fn over_seeds(
        &self,
        rounds: u64,
        seeds: u64,
        make: impl Fn() -> Result<Box<dyn RatioController>, EngineError>,
    ) -> Result<Vec<SimulationSummary>, EngineError> {
        let base = self.scenario(self.tsfa.offline.best_rank);
        (0..seeds)
            .map(|i| {
                let scn = Scenario { seed: base.seed.wrapping_add(i), ..base.clone() };
                Ok(simulate(&scn, make()?.as_mut(), self.config.tsfa.settings.rho_max, rounds)?)
            })
            .collect()
    }

    /// A serialisable account of the plan.
    pub fn report(&self, simulations: Vec<RuleSummary>) -> PlanReport {
        let cfg = &self.config;
        let snr_db: Vec<f64> = self.tsfa.cell.mean_snr.iter().map(|&s| linear_to_db(s)).collect();
        PlanReport {
            name: cfg.name.clone(),
            arch: cfg.model.arch.to_string(),
            adapted_modules: cfg.lora_shapes(1).map(|s| s.len()).unwrap_or(0),
            params_per_rank: self.tsfa.link.params_per_rank,
            clients: cfg.clients.total,
            per_round: cfg.clients.per_round,
            bandwidth_hz: self.tsfa.link.bandwidth_hz,
            value_bits: cfg.wireless.value_bits,
            rate_model: cfg.wireless.rate_model,
            mean_snr_db_min: snr_db.iter().cloned().fold(f64::INFINITY, f64::min),
            mean_snr_db_max: snr_db.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
            gamma_bar: self.tsfa.link.gamma_bar,
            tau_bar_s: self.tsfa.link.tau_bar,
            rho_min: cfg.tsfa.settings.rho_min,
            rho_max: cfg.tsfa.settings.rho_max,
            offline: self.tsfa.offline.clone(),
            v_wsp: self.tsfa.v_wsp,
            simulations,
        }
    }
}

/// One online rule simulated over several seeds: means over seeds, and how often the run's own average
/// delay stayed within 5 % of the budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleSummary {
    pub rule: OnlineRule,
    /// `kappa_V` and `V w_sp` of a Lyapunov row.
    pub kappa: Option<f64>,
    pub v_wsp: Option<f64>,
    pub seeds: u64,
    pub rounds: u64,
    /// Mean over seeds of each run's average delay, and its standard deviation over seeds.
    pub avg_delay_s: f64,
    pub avg_delay_std_s: f64,
    pub avg_rho: f64,
    pub max_queue: f64,
    pub final_queue: f64,
    pub share_at_rho_max: f64,
    /// Share of seeds whose average delay is at most `1.05 tau_bar`.
    pub share_within_5pct: f64,
    /// Median over seeds of each run's average delay. Under Rayleigh fading a round's delay has no finite
    /// mean (the rate vanishes as the fade goes to 0), so the mean over seeds swings from batch to batch of
    /// seeds while the median and the share within 5 % do not.
    pub median_delay_s: f64,
    /// The seeds cut into this many disjoint batches of consecutive seeds, for the spread below.
    pub batches: u64,
    /// Lowest and highest batch median, and lowest and highest batch mean, of the runs' average delays.
    pub batch_median_range_s: (f64, f64),
    pub batch_mean_range_s: (f64, f64),
}

/// Batches the seeds are cut into for the spread of the plan's figures (when there are at least 20 seeds).
pub const SEED_BATCHES: usize = 10;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => 0.5 * (v[n / 2 - 1] + v[n / 2]),
    }
}

fn range(v: impl Iterator<Item = f64>) -> (f64, f64) {
    v.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(x), hi.max(x)))
}

impl RuleSummary {
    fn new(rule: OnlineRule, kappa: Option<f64>, v_wsp: Option<f64>, tau_bar: f64, runs: &[SimulationSummary]) -> Self {
        let n = runs.len().max(1) as f64;
        let mean = |f: fn(&SimulationSummary) -> f64| runs.iter().map(f).sum::<f64>() / n;
        let avg_delay_s = mean(|s| s.avg_delay_s);
        let var = runs.iter().map(|s| (s.avg_delay_s - avg_delay_s).powi(2)).sum::<f64>() / n;
        let delays: Vec<f64> = runs.iter().map(|s| s.avg_delay_s).collect();
        let batches = if delays.len() >= 2 * SEED_BATCHES { SEED_BATCHES } else { 1 };
        let size = delays.len().div_ceil(batches).max(1);
        let medians: Vec<f64> = delays.chunks(size).map(|c| median(&mut c.to_vec())).collect();
        let means: Vec<f64> = delays.chunks(size).map(|c| c.iter().sum::<f64>() / c.len() as f64).collect();
        RuleSummary {
            rule,
            kappa,
            v_wsp,
            seeds: runs.len() as u64,
            rounds: runs.first().map_or(0, |s| s.rounds),
            avg_delay_s,
            avg_delay_std_s: var.sqrt(),
            avg_rho: mean(|s| s.avg_rho),
            max_queue: runs.iter().map(|s| s.max_queue).fold(f64::NEG_INFINITY, f64::max),
            final_queue: mean(|s| s.final_queue),
            share_at_rho_max: mean(|s| s.share_at_rho_max),
            share_within_5pct: runs.iter().filter(|s| s.avg_delay_s <= 1.05 * tau_bar).count() as f64 / n,
            median_delay_s: median(&mut delays.clone()),
            batches: medians.len() as u64,
            batch_median_range_s: range(medians.into_iter()),
            batch_mean_range_s: range(means.into_iter()),
        }
    }
}

/// What `fedsoft plan --json` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanReport {
    pub name: String,
    pub arch: String,
    pub adapted_modules: usize,
    pub params_per_rank: usize,
    pub clients: usize,
    pub per_round: usize,
    pub bandwidth_hz: f64,
    pub value_bits: u32,
    pub rate_model: RateModel,
    pub mean_snr_db_min: f64,
    pub mean_snr_db_max: f64,
    pub gamma_bar: f64,
    pub tau_bar_s: f64,
    pub rho_min: f64,
    pub rho_max: f64,
    pub offline: OfflinePlan,
    pub v_wsp: f64,
    pub simulations: Vec<RuleSummary>,
}
