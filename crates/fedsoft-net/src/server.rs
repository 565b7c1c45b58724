//! `fedsoft serve`: the engine's round loop with remote clients.
//!
//! The gRPC handlers run on a small tokio runtime; the engine runs on the calling thread and, each round,
//! opens the round in the shared [`Hub`], waits (up to the deadline) for the scheduled clients' uploads, and
//! judges each one with the engine's own [`fedsoft_engine::engine::UploadCheck::accept`] before the client hears the verdict.

use crate::auth::Tokens;
use crate::proto::federation_server::{Federation, FederationServer};
use crate::proto::{self, JoinReply, JoinRequest, PollReply, PollRequest, UploadReply, UploadRequest, poll_reply};
use crate::wire::{f32_bytes, f32s, factors_bytes};
use crate::{AUTH_KEY, CLIENT_KEY, NetError, SESSION_KEY};
use fedsoft_engine::ExperimentConfig;
use fedsoft_engine::Head;
use fedsoft_engine::checkpoint::ClientMemory;
use fedsoft_engine::engine::{ClientPool, ClientUpload, Experiment, RoundTask, RunOptions};
use fedsoft_engine::metrics::{RoundRecord, Summary};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

/// How long a poll waits for work before it answers "ask again": clients hear of a new round at once
/// instead of at their next poll.
const LONG_POLL: Duration = Duration::from_secs(10);

/// How long a client that has joined counts as connected after it was last heard from while it holds no
/// task. A connected client is never silent for longer than one long poll, so three of them leave room for a
/// slow network without letting a crashed client block its own restart for long. While it works on a task of
/// the open round it counts as connected until the round closes (local training may outlast any poll).
const LIVE: Duration = Duration::from_secs(30);

/// The process that currently is a client id: the session its join was given and when it was last heard.
struct Session {
    id: u64,
    last_seen: Instant,
}

/// A session id no earlier join of this server handed out (the counter), unguessable across restarts (std's
/// per-process random hash keys). Not a credential: the token authenticates; this only tells processes apart.
fn new_session(counter: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(counter);
    h.finish() ^ counter
}

/// An upload on its way from a handler to the engine, with the channel its verdict goes back on.
struct Incoming {
    client: usize,
    request: UploadRequest,
    received: Instant,
    verdict: tokio::sync::oneshot::Sender<Result<(), String>>,
}

struct OpenRound {
    task: proto::Task,
    scheduled: Vec<usize>,
    handed_out: BTreeMap<usize, Instant>,
    answered: BTreeSet<usize>,
    inbox: mpsc::Sender<Incoming>,
}

/// What the handlers and the engine share.
struct Hub {
    config_toml: String,
    num_clients: u32,
    round: Option<OpenRound>,
    finished: bool,
    /// Clients that have been told the run is over.
    told_finished: BTreeSet<u32>,
    joined: BTreeSet<u32>,
    /// The latest round opened, to tell a late upload from an early one while no round is open.
    last_round: Option<u64>,
    /// The process that is each client id now (see [`LIVE`]).
    sessions: BTreeMap<u32, Session>,
    sessions_issued: u64,
}

impl Hub {
    /// The open round, if an upload for `round` belongs to it; else why not: another round is open, or none is
    /// (the upload is stale when its round was already opened, early otherwise).
    fn open_round_for(&mut self, round: u64) -> Result<&mut OpenRound, String> {
        let last = self.last_round;
        match self.round.as_mut() {
            Some(open) if open.task.round == round => Ok(open),
            Some(open) => {
                let when = if round < open.task.round { "stale" } else { "early" };
                Err(format!("{when} upload for round {round}: round {} is open", open.task.round))
            }
            None if last.is_some_and(|l| round <= l) => {
                Err(format!("stale upload for round {round}: no round is open"))
            }
            None => Err(format!("early upload for round {round}: no round is open")),
        }
    }

    /// Whether the process holding `client`'s session is still taking part: heard from recently, or
    /// working on a task of the open round (local training may outlast any poll interval).
    fn live(&self, client: u32, session: &Session) -> bool {
        let c = client as usize;
        let working = self.round.as_ref().is_some_and(|o| o.handed_out.contains_key(&c) && !o.answered.contains(&c));
        working || session.last_seen.elapsed() < LIVE
    }

