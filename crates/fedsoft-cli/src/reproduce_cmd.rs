//! `fedsoft reproduce FIGURE...`: a CPU-sized figure of the paper run once per seed and variant, each run
//! summarised into `<page dir>/results/<figure>.json`, and the results page rewritten whole from those
//! records (`fedsoft_report::page`). `fedsoft reproduce --check` re-derives the page and fails on any
//! difference.
//!
//! Runs go to `<out>/<figure>/<variant>/seed-<s>`. A finished run is reused only when the digest of its
//! resolved config equals the one asked for; an interrupted one under the same config is resumed; anything
//! else in its place is run again, saying why. Each finished run is also kept in
//! `<page dir>/results/progress/<figure>.json` until its figure is complete, and a figure's complete record
//! keeps its runs, so the stored records alone (no run directories) spare a fresh checkout the runs already
//! made: the command can be stopped, started again elsewhere, and `--seeds` raised later without repeating
//! work.

use crate::report_cmd::register_font;
use crate::run_cmd::execute;
use anyhow::{Context, Result, bail};
use fedsoft_data::assets;
use fedsoft_engine::ExperimentConfig;
use fedsoft_engine::config::ControllerKind;
use fedsoft_report::page;
use fedsoft_report::record::{FigureRecord, Progress, RunRecord, SCHEMA, Setting, VariantRecord, VariantSetting};
use fedsoft_report::registry::{self, FigureSpec, VariantSpec};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args)]
pub struct ReproduceArgs {
    /// Figures to run: fig3-power (the sweep that chooses fig3's setting), fig3, fig3-harsh, fig3c, fig4, fig5-6,
    /// fig7, or `all`.
    pub figures: Vec<String>,
    /// Paired seeds per variant (1, 2, ...); verdicts need at least 5. Default: as many as the figure's stored
    /// runs reach (so the tracked page is reproduced as it stands), or 5 for a figure with none. Fewer than a
    /// stored run of the same config reaches is refused: it would drop that finished run.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub seeds: Option<u64>,
    /// Where the runs go.
    #[arg(long, default_value = "runs/reproduce")]
    pub out: PathBuf,
    /// The results page to write (default: <out>/results.md). The tracked page is docs/results.md; its
    /// records and figures live in the `results/` folder beside it.
    #[arg(long)]
    pub page: Option<PathBuf>,
    /// Re-derive the page and its figures from the stored records and fail, naming the line, if they differ.
    /// Runs nothing.
    #[arg(long)]
    pub check: bool,
    /// Asset cache (default: $FEDSOFT_CACHE or .cache/fedsoft).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Extra override for every run, e.g. --set rounds.total=5 for a quick look (repeatable; recorded on
    /// the page).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
}

/// Seeds for a figure with no stored record: the fewest on which a claim is judged.
const DEFAULT_SEEDS: u64 = fedsoft_report::stats::MIN_SEEDS as u64;

fn finished(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("summary.json"))
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .is_some_and(|v| v["completed"] == serde_json::Value::Bool(true))
}

/// The digest of the config a run directory was started with, if it holds a readable one.
fn stored_digest(dir: &Path) -> Option<String> {
    ExperimentConfig::load(&dir.join("config.toml"), &[]).ok().map(|c| c.digest())
}

/// `(1 − ρ) r` must be a whole number of rank components where the figure runs FedLoDrop.
fn check_whole_components(fig: &FigureSpec, label: &str, cfg: &ExperimentConfig) -> Result<()> {
    if !fig.whole_components || cfg.controller.kind != ControllerKind::Fixed {
        return Ok(());
    }
    let (rho, rank) = (cfg.controller.rho, cfg.lora.rank);
    let kept = (1.0 - rho) * rank as f64;
    if (kept - kept.round()).abs() > 1e-9 || kept.round() < 1.0 {
        bail!(
            "{} ({label}): controller.rho = {rho} at lora.rank = {rank} keeps (1 - rho) r = {kept:.3} rank \
             components; FedLoDrop keeps whole components, so this figure needs a whole number of at least 1 \
             (at r = {rank}: rho = {})",
            fig.id,
            whole_ratios(rank)
        );
    }
    Ok(())
}

fn whole_ratios(rank: usize) -> String {
    (1..rank).take(3).map(|m| format!("{}", 1.0 - m as f64 / rank as f64)).collect::<Vec<_>>().join(", ")
}

