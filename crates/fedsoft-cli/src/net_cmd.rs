//! `fedsoft serve` and `fedsoft join`.

use crate::run_cmd::{load_config, on_round_line};
use anyhow::{Context, Result};
use fedsoft_data::assets;
use fedsoft_engine::engine::RunOptions;
use fedsoft_net::client::{JoinOptions, join};
use fedsoft_net::server::{ServeOptions, serve, tokens_for};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub run: crate::run_cmd::RunArgs,
    /// Address to listen on (overrides serve.listen), e.g. 0.0.0.0:50051 or 127.0.0.1:0.
    #[arg(long)]
    pub listen: Option<String>,
    /// Serve without TLS: allowed on loopback addresses only, for development.
    #[arg(long)]
    pub insecure: bool,
    /// Print client ID's token for this run (from serve.secret_file or the run directory's secret) and exit.
    #[arg(long, value_name = "ID")]
    pub issue_token: Option<u32>,
    /// Seconds to keep answering after the last round so clients learn the run is over.
    #[arg(long, default_value_t = 5.0)]
    pub linger: f64,
}

#[derive(clap::Args)]
pub struct JoinArgs {
    /// The server: http://HOST:PORT (development server started with --insecure) or https://HOST:PORT.
    #[arg(long)]
    pub server: String,
    /// This client's id (0 .. clients.total - 1).
    #[arg(long)]
    pub client_id: u32,
    /// This client's token (from `fedsoft serve --issue-token ID`).
    #[arg(long, conflicts_with = "token_file")]
    pub token: Option<String>,
    /// File holding the token.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// PEM of the CA that signed the server's certificate (https).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Name the server's certificate is issued to, when it differs from the URL's host.
    #[arg(long)]
    pub domain: Option<String>,
    /// Where this client keeps its error-feedback memory (default .fedsoft-client/<ID>).
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// This machine's copy of the data set (sets data.path); this client trains on its own share of it.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// This machine's copy of the pre-trained checkpoint (sets model.path).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Override a local field of the server's config: model.path, data.path, training.device, training.threads
    /// or training.execution, e.g. --set training.device="cuda:0" (repeatable); any other field is refused.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Asset cache (default: $FEDSOFT_CACHE or .cache/fedsoft).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Give up after this many seconds without reaching the server, or of being refused because another live
    /// process is this client id (it also bounds each call's deadline).
    #[arg(long, default_value_t = 600.0)]
    pub patience: f64,
    /// Deadline in seconds of each call to the server; a call past it counts as no contact.
    #[arg(long, default_value_t = 60.0)]
    pub rpc_timeout: f64,
}

fn init_logging() {
    let _ = tracing_subscriber::fmt().with_writer(std::io::stderr).with_target(false).try_init();
}

pub fn run_serve(args: &ServeArgs) -> Result<()> {
    let cfg = load_config(&args.run)?;
    let out = args.run.out.clone().context("fedsoft serve needs --out DIR: the run directory (checkpoints, secret)")?;
    if let Some(id) = args.issue_token {
        anyhow::ensure!(
            (id as usize) < cfg.clients.total,
            "client {id} is not one of the {} clients",
            cfg.clients.total
        );
        println!("{}", tokens_for(&cfg, &out)?.token(id));
        return Ok(());
    }
    init_logging();
    let cache = args.run.cache.clone().unwrap_or_else(assets::default_cache);
    let opts = ServeOptions {
        run: RunOptions { out_dir: out.clone(), resume: args.run.resume, cache, stop_after: None },
        listen: args.listen.clone(),
        insecure: args.insecure,
        linger_s: args.linger,
    };
    let summary = serve(&cfg, &opts, on_round_line)?;
    println!(
        "{} rounds, final accuracy {}, avg delay {:.3} s; results in {}",
        summary.rounds,
        summary.final_test_accuracy.map_or("not evaluated".into(), |a| format!("{a:.4}")),
        summary.avg_delay_s,
        out.display()
    );
    Ok(())
}

/// `--data` / `--model` as overrides (TOML strings), before any `--set`.
fn local_overrides(args: &JoinArgs) -> Vec<String> {
    let quoted = |p: &PathBuf| format!("{:?}", p.display().to_string());
    let mut o = Vec::new();
    if let Some(d) = &args.data {
        o.push(format!("data.path={}", quoted(d)));
    }
    if let Some(m) = &args.model {
        o.push(format!("model.path={}", quoted(m)));
    }
    o.extend(args.overrides.iter().cloned());
    o
}

pub fn run_join(args: &JoinArgs) -> Result<()> {
    init_logging();
    let token = match (&args.token, &args.token_file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => std::fs::read_to_string(f).with_context(|| format!("{}", f.display()))?.trim().to_string(),
        (None, None) => anyhow::bail!("give --token or --token-file (from `fedsoft serve --issue-token ID`)"),
    };
    let opts = JoinOptions {
        server: args.server.clone(),
        client: args.client_id,
        token,
        ca: args.ca.clone(),
        domain: args.domain.clone(),
        state_dir: args
            .state
            .clone()
            .unwrap_or_else(|| PathBuf::from(".fedsoft-client").join(args.client_id.to_string())),
        overrides: local_overrides(args),
        cache: args.cache.clone().unwrap_or_else(assets::default_cache),
        patience_s: args.patience,
        rpc_timeout_s: args.rpc_timeout,
    };
    let s = join(&opts)?;
    println!(
        "client {}: worked {} rounds ({} uploads refused); the run is finished",
        args.client_id, s.rounds_worked, s.rejected
    );
    Ok(())
}
