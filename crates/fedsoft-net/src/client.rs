//! `fedsoft join`: a client process. It joins, builds the server's experiment locally (model, its own share of
//! the data, the sparsifier), then polls for work: each task is the engine's own client step on the
//! broadcast model, with the error memory kept on this machine. Lost connections are retried with backoff
//! until the server is back or the client's patience runs out.

use crate::memory::MemoryStore;
use crate::proto::federation_client::FederationClient;
use crate::proto::{JoinRequest, PollRequest, UploadRequest, poll_reply};
use crate::server::message_limit as server_message_limit;
use crate::wire::{f32_bytes, f32s, factors};
use crate::{AUTH_KEY, CLIENT_KEY, NetError, SESSION_KEY};
use fedsoft_core::budget::DropRatio;
use fedsoft_engine::ExperimentConfig;
use fedsoft_engine::Head;
use fedsoft_engine::engine::{Experiment, RoundTask};
use fedsoft_engine::handoff::train_one;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status};

#[derive(Debug, Clone)]
pub struct JoinOptions {
    /// `http://host:port` (development, no TLS) or `https://host:port`.
    pub server: String,
    pub client: u32,
    pub token: String,
    /// PEM of the CA that signed the server's certificate (`https` only).
    pub ca: Option<PathBuf>,
    /// Server name to check the certificate against, when it differs from the URL's host.
    pub domain: Option<String>,
    /// Where this client keeps what it carries between rounds (error memory, kept optimiser state).
    pub state_dir: PathBuf,
    /// `--set` overrides applied to the server's config (local paths: `model.path`, `data.path`, ...).
    pub overrides: Vec<String>,
    pub cache: PathBuf,
    /// Give up after this many seconds without reaching the server.
    pub patience_s: f64,
    /// Deadline of each call to the server (a poll waits at most 10 s for work, so well above that).
    pub rpc_timeout_s: f64,
}

/// What a client did.
#[derive(Debug, Clone, Default)]
pub struct JoinSummary {
    pub rounds_worked: u64,
    pub rejected: u64,
}

type Client = FederationClient<InterceptedService<Channel, Auth>>;

#[derive(Clone)]
struct Auth {
    client: MetadataValue<tonic::metadata::Ascii>,
    bearer: MetadataValue<tonic::metadata::Ascii>,
    /// The session of this process's latest join (none before it).
    session: Arc<Mutex<Option<u64>>>,
}

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        req.metadata_mut().insert(CLIENT_KEY, self.client.clone());
        req.metadata_mut().insert(AUTH_KEY, self.bearer.clone());
        if let Some(session) = *self.session.lock().expect("session") {
            req.metadata_mut().insert(SESSION_KEY, MetadataValue::from(session));
        }
        Ok(req)
    }
}

/// The server's address with TLS and deadlines: everything about the connection that no retry can change,
/// so a mistake here (no scheme, an unreadable CA file) is reported at once.
fn endpoint(opts: &JoinOptions) -> Result<Endpoint, NetError> {
    if !(opts.server.starts_with("http://") || opts.server.starts_with("https://")) {
        return Err(NetError::setup(
            "--server",
            format!(
                "{:?} needs a scheme: https://host:port (or http:// for a loopback development server)",
                opts.server
            ),
        ));
    }
    if !(opts.rpc_timeout_s.is_finite() && opts.rpc_timeout_s > 0.0) {
        return Err(NetError::setup(
            "--rpc-timeout",
            format!("must be a positive number of seconds, got {}", opts.rpc_timeout_s),
        ));
    }
    if !(opts.patience_s.is_finite() && opts.patience_s > 0.0) {
        return Err(NetError::setup(
            "--patience",
            format!("must be a positive number of seconds, got {}", opts.patience_s),
        ));
    }
    let mut endpoint = Endpoint::from_shared(opts.server.clone())
        .map_err(|e| NetError::setup("--server", format!("{}: {e}", opts.server)))?;
    if opts.server.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &opts.ca {
            let pem = std::fs::read(ca).map_err(|e| NetError::io(ca, e))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        if let Some(d) = &opts.domain {
            tls = tls.domain_name(d.clone());
        }
        endpoint = endpoint.tls_config(tls).map_err(|e| NetError::setup("--ca", e))?;
    }
    // No single call may outwait the patience: a silent server is given up on when the patience says so, not
    // after a full RPC deadline longer than it.
    let deadline = opts.rpc_timeout_s.min(opts.patience_s);
    Ok(endpoint.connect_timeout(Duration::from_secs_f64(deadline.min(5.0))).timeout(Duration::from_secs_f64(deadline)))
}

