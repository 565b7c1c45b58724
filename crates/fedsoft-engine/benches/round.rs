//! Seconds per federated round, by phase, and how busy the cores were: the embedded default experiment
//! (configs/default.toml) or any config, with `--set` overrides, for a few rounds.
//!
//! `cargo bench -p fedsoft-engine --bench round -- [CONFIG] [--rounds N] [--set key=value]...`
//!
//! e.g. `-- --set training.threads=1` against `-- --set training.threads=2` shows what running the clients
//! side by side gains. Every round is evaluated, so the evaluation column is filled. CPU time is the whole
//! process's user + system time over the round (all threads), read from /proc/self/stat.

use fedsoft_engine::ExperimentConfig;
use fedsoft_engine::engine::{Experiment, RunOptions};
use std::path::PathBuf;
use std::time::Instant;

const DEFAULT: &str = include_str!("../../../configs/default.toml");

/// User + system seconds of this process so far (Linux; NaN elsewhere).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name; 100 ticks per second.
    (ticks(11) + ticks(12)) / 100.0
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// The workspace root: `cargo bench` runs in this crate's directory, but `configs/` and the asset cache
/// live at the root, where the user typed the command.
fn workspace_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// A relative CONFIG that is not found in the crate's directory is read from the workspace root.
fn config_path(arg: &str) -> PathBuf {
    let path = PathBuf::from(arg);
    let from_root = workspace_root().join(&path);
    if path.is_relative() && !path.exists() && from_root.exists() {
        from_root.canonicalize().unwrap_or(from_root)
    } else {
        path
    }
}

fn main() {
    fedsoft_model::memory::reuse_freed_buffers();
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let (mut config, mut rounds, mut sets) = (None, 3u64, Vec::new());
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => rounds = args.next().and_then(|v| v.parse().ok()).expect("--rounds N"),
            "--set" => sets.push(args.next().expect("--set key=value")),
            path => config = Some(config_path(path)),
        }
    }
    sets.push(format!("rounds.total={rounds}"));
    sets.push("rounds.eval_every=1".into());
    let cfg = match &config {
        Some(p) => ExperimentConfig::load(p, &sets),
        None => ExperimentConfig::from_toml(DEFAULT, "configs/default.toml", &sets),
    }
    .unwrap_or_else(|e| panic!("config: {e}"));
    // The workspace's cache, as the tests and the step bench read it.
    let cache =
        std::env::var_os("FEDSOFT_CACHE").map_or_else(|| workspace_root().join(".cache/fedsoft"), PathBuf::from);
    let dir = tempfile::tempdir().expect("temporary run directory");
    let opts = RunOptions { out_dir: dir.path().join("run"), resume: false, cache, stop_after: None };
    let exp = Experiment::prepare_run(&cfg, &opts).unwrap_or_else(|e| panic!("prepare: {e}"));
    println!(
        "{} ({}), {} clients per round, threads {}, {} rounds",
        config.as_ref().map_or("configs/default.toml".into(), |p| p.display().to_string()),
        sets[..sets.len() - 2].join(" "),
        cfg.clients.per_round,
        exp.workers().threads(),
        rounds
    );
    println!("round    train  sparsify  aggregate     eval     wall   cpu/wall");
    let (mut cpu0, mut t0) = (cpu_seconds(), Instant::now());
    let mut totals = [0.0f64; 6];
    exp.run(&opts, |r| {
        let (cpu, wall) = (cpu_seconds() - cpu0, t0.elapsed().as_secs_f64());
        let t = &r.time;
        println!(
            "{:>5} {:>8.2} {:>9.3} {:>10.3} {:>8.2} {:>8.2} {:>10.2}",
            r.round,
            t.train_s,
            t.sparsify_s,
            t.aggregate_s,
            t.eval_s,
            wall,
            cpu / wall
        );
        for (acc, v) in totals.iter_mut().zip([t.train_s, t.sparsify_s, t.aggregate_s, t.eval_s, wall, cpu]) {
            *acc += v;
        }
        (cpu0, t0) = (cpu_seconds(), Instant::now());
    })
    .unwrap_or_else(|e| panic!("run: {e}"));
    let n = rounds as f64;
    println!(
        "mean  {:>8.2} {:>9.3} {:>10.3} {:>8.2} {:>8.2} {:>10.2}   peak RSS {:.0} MiB",
        totals[0] / n,
        totals[1] / n,
        totals[2] / n,
        totals[3] / n,
        totals[4] / n,
        totals[5] / totals[4],
        peak_rss_mib()
    );
}