    /// Checks that a poll or upload comes from the process that holds `client`'s session, and notes that it
    /// was heard from.
    fn heard(&mut self, client: u32, presented: Option<u64>) -> Result<(), Status> {
        let Some(current) = self.sessions.get_mut(&client) else {
            // Joined before this server started (it was restarted), or never: the client joins again.
            return Err(Status::failed_precondition(format!(
                "client {client} has no session with this server: join first"
            )));
        };
        match presented {
            Some(s) if s == current.id => {
                current.last_seen = Instant::now();
                Ok(())
            }
            Some(_) => Err(Status::permission_denied(format!(
                "another process has joined as client {client} since this one did; only one process may be client \
                 {client} at a time"
            ))),
            None => Err(Status::failed_precondition(format!("no `{SESSION_KEY}` metadata: join first"))),
        }
    }
}

struct Service {
    hub: Arc<Mutex<Hub>>,
    num_clients: u32,
    tokens: Tokens,
    /// Woken whenever a round opens or the run finishes.
    news: Arc<tokio::sync::Notify>,
}

impl Service {
    /// The client's task in the open round, or the end of the run; `None` while there is nothing for it.
    fn work_for(&self, id: u32) -> Option<poll_reply::State> {
        let mut hub = self.hub.lock().expect("hub");
        if hub.finished {
            hub.told_finished.insert(id);
            return Some(poll_reply::State::Finished(proto::Finished {}));
        }
        let open = hub.round.as_mut()?;
        let c = id as usize;
        if !open.scheduled.contains(&c) || open.answered.contains(&c) {
            return None;
        }
        open.handed_out.entry(c).or_insert_with(Instant::now);
        Some(poll_reply::State::Task(open.task.clone()))
    }

    /// The authenticated client id of a poll or upload, from the process that holds its session.
    fn session_client<T>(&self, req: &Request<T>) -> Result<u32, Status> {
        let id = self.client(req)?;
        let presented = req.metadata().get(SESSION_KEY).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        self.hub.lock().expect("hub").heard(id, presented)?;
        Ok(id)
    }

    /// The authenticated client id of a request.
    fn client<T>(&self, req: &Request<T>) -> Result<u32, Status> {
        let md = req.metadata();
        let id: u32 = md
            .get(CLIENT_KEY)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Status::unauthenticated(format!("missing or malformed `{CLIENT_KEY}` metadata")))?;
        let token = md
            .get(AUTH_KEY)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated(format!("missing `{AUTH_KEY}: Bearer <token>` metadata")))?;
        let n = self.num_clients;
        if id >= n {
            tracing::warn!(client = id, "refused: unknown client id");
            return Err(Status::permission_denied(format!("client {id} is not one of the {n} clients of this run")));
        }
        if !self.tokens.verify(id, token) {
            tracing::warn!(client = id, "refused: wrong token");
            return Err(Status::unauthenticated(format!("wrong token for client {id}")));
        }
        Ok(id)
    }
}

#[tonic::async_trait]
impl Federation for Service {
    async fn join(&self, req: Request<JoinRequest>) -> Result<Response<JoinReply>, Status> {
        let id = self.client(&req)?;
        let mut hub = self.hub.lock().expect("hub");
        if let Some(held) = hub.sessions.get(&id).filter(|s| hub.live(id, s)) {
            let ago = held.last_seen.elapsed().as_secs_f64();
            tracing::warn!(client = id, "refused: a second process joined as this client");
            return Err(Status::already_exists(format!(
                "client {id} is already taking part from another process (last heard {ago:.0} s ago); a client id \
                 is one process. If that process has stopped, its place is free {} s after it was last heard",
                LIVE.as_secs()
            )));
        }
        hub.sessions_issued += 1;
        let session = new_session(hub.sessions_issued);
        hub.sessions.insert(id, Session { id: session, last_seen: Instant::now() });
        if hub.joined.insert(id) {
            tracing::info!(client = id, "joined");
        }
        Ok(Response::new(JoinReply { config_toml: hub.config_toml.clone(), num_clients: hub.num_clients, session }))
    }

    async fn poll(&self, req: Request<PollRequest>) -> Result<Response<PollReply>, Status> {
        let id = self.session_client(&req)?;
        let until = tokio::time::Instant::now() + LONG_POLL;
        loop {
            // Registered before the state is read, so news that lands in between is not missed.
            let news = self.news.notified();
            tokio::pin!(news);
            news.as_mut().enable();
            if let Some(state) = self.work_for(id) {
                return Ok(Response::new(PollReply { state: Some(state) }));
            }
            if tokio::time::timeout_at(until, news).await.is_err() {
                let wait = poll_reply::State::Wait(proto::Wait { retry_after_ms: 0 });
                return Ok(Response::new(PollReply { state: Some(wait) }));
            }
        }
    }