/// Finished runs under `<out>/<figure>/<variant>/seed-*` by config digest (a figure's variant and a power
/// sweep's can be the same run). Built on first need by reading every run's config once, then kept up to date
/// as runs finish, so looking up a run costs nothing however many there are.
#[derive(Default)]
struct Twins {
    index: Option<HashMap<String, PathBuf>>,
}

impl Twins {
    fn build(out: &Path) -> HashMap<String, PathBuf> {
        let dirs = |p: &Path| -> Vec<PathBuf> {
            let mut v: Vec<PathBuf> = std::fs::read_dir(p)
                .map(|e| e.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_dir()).collect())
                .unwrap_or_default();
            v.sort();
            v
        };
        let mut index = HashMap::new();
        for dir in dirs(out).iter().flat_map(|f| dirs(f)).flat_map(|v| dirs(&v)) {
            if finished(&dir)
                && let Some(d) = stored_digest(&dir)
            {
                index.entry(d).or_insert(dir);
            }
        }
        index
    }

    fn find(&mut self, out: &Path, digest: &str, except: &Path) -> Option<PathBuf> {
        let index = self.index.get_or_insert_with(|| Self::build(out));
        index.get(digest).filter(|d| *d != except && finished(d)).cloned()
    }

    fn add(&mut self, digest: &str, dir: &Path) {
        if let Some(index) = &mut self.index {
            index.entry(digest.into()).or_insert_with(|| dir.to_path_buf());
        }
    }
}

/// Copies a finished run directory (small: the frozen model is not in it) to `to`, through a temporary name so
/// an interrupted copy is never taken for a run.
fn copy_run(from: &Path, to: &Path) -> Result<()> {
    fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(to)?;
        for e in std::fs::read_dir(from)? {
            let e = e?;
            let target = to.join(e.file_name());
            if e.file_type()?.is_dir() {
                copy_tree(&e.path(), &target)?;
            } else {
                std::fs::copy(e.path(), &target)?;
            }
        }
        Ok(())
    }
    let tmp = to.with_extension("copying");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("clearing {}", tmp.display()))?;
    }
    copy_tree(from, &tmp).with_context(|| format!("copying {} to {}", from.display(), tmp.display()))?;
    std::fs::rename(&tmp, to).with_context(|| format!("renaming {} to {}", tmp.display(), to.display()))
}

/// Runs (or reuses, or resumes) one run; says why when it throws an old directory away.
fn ensure_run(
    cfg: &ExperimentConfig,
    digest: &str,
    dir: &Path,
    out: &Path,
    twins: &mut Twins,
    cache: &Path,
    label: &str,
) -> Result<bool> {
    let mut resume = false;
    if dir.exists() {
        match stored_digest(dir) {
            Some(d) if d == digest && finished(dir) => return Ok(false),
            Some(d) if d == digest => resume = dir.join(fedsoft_engine::checkpoint::CHECKPOINT).is_file(),
            Some(d) => eprintln!(
                "{label}: {} was run under another config (digest {} where {} is asked for); running it again",
                dir.display(),
                &d[..12],
                &digest[..12]
            ),
            None => eprintln!("{label}: {} holds no readable config.toml; running it again", dir.display()),
        }
        if !resume {
            fedsoft_engine::rundir::discard(dir).with_context(|| label.to_string())?;
        }
    }
    if let Some(from) = if resume { None } else { twins.find(out, digest, dir) } {
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        copy_run(&from, dir)?;
        eprintln!("{label}: the same config was already run in {}; copied", from.display());
        return Ok(false);
    }
    execute(cfg, dir, resume, cache, label)?;
    twins.add(digest, dir);
    Ok(true)
}

fn word<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(serde_json::Value::Object(m)) => {
            let kind = m.get("kind").and_then(|k| k.as_str()).unwrap_or("").to_string();
            let rest: Vec<String> = m.iter().filter(|(k, _)| *k != "kind").map(|(k, v)| format!("{k} = {v}")).collect();
            if rest.is_empty() { kind } else { format!("{kind} ({})", rest.join(", ")) }
        }
        Ok(other) => other.to_string(),
        Err(_) => "?".into(),
    }
}