async fn connect(endpoint: &Endpoint, auth: &Auth) -> Result<Client, String> {
    let channel = endpoint.connect().await.map_err(|e| crate::causes(&e))?;
    Ok(FederationClient::with_interceptor(channel, auth.clone()))
}

/// A connection failure no retry can fix: the server's certificate is not one the CA vouches for.
fn certificate_problem(detail: &str) -> bool {
    let d = detail.to_ascii_lowercase();
    d.contains("certificate") || d.contains("unknownissuer") || d.contains("notvalidforname")
}

/// Refusals no retry can fix.
fn fatal(client: u32, s: &Status) -> Option<NetError> {
    matches!(s.code(), Code::Unauthenticated | Code::PermissionDenied | Code::InvalidArgument)
        .then(|| NetError::Refused { client, detail: s.message().to_string() })
}

/// Takes part in the server's run until it is finished.
/// The fields a client may set for itself: where this machine keeps the model and data, and how it computes.
/// Everything else is the server's experiment; a client that changed it (its rank, its method) would send
/// uploads the server cannot use.
pub const LOCAL_FIELDS: [&str; 5] =
    ["model.path", "data.path", "training.device", "training.threads", "training.execution"];

/// Refuses a `--set` that `join` cannot apply, before anything connects.
fn check_local_overrides(overrides: &[String]) -> Result<(), NetError> {
    for o in overrides {
        let key = o.split_once('=').map_or(o.as_str(), |(k, _)| k).trim();
        if !LOCAL_FIELDS.contains(&key) {
            return Err(NetError::setup(
                "--set",
                format!(
                    "{key}: a client may set only {}; the rest of the experiment is the server's",
                    LOCAL_FIELDS.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

pub fn join(opts: &JoinOptions) -> Result<JoinSummary, NetError> {
    check_local_overrides(&opts.overrides)?;
    if opts.server.starts_with("https://") && opts.ca.is_none() {
        return Err(NetError::setup("--ca", "an https server needs the PEM of the CA that signed its certificate"));
    }
    let auth = Auth {
        client: opts.client.to_string().parse().map_err(|_| NetError::setup("--client-id", "not ASCII"))?,
        bearer: format!("Bearer {}", opts.token).parse().map_err(|_| NetError::setup("--token", "not ASCII"))?,
        session: Arc::new(Mutex::new(None)),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| NetError::setup("runtime", e))?;
    let endpoint = endpoint(opts)?;
    let memory = MemoryStore::open(&opts.state_dir, opts.client)?;
    let mut exp: Option<Experiment> = None;
    let mut summary = JoinSummary::default();
    let mut backoff = Duration::from_millis(100);
    let mut last_contact = Instant::now();
    let unreachable = |detail: String, since: Instant| NetError::Unreachable {
        server: opts.server.clone(),
        seconds: since.elapsed().as_secs_f64(),
        patience: opts.patience_s,
        detail,
    };
    // Every failure that a retry may fix (no connection, a call past its deadline, a lost stream) waits with
    // backoff and counts against the patience.
    let mut last_error = String::new();
    // Whether the server holds this process's session; a restarted server does not, and the client joins again.
    let mut joined = false;
    let mut taken_since: Option<Instant> = None;
    'connection: loop {
        if !last_error.is_empty() {
            // The wait never runs past the patience: the last retry comes when it ends, not a backoff later.
            let left = opts.patience_s - last_contact.elapsed().as_secs_f64();
            if left <= 0.0 {
                return Err(unreachable(std::mem::take(&mut last_error), last_contact));
            }
            tracing::info!(error = %last_error, ?backoff, "no answer from the server; retrying");
            std::thread::sleep(backoff.min(Duration::from_secs_f64(left)));
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        let mut rpc = match runtime.block_on(connect(&endpoint, &auth)) {
            Ok(c) => c,
            Err(e) if certificate_problem(&e) => return Err(NetError::setup("--ca", format!("{}: {e}", opts.server))),
            Err(e) => {
                last_error = e;
                continue;
            }
        };
        if !joined {
            let reply = match runtime.block_on(rpc.join(JoinRequest {})) {
                Ok(r) => r.into_inner(),
                Err(s) if s.code() == Code::AlreadyExists => {
                    // Another process is this client, or was until it crashed: its place frees once the server
                    // stops hearing from it, so wait as long as the patience allows, then give up saying why.
                    let since = *taken_since.get_or_insert_with(Instant::now);
                    if since.elapsed().as_secs_f64() > opts.patience_s {
                        return Err(NetError::Refused { client: opts.client, detail: s.message().to_string() });
                    }
                    tracing::warn!(reason = %s.message(), "client id taken; waiting for it to free");
                    std::thread::sleep(Duration::from_secs(1));
                    last_contact = Instant::now();
                    continue 'connection;
                }
                Err(s) => match fatal(opts.client, &s) {
                    Some(e) => return Err(e),
                    None => {
                        last_error = format!("join: {}", s.message());
                        continue 'connection;
                    }
                },
            };
            *auth.session.lock().expect("session") = Some(reply.session);
            joined = true;
            if exp.is_none() {
                let cfg = ExperimentConfig::from_toml(&reply.config_toml, "the server's experiment", &opts.overrides)?;
                tracing::info!(client = opts.client, name = %cfg.name, "joined; preparing the model and data");
                exp = Some(Experiment::prepare(&cfg, &opts.cache)?);
            } else {
                tracing::info!(client = opts.client, "joined again");
            }
        }
        let exp = exp.as_ref().expect("prepared");
        let limit = server_message_limit(exp);
        rpc = rpc.max_decoding_message_size(limit).max_encoding_message_size(limit);
        loop {
            let reply = match runtime.block_on(rpc.poll(PollRequest {})) {
                Ok(r) => r.into_inner(),
                Err(s) if s.code() == Code::FailedPrecondition => {
                    joined = false;
                    last_error = format!("poll: {}", s.message());
                    continue 'connection;
                }
                Err(s) => match fatal(opts.client, &s) {
                    Some(e) => return Err(e),
                    None => {
                        last_error = format!("poll: {}", s.message());
                        continue 'connection;
                    }
                },
            };
            last_contact = Instant::now();
            last_error.clear();
            backoff = Duration::from_millis(100);
            match reply.state {
                Some(poll_reply::State::Finished(_)) => return Ok(summary),
                Some(poll_reply::State::Wait(w)) => {
                    std::thread::sleep(Duration::from_millis(w.retry_after_ms.clamp(10, 5000) as u64))
                }
                None => std::thread::sleep(Duration::from_millis(200)),
                Some(poll_reply::State::Task(task)) => {
                    let request = work(exp, opts.client, &memory, &task)?;
                    let round = task.round;
                    match runtime.block_on(rpc.upload(request)) {
                        Ok(r) => {
                            let r = r.into_inner();
                            summary.rounds_worked += 1;
                            if r.accepted {
                                tracing::info!(round, "upload accepted");
                            } else {
                                summary.rejected += 1;
                                tracing::warn!(round, reason = %r.reason, "upload refused");
                            }
                        }
                        Err(s) => match fatal(opts.client, &s) {
                            Some(e) => return Err(e),
                            None => {
                                joined &= s.code() != Code::FailedPrecondition;
                                last_error = format!("upload: {}", s.message());
                                continue 'connection;
                            }
                        },
                    }
                }
            }
        }
    }
}

/// One task: the engine's client step from the broadcast model and this client's stored memory; the new
/// memory is on disk before the upload leaves.
fn work(
    exp: &Experiment,
    client: u32,
    memory: &MemoryStore,
    task: &crate::proto::Task,
) -> Result<UploadRequest, NetError> {
    let bad = |detail: String| NetError::setup("task", format!("round {}: {detail}", task.round));
    let global = factors(exp.shapes(), &task.factors).map_err(bad)?;
    let head = Head {
        hidden: exp.head_dims().0,
        classes: exp.head_dims().1,
        weight: f32s(&task.head_weight, "head weight").map_err(bad)?,
        bias: f32s(&task.head_bias, "head bias").map_err(bad)?,
    };
    let rho = DropRatio::new(task.rho).map_err(|e| bad(e.to_string()))?;
    let round_task = RoundTask { round: task.round, global: &global, head: &head, rho };
    let previous = memory.before(task.round, exp.shapes())?;
    let (upload, new_memory) = train_one(exp, client as usize, previous, &round_task)?;
    if !new_memory.is_empty() {
        memory.save(task.round, &new_memory)?;
    }
    Ok(UploadRequest {
        round: task.round,
        update: upload.bytes,
        head_weight: f32_bytes(&upload.head.weight),
        head_bias: f32_bytes(&upload.head.bias),
        train_loss: upload.train_loss,
        train_s: upload.train_s,
        sparsify_s: upload.sparsify_s,
    })
}