    async fn upload(&self, req: Request<UploadRequest>) -> Result<Response<UploadReply>, Status> {
        let id = self.session_client(&req)? as usize;
        let request = req.into_inner();
        let refuse = |reason: String| {
            tracing::warn!(client = id, round = request.round, %reason, "upload refused");
            Ok(Response::new(UploadReply { accepted: false, reason }))
        };
        let inbox = {
            let mut hub = self.hub.lock().expect("hub");
            let open = match hub.open_round_for(request.round) {
                Ok(open) => open,
                Err(reason) => return refuse(reason),
            };
            if !open.scheduled.contains(&id) {
                return refuse(format!("client {id} is not scheduled in round {}", request.round));
            }
            if open.answered.contains(&id) {
                return refuse(format!("client {id} already uploaded in round {}", request.round));
            }
            // Taken now, under the lock: a second upload racing this one is refused as a repeat instead of both
            // being answered "accepted" and the later one replacing the first.
            open.answered.insert(id);
            open.inbox.clone()
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let round = request.round;
        if inbox.send(Incoming { client: id, request, received: Instant::now(), verdict: tx }).is_err() {
            return Ok(Response::new(UploadReply { accepted: false, reason: format!("round {round} has closed") }));
        }
        match rx.await {
            Ok(Ok(())) => Ok(Response::new(UploadReply { accepted: true, reason: String::new() })),
            Ok(Err(reason)) => Ok(Response::new(UploadReply { accepted: false, reason })),
            Err(_) => Ok(Response::new(UploadReply { accepted: false, reason: format!("round {round} has closed") })),
        }
    }
}

/// The pool of remote clients: a round's work is whatever arrives before the deadline.
pub struct RemoteClients {
    hub: Arc<Mutex<Hub>>,
    news: Arc<tokio::sync::Notify>,
    deadline: Duration,
}

impl ClientPool for RemoteClients {
    fn run_round(
        &mut self,
        exp: &Experiment,
        task: &RoundTask<'_>,
        clients: &[usize],
    ) -> Result<Vec<Result<ClientUpload, String>>, fedsoft_engine::EngineError> {
        let (tx, rx) = mpsc::channel();
        let message = proto::Task {
            round: task.round,
            rho: task.rho.get(),
            factors: factors_bytes(task.global),
            head_weight: f32_bytes(&task.head.weight),
            head_bias: f32_bytes(&task.head.bias),
            deadline_s: self.deadline.as_secs_f64(),
        };
        let mut hub = self.hub.lock().expect("hub");
        hub.last_round = Some(task.round);
        hub.round = Some(OpenRound {
            task: message,
            scheduled: clients.to_vec(),
            handed_out: BTreeMap::new(),
            answered: BTreeSet::new(),
            inbox: tx,
        });
        drop(hub);
        self.news.notify_waiters();
        tracing::info!(round = task.round, ?clients, rho = task.rho.get(), "round open");
        let deadline = Instant::now() + self.deadline;
        let mut results: Vec<Option<Result<ClientUpload, String>>> = (0..clients.len()).map(|_| None).collect();
        while results.iter().any(Option::is_none) {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(inc) = rx.recv_timeout(left) else { break };
            let Some(slot) = clients.iter().position(|&c| c == inc.client) else { continue };
            if results[slot].is_some() {
                let _ =
                    inc.verdict.send(Err(format!("client {} already uploaded in round {}", inc.client, task.round)));
                continue;
            }
            let handed =
                self.hub.lock().expect("hub").round.as_ref().and_then(|o| o.handed_out.get(&inc.client).copied());
            // Judged here too, with the engine's own check, so the client hears the verdict now; the round
            // driver checks every upload again before it counts (validation has one home: `UploadCheck::accept`).
            let upload = to_upload(exp, inc.client, &inc.request, handed.map(|h| inc.received.duration_since(h)))
                .and_then(|u| exp.upload_check().accept(task, &u).map(|_| u).map_err(|r| r.to_string()));
            let verdict = upload.as_ref().map(|_| ()).map_err(Clone::clone);
            if let Some(open) = self.hub.lock().expect("hub").round.as_mut() {
                open.answered.insert(inc.client);
            }
            match &verdict {
                Ok(()) => tracing::info!(
                    round = task.round,
                    client = inc.client,
                    bytes = inc.request.update.len(),
                    "upload accepted"
                ),
                Err(reason) => tracing::warn!(round = task.round, client = inc.client, %reason, "upload rejected"),
            }
            let _ = inc.verdict.send(verdict.clone());
            results[slot] = Some(upload.map_err(|reason| format!("rejected: {reason}")));
        }
        self.hub.lock().expect("hub").round = None;
        let secs = self.deadline.as_secs_f64();
        Ok(results
            .into_iter()
            .zip(clients)
            .map(|(r, &c)| {
                r.unwrap_or_else(|| {
                    tracing::warn!(round = task.round, client = c, "no upload before the deadline; dropped");
                    Err(format!("no upload within the round deadline of {secs} s"))
                })
            })
            .collect())
    }

