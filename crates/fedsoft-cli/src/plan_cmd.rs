//! `fedsoft plan`: the TSFA offline table, and optionally a controller-only simulation.

use crate::PlanArgs;
use anyhow::{Context, Result};
use fedsoft_engine::ExperimentConfig;
use fedsoft_engine::plan::{PlanReport, Planner};

pub fn run(args: &PlanArgs) -> Result<()> {
    let cfg = match &args.config {
        Some(path) => ExperimentConfig::load(path, &args.overrides)?,
        None => ExperimentConfig::from_toml(
            crate::run_cmd::DEFAULT_CONFIG,
            "the embedded default (configs/default.toml)",
            &args.overrides,
        )?,
    };
    let planner = Planner::new(&cfg)?;
    let sims = match args.simulate {
        Some(rounds) => planner.simulate(rounds, &args.kappa, args.seeds)?,
        None => Vec::new(),
    };
    let report = planner.report(sims);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).context("serialising the plan")?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

fn si_hz(hz: f64) -> String {
    if hz >= 1e6 { format!("{:.3} MHz", hz / 1e6) } else { format!("{:.3} kHz", hz / 1e3) }
}

/// The human-readable plan.
pub fn render(r: &PlanReport) -> String {
    let mut s = String::new();
    let snr = if (r.mean_snr_db_max - r.mean_snr_db_min).abs() < 1e-9 {
        format!("{:.1} dB", r.mean_snr_db_min)
    } else {
        format!("{:.1} to {:.1} dB", r.mean_snr_db_min, r.mean_snr_db_max)
    };
    s += &format!(
        "TSFA plan for {:?} ({}, {} adapted modules, M_r = {} r)\n",
        r.name, r.arch, r.adapted_modules, r.params_per_rank
    );
    s += &format!(
        "uplink: {} of {} clients per round, B = {}, q = {} bits, {:?} rate model, mean SNR {}\n",
        r.per_round,
        r.clients,
        si_hz(r.bandwidth_hz),
        r.value_bits,
        r.rate_model,
        snr
    );
    s += &format!(
        "average channel: Gamma_bar = {:.4}; latency budget tau_bar = {:.4} s; rho in [{}, {}]\n\n",
        r.gamma_bar, r.tau_bar_s, r.rho_min, r.rho_max
    );
    s += &format!(
        "{:>5} {:>10} {:>9} {:>9} {:>10} {:>11} {:>10} {:>10} {:>11}\n",
        "rank", "M_r", "rho*(r)", "feasible", "delay [s]", "rank term", "cov term", "sparsity", "J"
    );
    for row in &r.offline.rows {
        let mark = if row.rank == r.offline.best_rank { " <- r*" } else { "" };
        s += &format!(
            "{:>5} {:>10} {:>9.4} {:>9} {:>10.4} {:>11.4} {:>10.4} {:>10.4} {:>11.4}{}\n",
            row.rank,
            row.params,
            row.rho,
            if row.feasible { "yes" } else { "no" },
            row.delay_s,
            row.rank_term,
            row.cov_term,
            row.sparsity_term,
            row.objective,
            mark
        );
    }
    s += &format!(
        "\nchosen rank r* = {} with rho* = {:.4}; online controller V*w_sp = {:.6}\n",
        r.offline.best_rank, r.offline.best_rho, r.v_wsp
    );
    if let Some(first) = r.simulations.first() {
        s += &format!(
            "\nonline rules alone at r* = {} ({} Rayleigh-faded rounds, {} seed{}; each seed's time-average delay, \
             summarised over seeds):\n{:>10} {:>8} {:>12} {:>11} {:>10} {:>11} {:>19} {:>9} {:>12} {:>10}\n",
            r.offline.best_rank,
            first.rounds,
            first.seeds,
            if first.seeds == 1 { "" } else { "s" },
            "rule",
            "kappa_V",
            "V*w_sp",
            "median [s]",
            "<=1.05 tau",
            "mean [s]",
            format!("batch medians ({})", first.batches),
            "avg rho",
            "max backlog",
            "at rho_max"
        );
        for k in &r.simulations {
            let opt = |v: Option<f64>, p: usize| v.map_or("-".to_string(), |v| format!("{v:.p$}"));
            let (lo, hi) = k.batch_median_range_s;
            s += &format!(
                "{:>10} {:>8} {:>12} {:>11.4} {:>9.1}% {:>11.4} {:>19} {:>9.4} {:>12.2} {:>9.2}%\n",
                k.rule.name(),
                opt(k.kappa, 1),
                opt(k.v_wsp, 6),
                k.median_delay_s,
                100.0 * k.share_within_5pct,
                k.avg_delay_s,
                format!("{lo:.4}-{hi:.4}"),
                k.avg_rho,
                k.max_queue,
                100.0 * k.share_at_rho_max
            );
        }
        s += &format!(
            "(budget tau_bar = {:.4} s, offline rho* = {:.4}. Read the median and the share within 5 %: under \
             Rayleigh fading a round's\n delay has no finite mean (the rate vanishes as the fade goes to 0), so \
             the mean over seeds is not a stable\n figure. The Lyapunov rule meets tau_bar as a long-run average \
             only; a larger V keeps rho lower at the cost\n of a larger queue. The horizon rule spends T*tau_bar over \
             the run's own T rounds.)\nbatch means: {}\n",
            r.tau_bar_s,
            r.offline.best_rho,
            r.simulations
                .iter()
                .map(|k| {
                    let rule =
                        k.kappa.map_or(k.rule.name().to_string(), |kv| format!("{} kappa_V {kv}", k.rule.name()));
                    format!("{:.3}-{:.3} s ({rule})", k.batch_mean_range_s.0, k.batch_mean_range_s.1)
                })
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    s
}
