//! `fedsoft reproduce FIGURE`: a CPU-sized figure of the paper run once per seed, its claims judged, and its
//! section of the results page (`docs/results.md`) rewritten with the table, the verdicts and the figure.
//!
//! Runs go to `<out>/<figure>/<variant>/seed-<s>`; a finished run is reused and an interrupted one resumed, so
//! the command can be stopped and started again, and `--seeds` raised later without repeating work.

use crate::report_cmd::register_font;
use crate::run_cmd::execute;
use anyhow::{Context, Result, bail};
use fedsoft_data::assets;
use fedsoft_engine::ExperimentConfig;
use fedsoft_report::claims::{Claim, FigureSection, Metric, Relation, Variant, section};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args)]
pub struct ReproduceArgs {
    /// Which figure: fig3, fig3c, fig4, fig5-6 or fig7.
    pub figure: String,
    /// Seeds to run each variant with (1, 2, ...); at least 3 for a verdict worth reading.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub seeds: u64,
    /// Where the runs go.
    #[arg(long, default_value = "runs/reproduce")]
    pub out: PathBuf,
    /// The results page whose section for this figure is (re)written; its figure goes to `<page dir>/results/`.
    #[arg(long, default_value = "docs/results.md")]
    pub page: PathBuf,
    /// Asset cache (default: $FEDSOFT_CACHE or .cache/fedsoft).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Extra override for every run, e.g. --set rounds.total=5 for a quick look (repeatable; recorded in the
    /// page's command line).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
}