fn setting(cfg: &ExperimentConfig) -> Setting {
    let text = cfg.data.dataset.is_text();
    Setting {
        arch: word(&cfg.model.arch),
        dataset: word(&cfg.data.dataset),
        image_size: (!text).then_some(cfg.data.image_size),
        max_len: text.then_some(cfg.data.max_len),
        targets: cfg.lora.targets.iter().map(word).collect(),
        layers: cfg.lora.layers.clone().unwrap_or_default(),
        clients: cfg.clients.total,
        per_round: cfg.clients.per_round,
        samples_per_client: cfg.data.samples_per_client,
        test_samples: cfg.data.test_samples,
        partition: word(&cfg.partition),
        rounds: cfg.rounds.total,
        eval_every: cfg.rounds.eval_every,
        local_epochs: cfg.training.local_epochs,
        batch_size: cfg.training.batch_size,
        lr: cfg.training.lr,
        bandwidth_hz: cfg.wireless.bandwidth_hz,
        mean_snr_db: cfg.wireless.channel.mean_snr_db.map_or("per-distance".into(), |s| s.to_string()),
    }
}

fn variant_setting(cfg: &ExperimentConfig) -> VariantSetting {
    VariantSetting {
        method: cfg.method.name.as_str().into(),
        controller: cfg.controller.kind.as_str().into(),
        rank: cfg.lora.rank,
        rho: (cfg.controller.kind == ControllerKind::Fixed).then_some(cfg.controller.rho),
        orthogonality: cfg.orthogonality(),
    }
}

/// One variant's config at one seed, validated.
fn config_at(fig: &FigureSpec, v: &VariantSpec, seed: u64, extra: &[String]) -> Result<ExperimentConfig> {
    let mut o: Vec<String> = fig.base.iter().chain(v.overrides).map(|s| s.to_string()).collect();
    o.extend(extra.iter().cloned());
    o.push(format!("seed={seed}"));
    let cfg =
        ExperimentConfig::load(Path::new(fig.preset), &o).with_context(|| format!("{} variant {}", fig.id, v.label))?;
    cfg.validate_run().with_context(|| format!("{} variant {}", fig.id, v.label))?;
    check_whole_components(fig, v.label, &cfg)?;
    Ok(cfg)
}

/// Every variant's config at every seed, all validated before anything trains.
fn configs(fig: &FigureSpec, seeds: u64, extra: &[String]) -> Result<Vec<Vec<ExperimentConfig>>> {
    fig.variants.iter().map(|v| (1..=seeds).map(|seed| config_at(fig, v, seed, extra)).collect()).collect()
}

/// How many seeds `fig` runs. Asked: that many, unless a finished run at a higher seed is still this config's
/// (in the figure's record or its progress file), which is refused: the record is rewritten with the seeds asked
/// for and the progress file removed, so that run (hours of a figure, on two cores) would be lost. Not asked: up
/// to the highest such run, and at least as many as the record holds (5 for a figure with neither).
fn seeds_for(
    fig: &FigureSpec,
    asked: Option<u64>,
    earlier: Option<&FigureRecord>,
    progress: &Progress,
    results: &Path,
    extra: &[String],
) -> Result<u64> {
    let (record_path, progress_path) = (FigureRecord::path(results, fig.id), Progress::path(results, fig.id));
    let in_record = earlier.into_iter().flat_map(|r| {
        r.variants.iter().flat_map(|v| v.runs.iter().map(|r| (v.label.as_str(), r, record_path.as_path())))
    });
    let in_progress = progress.runs.iter().map(|s| (s.variant.as_str(), &s.run, progress_path.as_path()));
    // (seed, the file holding it) of every stored run that is still this config's.
    let mut valid: Vec<(u64, &Path)> = Vec::new();
    for (label, run, file) in in_record.chain(in_progress) {
        let Some(v) = fig.variants.iter().find(|v| v.label == label) else { continue };
        if !valid.contains(&(run.seed, file))
            && config_at(fig, v, run.seed, extra).is_ok_and(|c| c.digest() == run.config_sha256)
        {
            valid.push((run.seed, file));
        }
    }
    let highest = valid.iter().map(|&(seed, _)| seed).max().unwrap_or(0);
    let Some(asked) = asked else {
        let recorded = earlier.map_or(0, |r| r.seeds.len() as u64);
        return Ok(match highest.max(recorded) {
            0 => DEFAULT_SEEDS,
            n => n,
        });
    };
    let mut dropped: Vec<u64> = valid.iter().map(|&(seed, _)| seed).filter(|&s| s > asked).collect();
    dropped.sort_unstable();
    dropped.dedup();
    if let (Some(&first), Some(&last)) = (dropped.first(), dropped.last()) {
        let which = match dropped.len() {
            1 => format!("seed {first}"),
            n if n as u64 == last - first + 1 => format!("seeds {first}-{last}"),
            _ => format!("seeds {}", dropped.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")),
        };
        let mut files: Vec<String> =
            valid.iter().filter(|&&(s, _)| s > asked).map(|(_, f)| f.display().to_string()).collect();
        files.sort();
        files.dedup();
        bail!(
            "{}: {} holds finished runs of {which} under this same config, and --seeds {asked} would drop them from \
             the record and the page; give --seeds {highest} or leave it out (stored runs are reused, nothing runs \
             again), or write another page with --page",
            fig.id,
            files.join(" and ")
        );
    }
    Ok(asked)
}

/// The runs of `fig` kept in its complete record from an earlier `reproduce`, if it has one (a damaged one is
/// said and not reused: it is rewritten when this figure finishes).
fn earlier_record(results: &Path, fig: &FigureSpec) -> Option<FigureRecord> {
    let path = FigureRecord::path(results, fig.id);
    if !path.exists() {
        return None;
    }
    match FigureRecord::read(&path) {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("{}: {e}; its runs are not reused", fig.id);
            None
        }
    }
}

