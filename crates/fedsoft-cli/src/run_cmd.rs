//! `fedsoft run` and `fedsoft compare`.

use anyhow::{Context, Result};
use fedsoft_core::sparsify::MethodKind;
use fedsoft_data::assets;
use fedsoft_engine::ExperimentConfig;
use fedsoft_engine::engine::{Experiment, RunOptions};
use fedsoft_engine::metrics::{RoundRecord, Summary};
use fedsoft_report::record::RunRecord;
use fedsoft_report::seeds::SeedVariant;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};

/// The embedded default experiment.
pub const DEFAULT_CONFIG: &str = include_str!("../../../configs/default.toml");

#[derive(clap::Args)]
pub struct RunArgs {
    /// Experiment file (TOML); the embedded default (configs/default.toml) when absent.
    pub config: Option<PathBuf>,
    /// Override a config field, e.g. --set rounds.total=50 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Output directory (default: runs/<name>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Asset cache (default: $FEDSOFT_CACHE or .cache/fedsoft).
    #[arg(long)]
    pub cache: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct CompareArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Methods to compare under identical seeds, samples and channels.
    #[arg(long, value_delimiter = ',', default_value = "soft,flasc,rlora,hetlora,fedlodrop,ilora")]
    pub methods: Vec<String>,
    /// Paired seeds (the config's seed, seed + 1, ...): every method runs on each, and each method is compared
    /// with the first by the per-seed differences of final accuracy (95 % interval, one-sided p, and a verdict
    /// from 5 seeds on), as on the results page.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub seeds: u64,
}

pub fn load_config(args: &RunArgs) -> Result<ExperimentConfig> {
    Ok(match &args.config {
        Some(p) => ExperimentConfig::load(p, &args.overrides)?,
        None => {
            ExperimentConfig::from_toml(DEFAULT_CONFIG, "the embedded default (configs/default.toml)", &args.overrides)?
        }
    })
}

fn progress(total: u64, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] round {pos}/{len} {msg} (ETA {eta})")
            .expect("template")
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_string());
    bar
}

fn on_round(bar: &ProgressBar, last_acc: &mut Option<f64>, r: &RoundRecord) {
    if r.test_accuracy.is_some() {
        *last_acc = r.test_accuracy;
    }
    let acc = last_acc.map_or("-".to_string(), |a| format!("{a:.3}"));
    bar.set_message(format!("acc {acc} rho {:.3} delay {:.2}s (avg {:.2}s)", r.rho, r.delay_s, r.avg_delay_s));
    bar.set_position(r.round + 1);
}

/// One line per round on stderr, for servers and logs (no progress bar).
pub fn on_round_line(r: &RoundRecord) {
    eprintln!("{}", r.progress_line());
}

pub(crate) fn execute(cfg: &ExperimentConfig, out: &Path, resume: bool, cache: &Path, label: &str) -> Result<Summary> {
    let opts = RunOptions { out_dir: out.to_path_buf(), resume, cache: cache.to_path_buf(), stop_after: None };
    if cfg.tsfa.pilot.is_some() {
        eprintln!("{label}: pilot run for the singular-value profile in {}", out.join("pilot").display());
    }
    let exp = Experiment::prepare_run(cfg, &opts)?;
    let bar = progress(cfg.rounds.total, label);
    let mut last = None;
    let summary = exp.run(&opts, |r| on_round(&bar, &mut last, r))?;
    bar.finish();
    Ok(summary)
}

fn print_table(rows: &[Summary]) {
    println!(
        "\n{:<10} {:<6} {:>4} {:>7} {:>9} {:>12} {:>8} {:>14} {:>14} {:>9}",
        "method",
        "ctrl",
        "rank",
        "rounds",
        "accuracy",
        "avg delay s",
        "avg rho",
        "uplink Mbit",
        "encoded Mbit",
        "wall s"
    );
    for s in rows {
        println!(
            "{:<10} {:<6} {:>4} {:>7} {:>9} {:>12.3} {:>8} {:>14.2} {:>14.2} {:>9.1}",
            s.method,
            s.controller,
            s.rank,
            s.rounds,
            s.final_test_accuracy.map_or("-".into(), |a| format!("{a:.4}")),
            s.avg_delay_s,
            s.avg_rho.map_or("-".into(), |r| format!("{r:.3}")),
            s.uplink_bits_paper as f64 / 1e6,
            s.uplink_bits_encoded as f64 / 1e6,
            s.wall_s
        );
    }
}

/// `runs/<name>`, or `runs/<name>-2`, `-3`, ... when earlier runs are there: without `--out`, a new run never
/// collides with an old one (and `--resume` needs `--out`, so it always names what it continues).
fn default_out(name: &str) -> PathBuf {
    let base = PathBuf::from("runs").join(name);
    if !base.exists() {
        return base;
    }
    (2..).map(|i| PathBuf::from("runs").join(format!("{name}-{i}"))).find(|p| !p.exists()).expect("a free name")
}