/// One CPU figure: a preset, its variants as overrides, and the paper's claims about them.
struct Figure {
    id: &'static str,
    title: &'static str,
    config: &'static str,
    notes: &'static str,
    variants: Vec<(&'static str, Vec<String>)>,
    claims: Vec<Claim>,
}

fn claim(text: &str, metric: Metric, a: &str, relation: Relation, b: &str) -> Claim {
    Claim { text: text.into(), metric, a: a.into(), b: b.into(), relation }
}

fn set(pairs: &[(&str, &str)]) -> Vec<String> {
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// Margin within which two accuracies count as "not worse" / "unchanged": half a percentage point.
const ACCURACY_MARGIN: f64 = 0.005;

fn figures() -> Vec<Figure> {
    use Metric::*;
    use Relation::*;
    let methods = |names: &[&'static str]| -> Vec<(&'static str, Vec<String>)> {
        names.iter().map(|m| (*m, set(&[("method.name", &format!("{m:?}"))]))).collect()
    };
    vec![
        Figure {
            id: "fig3",
            title: "Fig. 3(a)/(b): SOFT against the baselines at one budget",
            config: "configs/cpu-fig3-dinov2.toml",
            notes: "DINOv2 ViT-S/14 on Fashion-MNIST at 56 px, LoRA r = 8 on q, v of blocks 0, 3, 6, 9, drop ratio \
                    0.9 for every method (FedLoDrop at the same budget), 30 rounds, 10 of 100 clients per round.",
            variants: methods(&["soft", "flasc", "rlora", "hetlora", "fedlodrop", "ilora"]),
            claims: vec![
                claim("SOFT ≥ FLASC", FinalAccuracy, "soft", NotWorse { margin: ACCURACY_MARGIN }, "flasc"),
                claim("FLASC > RLoRA", FinalAccuracy, "flasc", Greater, "rlora"),
                claim("RLoRA > HetLoRA", FinalAccuracy, "rlora", Greater, "hetlora"),
                claim("SOFT > FedLoDrop (same budget)", FinalAccuracy, "soft", Greater, "fedlodrop"),
            ],
        },
        Figure {
            id: "fig3c",
            title: "Fig. 3(c): TSFA's rank against OSFA's low and high ranks",
            config: "configs/cpu-fig3c-dinov2.toml",
            notes: "As Fig. 3 but with the online Lyapunov ratio: TSFA at the offline rank r*, OSFA at fixed ranks \
                    1, 4 and 32 under the same controller and latency budget.",
            variants: vec![
                ("tsfa", vec![]),
                ("osfa-r1", set(&[("controller.kind", "\"osfa\""), ("lora.rank", "1")])),
                ("osfa-r4", set(&[("controller.kind", "\"osfa\""), ("lora.rank", "4")])),
                ("osfa-r32", set(&[("controller.kind", "\"osfa\""), ("lora.rank", "32")])),
            ],
            claims: vec![
                claim("TSFA beats OSFA at a low rank", FinalAccuracy, "tsfa", Greater, "osfa-r1"),
                claim("TSFA beats OSFA at a high rank", FinalAccuracy, "tsfa", Greater, "osfa-r32"),
            ],
        },
        Figure {
            id: "fig4",
            title: "Fig. 4: the orthogonality regulariser",
            config: "configs/cpu-fig4-dinov2.toml",
            notes: "ILoRA at r = 8 (no sparsification) with λ = 0.01 and without, 20 rounds; the Gram matrices are \
                    those of the final global adapter's first module.",
            variants: vec![("with", vec![]), ("without", set(&[("training.orthogonality", "0")]))],
            claims: vec![
                claim("BᵀB and AAᵀ nearer diagonal", OffDiagonal, "with", Less, "without"),
                claim(
                    "accuracy unchanged",
                    FinalAccuracy,
                    "with",
                    Similar { margin: 2.0 * ACCURACY_MARGIN },
                    "without",
                ),
            ],
        },
        Figure {
            id: "fig5-6",
            title: "Figs. 5 and 6: covariance and accuracy as partitions get more IID",
            config: "configs/cpu-fig5-6-dinov2-shards.toml",
            notes: "ILoRA at r = 8 under label-sorted shards, m shards per client (more shards, more IID), 20 rounds.",
            variants: [("m1", "1"), ("m2", "2"), ("m4", "4"), ("m8", "8")]
                .into_iter()
                .map(|(label, m)| (label, set(&[("partition.shards_per_client", m)])))
                .collect(),
            claims: vec![
                claim("covariance falls with more shards", MeanCovariance, "m8", Less, "m1"),
                claim("accuracy rises with more shards", FinalAccuracy, "m8", Greater, "m1"),
            ],
        },
        Figure {
            id: "fig7",
            title: "Fig. 7: the text task",
            config: "configs/cpu-fig7-minilm-brown.toml",
            notes: "MiniLM-L6 (mean pooling) on Brown corpus genre groups, LoRA r = 8 on q, v of all 6 layers, drop \
                    ratio 0.9, 30 rounds.",
            variants: methods(&["soft", "flasc", "rlora", "hetlora"]),
            claims: vec![
                claim("SOFT ≥ FLASC", FinalAccuracy, "soft", NotWorse { margin: ACCURACY_MARGIN }, "flasc"),
                claim("FLASC > RLoRA", FinalAccuracy, "flasc", Greater, "rlora"),
                claim("SOFT > HetLoRA", FinalAccuracy, "soft", Greater, "hetlora"),
            ],
        },
    ]
}

fn finished(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("summary.json"))
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .is_some_and(|v| v["completed"] == serde_json::Value::Bool(true))
}

pub fn run(args: &ReproduceArgs) -> Result<()> {
    let all = figures();
    let Some(fig) = all.iter().find(|f| f.id == args.figure) else {
        let ids: Vec<&str> = all.iter().map(|f| f.id).collect();
        bail!("unknown figure {:?}; expected one of {}", args.figure, ids.join(", "));
    };
    let cache = args.cache.clone().unwrap_or_else(assets::default_cache);
    let started = Instant::now();
    let mut variants = Vec::new();
    for (label, overrides) in &fig.variants {
        let mut dirs = Vec::new();
        for seed in 1..=args.seeds {
            let mut o = overrides.clone();
            o.extend(args.overrides.iter().cloned());
            o.push(format!("seed={seed}"));
            let cfg = ExperimentConfig::load(Path::new(fig.config), &o)?;
            let dir = args.out.join(fig.id).join(label).join(format!("seed-{seed}"));
            if !finished(&dir) {
                let resume = dir.join(fedsoft_engine::checkpoint::CHECKPOINT).is_file();
                if dir.exists() && !resume {
                    // Started but never checkpointed: nothing worth keeping.
                    std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
                }
                execute(&cfg, &dir, resume, &cache, &format!("{} {label} seed {seed}", fig.id))?;
            }
            dirs.push(dir);
        }
        let runs = fedsoft_report::load_runs(&dirs)?;
        variants.push(Variant { label: label.to_string(), runs });
    }
    register_font(&cache)?;
    let image_dir = args.page.parent().unwrap_or(Path::new(".")).join("results");
    let extra: String = args.overrides.iter().map(|o| format!(" --set '{o}'")).collect();
    let commands = vec![format!("fedsoft reproduce {} --seeds {}{extra}", fig.id, args.seeds)];
    let sec = FigureSection {
        id: fig.id.into(),
        title: fig.title.into(),
        commands,
        notes: format!("{} Preset: `{}`; seeds 1..{}.", fig.notes, fig.config, args.seeds),
    };
    let (md, png) = section(&sec, &variants, &fig.claims, &image_dir, &format!("results/{}.png", fig.id))?;
    write_section(&args.page, fig.id, &md)?;
    println!(
        "{}: section written to {} (figure {}), {:.1} min this invocation",
        fig.id,
        args.page.display(),
        png.display(),
        started.elapsed().as_secs_f64() / 60.0
    );
    Ok(())
}

const PAGE_HEADER: &str = "# Which of the paper's claims hold at CPU scale\n\n\
Each section below is written by `fedsoft reproduce FIGURE --seeds N` from its own runs (the CPU-sized presets \
in `configs/cpu-*.toml` on the packaged assets), and rewritten whole when the command runs again. A claim \
**holds** when the comparison goes the claimed way for every seed, **does not hold** when it goes the other \
way for every seed, and is **inconclusive** otherwise; seeds pair the runs (same data split, clients and \
channels for every variant of one seed). Wall times are those of the machine that wrote the section.\n";

/// Replaces the figure's section (between its markers) in the page, or appends it; atomic.
fn write_section(page: &Path, id: &str, md: &str) -> Result<()> {
    let (open, close) = (format!("<!-- reproduce:{id} -->"), format!("<!-- /reproduce:{id} -->"));
    let old = match std::fs::read_to_string(page) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => PAGE_HEADER.to_string(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", page.display())),
    };
    let block = format!("{open}\n{}{close}\n", md.trim_end().to_string() + "\n");
    let new = match (old.find(&open), old.find(&close)) {
        (Some(a), Some(b)) if b > a => {
            let after = old[b + close.len()..].trim_start_matches('\n');
            let gap = if after.is_empty() { "" } else { "\n" };
            format!("{}{block}{gap}{after}", &old[..a])
        }
        _ => format!("{}\n\n{block}", old.trim_end()),
    };
    if let Some(dir) = page.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(fedsoft_engine::checkpoint::write_atomic(page, new.as_bytes())?)
}