/// One figure to reproduce, resolved before anything runs.
struct Planned {
    fig: FigureSpec,
    /// Its complete record from an earlier `reproduce`, whose runs are reused by seed and config digest.
    earlier: Option<FigureRecord>,
    /// Its runs finished since (`results/progress/<figure>.json`), reused the same way.
    progress: Progress,
    /// Per variant, per seed (1, 2, ...).
    cfgs: Vec<Vec<ExperimentConfig>>,
}

fn reproduce(plan: &Planned, args: &ReproduceArgs, cache: &Path, results: &Path, twins: &mut Twins) -> Result<()> {
    let Planned { fig, earlier, progress, cfgs } = plan;
    let started = Instant::now();
    let (mut ran, mut reused, mut stored) = (0, 0, 0);
    let progress_path = Progress::path(results, fig.id);
    let mut progress = progress.clone();
    let mut variants = Vec::new();
    for (v, per_seed) in fig.variants.iter().zip(cfgs) {
        let mut runs = Vec::new();
        for (cfg, seed) in per_seed.iter().zip(1..) {
            let dir = args.out.join(fig.id).join(v.label).join(format!("seed-{seed}"));
            let label = format!("{} {} seed {seed}", fig.id, v.label);
            let digest = cfg.digest();
            let kept = progress.find(v.label, seed, &digest).cloned().or_else(|| {
                earlier
                    .as_ref()
                    .and_then(|r| r.variant(v.label))
                    .and_then(|r| r.runs.iter().find(|r| r.seed == seed && r.config_sha256 == digest))
                    .cloned()
            });
            if let Some(run) = kept {
                stored += 1;
                runs.push(run);
                continue;
            }
            if ensure_run(cfg, &digest, &dir, &args.out, twins, cache, &label)? {
                ran += 1;
            } else {
                reused += 1;
            }
            let run = fedsoft_report::load_runs(std::slice::from_ref(&dir))?.remove(0);
            let record = RunRecord::from_run(&run, seed, digest)?;
            progress.keep(v.label, record.clone());
            progress.write(&progress_path)?;
            runs.push(record);
        }
        variants.push(VariantRecord {
            label: v.label.into(),
            overrides: v.overrides.iter().map(|s| s.to_string()).collect(),
            setting: variant_setting(&per_seed[0]),
            run_setting: fig.sweep.is_some().then(|| setting(&per_seed[0])),
            runs,
        });
    }
    let record = FigureRecord {
        schema: SCHEMA,
        figure: fig.id.into(),
        preset: fig.preset.into(),
        overrides: args.overrides.clone(),
        seeds: (1..=cfgs[0].len() as u64).collect(),
        setting: setting(&cfgs[0][0]),
        variants,
    };
    let path = FigureRecord::path(results, fig.id);
    record.write(&path)?;
    if progress_path.exists() {
        std::fs::remove_file(&progress_path).with_context(|| format!("removing {}", progress_path.display()))?;
        if let Some(dir) = progress_path.parent() {
            // Only when empty: another figure may be part-way.
            let _ = std::fs::remove_dir(dir);
        }
    }
    println!(
        "{}: {ran} runs made, {reused} reused from run directories, {stored} from stored records; record in {} \
         ({:.1} min)",
        fig.id,
        path.display(),
        started.elapsed().as_secs_f64() / 60.0
    );
    Ok(())
}