/// Draws the report after a run; a failure here (e.g. no font package reachable) leaves the results intact
/// and says how to draw it later.
fn announce_report(runs: &[PathBuf], out: &Path, cache: &Path) {
    match crate::report_cmd::write_report(runs, out, cache) {
        Ok(md) => println!("plots and summary in {}", md.display()),
        Err(e) => {
            eprintln!("warning: no report drawn ({e:#}); draw it later with `fedsoft report {}`", runs[0].display())
        }
    }
}

pub fn run(args: &RunArgs) -> Result<()> {
    let cfg = load_config(args)?;
    let cache = args.cache.clone().unwrap_or_else(assets::default_cache);
    if args.resume && args.out.is_none() {
        anyhow::bail!("--resume needs --out DIR: the directory of the run to continue");
    }
    let out = args.out.clone().unwrap_or_else(|| default_out(&cfg.name));
    let summary = execute(&cfg, &out, args.resume, &cache, &cfg.method.name.to_string())?;
    print_table(std::slice::from_ref(&summary));
    println!(
        "\nresults in {}: metrics.jsonl (per round), clients.jsonl (per client), summary.json, config.toml, \
         checkpoint, adapter/ (PEFT)",
        out.display()
    );
    announce_report(std::slice::from_ref(&out), &out.join("report"), &cache);
    Ok(())
}

pub fn compare(args: &CompareArgs) -> Result<()> {
    let base = load_config(&args.run)?;
    let methods: Vec<MethodKind> =
        args.methods.iter().map(|m| m.trim().parse::<MethodKind>()).collect::<Result<_, _>>().context("--methods")?;
    let cache = args.run.cache.clone().unwrap_or_else(assets::default_cache);
    if args.run.resume && args.run.out.is_none() {
        anyhow::bail!("--resume needs --out DIR: the directory of the comparison to continue");
    }
    let out = args.run.out.clone().unwrap_or_else(|| default_out(&format!("{}-compare", base.name)));
    // Validate every variant at every seed before training any.
    let seeds: Vec<u64> = (0..args.seeds).map(|k| base.seed + k).collect();
    let mut cfgs = Vec::new();
    for m in &methods {
        let mut per_seed = Vec::new();
        for &seed in &seeds {
            let mut o = args.run.overrides.clone();
            o.push(format!("method.name=\"{m}\""));
            if args.seeds > 1 {
                o.push(format!("seed={seed}"));
            }
            let cfg = match &args.run.config {
                Some(p) => ExperimentConfig::load(p, &o)?,
                None => ExperimentConfig::from_toml(DEFAULT_CONFIG, "the embedded default", &o)?,
            };
            cfg.validate_run()?;
            per_seed.push(cfg);
        }
        cfgs.push(per_seed);
    }
    // One seed keeps the layout it always had: a directory per method.
    let dir = |m: &MethodKind, seed: u64| {
        if args.seeds == 1 { out.join(m.as_str()) } else { out.join(m.as_str()).join(format!("seed-{seed}")) }
    };
    let mut rows = Vec::new();
    for (k, &seed) in seeds.iter().enumerate() {
        for (m, per_seed) in methods.iter().zip(&cfgs) {
            let label = if args.seeds == 1 { m.to_string() } else { format!("{m} seed {seed}") };
            rows.push(execute(&per_seed[k], &dir(m, seed), args.run.resume, &cache, &label)?);
        }
    }
    let table = serde_json::to_string_pretty(&rows)?;
    fedsoft_engine::checkpoint::write_atomic(&out.join("comparison.json"), table.as_bytes())?;
    if args.seeds == 1 {
        print_table(&rows);
        println!("\nresults in {} (one directory per method, comparison.json)", out.display());
        announce_report(std::slice::from_ref(&out), &out.join("report"), &cache);
        return Ok(());
    }
    let variants = methods
        .iter()
        .zip(&cfgs)
        .map(|(m, per_seed)| {
            let runs = per_seed
                .iter()
                .zip(&seeds)
                .map(|(cfg, &seed)| {
                    let run = fedsoft_report::load_runs(&[dir(m, seed)])?.remove(0);
                    Ok(RunRecord::from_run(&run, seed, cfg.digest())?)
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(SeedVariant { label: m.to_string(), runs })
        })
        .collect::<Result<Vec<_>>>()?;
    println!("\n{}", fedsoft_report::seeds::table(&variants)?);
    println!("results in {} (a directory per method and seed; every run's summary in comparison.json)", out.display());
    let report = out.join("report");
    match crate::report_cmd::register_font(&cache)
        .and_then(|()| Ok(fedsoft_report::seeds::write(&variants, &base.name, &report)?))
    {
        Ok(files) => println!("plots and summary in {}", files.markdown.display()),
        Err(e) => eprintln!("warning: no report drawn ({e:#}); the table above is the comparison"),
    }
    Ok(())
}