    fn memories(&self) -> BTreeMap<usize, ClientMemory> {
        BTreeMap::new()
    }

    fn restore(&mut self, _memories: BTreeMap<usize, ClientMemory>) {}
}

fn to_upload(
    exp: &Experiment,
    client: usize,
    r: &UploadRequest,
    since_task: Option<Duration>,
) -> Result<ClientUpload, String> {
    let head = Head {
        hidden: exp.head_dims().0,
        classes: exp.head_dims().1,
        weight: f32s(&r.head_weight, "head weight")?,
        bias: f32s(&r.head_bias, "head bias")?,
    };
    if !(r.train_loss.is_finite() && r.train_s.is_finite() && r.sparsify_s.is_finite()) {
        return Err("non-finite loss or timings".into());
    }
    Ok(ClientUpload {
        client,
        bytes: r.update.clone(),
        head,
        train_loss: r.train_loss,
        local: None,
        samples: None,
        train_s: r.train_s.max(0.0),
        sparsify_s: r.sparsify_s.max(0.0),
        transfer_s: since_task.map(|d| d.as_secs_f64()),
    })
}

/// How the server is started.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub run: RunOptions,
    /// Overrides `serve.listen`.
    pub listen: Option<String>,
    /// Serve without TLS (loopback addresses only).
    pub insecure: bool,
    /// Seconds to keep answering after the last round, so clients learn that the run is over.
    pub linger_s: f64,
}

/// The largest message either side accepts: a dense upload of every factor and the head, twice over, plus
/// framing. Anything larger is refused by the transport before it is read.
pub fn message_limit(exp: &Experiment) -> usize {
    let numel: usize = exp.shapes().iter().map(|s| s.numel()).sum();
    let (hidden, classes) = exp.head_dims();
    let head = hidden * classes + classes;
    2 * 4 * (numel + head) + 16 * exp.shapes().len() + (1 << 16)
}

/// The token authority of a run: `serve.secret_file`, or a secret kept in the run directory.
pub fn tokens_for(cfg: &ExperimentConfig, out: &std::path::Path) -> Result<Tokens, NetError> {
    match &cfg.serve.secret_file {
        Some(p) => Tokens::from_file(p),
        None => {
            std::fs::create_dir_all(out).map_err(|e| NetError::io(out, e))?;
            Tokens::load_or_create(&out.join("secret"))
        }
    }
}

/// Checks the transport settings before anything is loaded: TLS, or an explicitly insecure loopback server.
pub fn transport_check(
    cfg: &ExperimentConfig,
    opts: &ServeOptions,
) -> Result<(SocketAddr, Option<ServerTlsConfig>), NetError> {
    let listen = opts.listen.clone().unwrap_or_else(|| cfg.serve.listen.clone());
    let addr: SocketAddr = listen.parse().map_err(|e| NetError::setup("serve.listen", format!("{listen:?}: {e}")))?;
    let tls = match (&cfg.serve.tls_cert, &cfg.serve.tls_key) {
        (Some(cert), Some(key)) => {
            let read = |field: &str, path: &std::path::Path| {
                std::fs::read(path).map_err(|e| NetError::setup(field, format!("{}: {e}", path.display())))
            };
            let (cert_pem, key_pem) = (read("serve.tls_cert", cert)?, read("serve.tls_key", key)?);
            let has = |pem: &[u8], label: &str| String::from_utf8_lossy(pem).contains(label);
            if !has(&cert_pem, "-----BEGIN CERTIFICATE-----") {
                return Err(NetError::setup(
                    "serve.tls_cert",
                    format!("{}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it", cert.display()),
                ));
            }
            if !has(&key_pem, "PRIVATE KEY-----") {
                return Err(NetError::setup(
                    "serve.tls_key",
                    format!("{}: no PEM private key (-----BEGIN ... PRIVATE KEY-----) in it", key.display()),
                ));
            }
            let tls = ServerTlsConfig::new().identity(Identity::from_pem(cert_pem, key_pem));
            // Built once here, before the model loads, so a certificate or key that does not parse, or that do
            // not belong together, is reported now and by name rather than later as a "transport error".
            Server::builder().tls_config(tls.clone()).map_err(|e| {
                NetError::setup(
                    "serve.tls_cert",
                    format!(
                        "{} with key {}: not a usable certificate and key: {}",
                        cert.display(),
                        key.display(),
                        crate::causes(&e)
                    ),
                )
            })?;
            Some(tls)
        }
        _ if !addr.ip().is_loopback() => {
            return Err(NetError::setup(
                "serve.tls_cert",
                format!("refusing to serve on {addr} without TLS: set serve.tls_cert and serve.tls_key"),
            ));
        }
        _ if !opts.insecure => {
            return Err(NetError::setup(
                "serve.tls_cert",
                "no TLS configured: set serve.tls_cert and serve.tls_key, or pass --insecure for a loopback development server",
            ));
        }
        _ => None,
    };
    Ok((addr, tls))
}