/// Checks that every stored run was made under the config its figure's preset, variant and overrides resolve to
/// today, and returns how many runs there are. A page whose runs were made under an older config describes a
/// setting the presets no longer run, and `fedsoft reproduce` would make all of them again (hours each figure);
/// the digests alone show it, with no run.
fn check_runs_match_presets(results: &Path) -> Result<usize> {
    let mut total = 0;
    let mut stale = Vec::new();
    for rec in fedsoft_report::record::read_all(results)? {
        let fig = registry::figure(&rec.figure).context("read_all keeps the registry's figures only")?;
        let path = FigureRecord::path(results, fig.id);
        let (mut changed, mut first) = (0, None);
        for v in &fig.variants {
            let Some(stored) = rec.variant(v.label) else {
                bail!(
                    "{}: holds no runs of variant {:?}; run `{}` again",
                    path.display(),
                    v.label,
                    page::command(&rec)
                );
            };
            for run in &stored.runs {
                total += 1;
                let now = config_at(&fig, v, run.seed, &rec.overrides)?.digest();
                if now != run.config_sha256 {
                    changed += 1;
                    first.get_or_insert_with(|| {
                        let stored = run.config_sha256.get(..12).unwrap_or(&run.config_sha256);
                        format!(
                            "{} seed {}, stored digest {stored}, the preset's now {}",
                            v.label,
                            run.seed,
                            &now[..12]
                        )
                    });
                }
            }
        }
        if let Some(first) = first {
            let runs = if changed == 1 { "run" } else { "runs" };
            stale.push(format!("{}: {changed} {runs} (first: {first}); `{}`", path.display(), page::command(&rec)));
        }
    }
    if !stale.is_empty() {
        bail!(
            "stored runs made under another config than their preset resolves to now (a preset, a figure's variants \
             or a config default changed since they ran), so the page describes a setting the presets no longer \
             run; run each figure again, or restore the config:\n  {}",
            stale.join("\n  ")
        );
    }
    Ok(total)
}

pub fn run(args: &ReproduceArgs) -> Result<()> {
    let cache = args.cache.clone().unwrap_or_else(assets::default_cache);
    let page_path = args.page.clone().unwrap_or_else(|| args.out.join("results.md"));
    if args.check {
        if !args.figures.is_empty() {
            bail!("--check runs nothing: give it no figure (it checks every section of {})", page_path.display());
        }
        register_font(&cache)?;
        page::check(&page_path)?;
        let runs = check_runs_match_presets(&page::results_dir(&page_path))?;
        println!(
            "{}: every line and figure is what its stored runs give, and all {runs} stored runs are what the \
             presets run now",
            page_path.display()
        );
        return Ok(());
    }
    // Before any run: hours later is no time to find that --page names someone's file.
    page::claim(&page_path)?;
    let all = registry::figures();
    let ids: Vec<&str> = all.iter().map(|f| f.id).collect();
    if args.figures.is_empty() {
        bail!("name a figure to reproduce ({}, or all), or give --check", ids.join(", "));
    }
    let mut chosen = Vec::new();
    for name in &args.figures {
        if name == "all" {
            chosen.extend(all.iter().cloned());
        } else {
            let Some(f) = all.iter().find(|f| f.id == name) else {
                bail!("unknown figure {name:?}; expected one of {}, or all", ids.join(", "));
            };
            chosen.push(f.clone());
        }
    }
    // Every figure's seeds and configs are resolved and checked before the first run.
    let results = page::results_dir(&page_path);
    let mut plans = Vec::new();
    for fig in chosen {
        let earlier = earlier_record(&results, &fig);
        let progress = Progress::read(&Progress::path(&results, fig.id), fig.id)?;
        let seeds = seeds_for(&fig, args.seeds, earlier.as_ref(), &progress, &results, &args.overrides)?;
        let cfgs = configs(&fig, seeds, &args.overrides)?;
        plans.push(Planned { fig, earlier, progress, cfgs });
    }
    let mut twins = Twins::default();
    for plan in &plans {
        reproduce(plan, args, &cache, &results, &mut twins)?;
    }
    register_font(&cache)?;
    page::write(&page_path)?;
    println!("page written to {} (figures and records in {})", page_path.display(), results.display());
    Ok(())
}
