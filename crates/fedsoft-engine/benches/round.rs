//! Seconds per federated round, by phase, and how busy the cores were: the embedded default experiment
//! (configs/default.toml) or any config, with `--set` overrides, for a few rounds.
//!
//! `cargo bench -p fedsoft-engine --bench round -- [CONFIG] [--rounds N] [--set key=value]...`
//!
//! e.g. `-- --set training.threads=1` against `-- --set training.threads=2` shows what running the clients
//! side by side gains. Every round is evaluated, so the evaluation column is filled. CPU time is the whole
//! process's user + system time over the round (all threads), read from /proc/self/stat.
//!
//! For image models it ends with the training's products against the FMA peak measured here: the products'
//! operations per round ([`fedsoft_model::flops`]) over the mean training time, as a fraction of an FMA loop's
//! rate on as many cores as the clients use (x86-64 with AVX2 and FMA; 512-bit where the CPU has AVX-512).

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

/// Floating-point operations per second of independent FMA chains on one core, per vector width this CPU
/// has (256-bit with AVX2 and FMA, 512-bit with AVX-512): the most its product kernels could reach at that
/// width. Empty off x86-64.
fn fma_peaks_per_core() -> Vec<(u32, f64)> {
    let mut peaks = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        use std::hint::black_box;
        // Twelve independent chains cover the latency of two FMA units (4-5 cycles each) on every x86 core.
        #[target_feature(enable = "avx2,fma")]
        fn chains256(iterations: u64) -> f32 {
            let (a, b) = (_mm256_set1_ps(black_box(0.999_999)), _mm256_set1_ps(black_box(1e-7)));
            let mut acc = [_mm256_set1_ps(1.0); 12];
            for _ in 0..iterations {
                for x in &mut acc {
                    *x = _mm256_fmadd_ps(*x, a, b);
                }
            }
            let mut lanes = [0.0f32; 8];
            let sum = acc.iter().fold(_mm256_setzero_ps(), |s, x| _mm256_add_ps(s, *x));
            // SAFETY: `lanes` holds the 8 floats the store writes.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
            lanes.iter().sum()
        }
        #[target_feature(enable = "avx512f")]
        fn chains512(iterations: u64) -> f32 {
            let (a, b) = (_mm512_set1_ps(black_box(0.999_999)), _mm512_set1_ps(black_box(1e-7)));
            let mut acc = [_mm512_set1_ps(1.0); 12];
            for _ in 0..iterations {
                for x in &mut acc {
                    *x = _mm512_fmadd_ps(*x, a, b);
                }
            }
            _mm512_reduce_add_ps(acc.iter().fold(_mm512_setzero_ps(), |s, x| _mm512_add_ps(s, *x)))
        }
        let iterations = black_box(50_000_000u64);
        let rate = |lanes: f64, run: &dyn Fn() -> f32| {
            black_box(run()); // lets the clock settle at this width
            let t = Instant::now();
            black_box(run());
            iterations as f64 * 12.0 * lanes * 2.0 / t.elapsed().as_secs_f64()
        };
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU was just checked for AVX2 and FMA.
            peaks.push((256, rate(8.0, &|| unsafe { chains256(iterations) })));
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU was just checked for AVX-512F.
            peaks.push((512, rate(16.0, &|| unsafe { chains512(iterations) })));
        }
    }
    peaks
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
    fedsoft_model::subnormals::flush_on_this_thread();
    fedsoft_model::subnormals::init_global_pool();
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
    let products = exp
        .training_flops_per_sample()
        .zip(cfg.data.samples_per_client)
        .map(|(per_sample, samples)| per_sample * (samples * cfg.clients.per_round * cfg.training.local_epochs) as f64);
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
    if let Some(flops) = products {
        let per_second = flops / (totals[0] / n);
        let cores = exp.workers().threads().min(cfg.clients.per_round);
        println!(
            "training products: {:.1} GFLOP per round, {:.1} GFLOP/s on {cores} core(s)",
            flops / 1e9,
            per_second / 1e9
        );
        for (bits, peak) in fma_peaks_per_core() {
            println!(
                "  = {:.0} % of the {bits}-bit FMA peak ({:.1} GFLOP/s per core, measured now)",
                100.0 * per_second / (peak * cores as f64),
                peak / 1e9
            );
        }
    }
}