/// Runs the experiment with remote clients; returns its summary once the last round is done and the
/// clients have been told.
pub fn serve(
    cfg: &ExperimentConfig,
    opts: &ServeOptions,
    on_round: impl FnMut(&RoundRecord),
) -> Result<Summary, NetError> {
    let (addr, tls) = transport_check(cfg, opts)?;
    let tokens = tokens_for(cfg, &opts.run.out_dir)?;
    let exp = Experiment::prepare_run(cfg, &opts.run)?;
    let limit = message_limit(&exp);
    let hub = Arc::new(Mutex::new(Hub {
        // Clients build their experiment from this; `[serve]` stays on the server.
        config_toml: ExperimentConfig { serve: Default::default(), ..exp.config().clone() }.to_toml(),
        num_clients: cfg.clients.total as u32,
        round: None,
        finished: false,
        told_finished: BTreeSet::new(),
        joined: BTreeSet::new(),
        last_round: None,
        sessions: BTreeMap::new(),
        sessions_issued: 0,
    }));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| NetError::setup("runtime", e))?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(addr))
        .map_err(|e| NetError::setup("serve.listen", format!("{addr}: {e}")))?;
    let bound = listener.local_addr().map_err(|e| NetError::setup("serve.listen", e))?;
    let addr_file = opts.run.out_dir.join("listen.addr");
    fedsoft_engine::checkpoint::write_atomic(&addr_file, bound.to_string().as_bytes())?;
    tracing::info!(%bound, tls = tls.is_some(), "listening");
    eprintln!("fedsoft serve: listening on {bound}{}", if tls.is_some() { " (TLS)" } else { " (no TLS)" });

    let news = Arc::new(tokio::sync::Notify::new());
    let service = FederationServer::new(Service {
        hub: hub.clone(),
        num_clients: cfg.clients.total as u32,
        tokens,
        news: news.clone(),
    })
    .max_decoding_message_size(limit)
    .max_encoding_message_size(limit);
    let mut builder = Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls).map_err(|e| NetError::setup("serve.tls_cert", e))?;
    }
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let router = builder.add_service(service);
    let server = runtime.spawn(async move {
        router
            .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), async {
                let _ = stop_rx.await;
            })
            .await
    });

    let mut pool = RemoteClients {
        hub: hub.clone(),
        news: news.clone(),
        deadline: Duration::from_secs_f64(cfg.serve.round_deadline_s),
    };
    let result = exp.run_with(&mut pool, &opts.run, on_round);
    hub.lock().expect("hub").finished = true;
    news.notify_waiters();
    if result.as_ref().is_ok_and(|s| s.completed) {
        let until = Instant::now() + Duration::from_secs_f64(opts.linger_s);
        while Instant::now() < until {
            let h = hub.lock().expect("hub");
            // A restarted server has not seen every client join, so only all clients of the run being told
            // ends the wait early.
            if h.told_finished.len() as u32 >= h.num_clients {
                break;
            }
            drop(h);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let _ = stop_tx.send(());
    let _ = runtime.block_on(server);
    Ok(result?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(last_round: Option<u64>) -> Hub {
        Hub {
            config_toml: String::new(),
            num_clients: 2,
            round: None,
            finished: false,
            told_finished: BTreeSet::new(),
            joined: BTreeSet::new(),
            last_round,
            sessions: BTreeMap::new(),
            sessions_issued: 0,
        }
    }

    #[test]
    fn between_rounds_an_upload_is_stale_for_an_opened_round_and_early_for_a_later_one() {
        let mut h = hub(Some(3));
        assert_eq!(h.open_round_for(3).err().unwrap(), "stale upload for round 3: no round is open");
        assert_eq!(h.open_round_for(0).err().unwrap(), "stale upload for round 0: no round is open");
        assert_eq!(h.open_round_for(4).err().unwrap(), "early upload for round 4: no round is open");
        let mut before_any = hub(None);
        assert_eq!(before_any.open_round_for(0).err().unwrap(), "early upload for round 0: no round is open");
    }
}
