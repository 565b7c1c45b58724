//! `fedsoft serve` with `fedsoft join` processes on loopback, started and stopped by the tests: parity with
//! the in-process engine, faults (a hung client, a killed and resumed server), authentication, validation of
//! uploads, and the transport rules.

use fedsoft_core::sparsify::MethodRules;
use fedsoft_engine::fixtures::{tiny_config, tiny_text_task};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_fedsoft");

/// The binary, reading the workspace's asset cache (the report's font) instead of fetching into this crate's
/// directory, where `cargo test` starts it.
fn fedsoft() -> Command {
    let mut command = Command::new(BIN);
    if std::env::var_os("FEDSOFT_CACHE").is_none() {
        command.env("FEDSOFT_CACHE", concat!(env!("CARGO_MANIFEST_DIR"), "/../../.cache/fedsoft"));
    }
    command
}

struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    config: PathBuf,
}

/// The tiny experiment with 4 clients, 3 per round, 3 rounds, a checkpoint every round.
fn setup(extra: &[&str]) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let (model, data) = tiny_text_task(&root);
    let mut o = vec![
        "clients.total=4",
        "clients.per_round=3",
        "rounds.total=3",
        "rounds.eval_every=1",
        "rounds.checkpoint_every=1",
        "serve.round_deadline_s=60",
    ];
    o.extend_from_slice(extra);
    let cfg = tiny_config(&model, &data, &o);
    let config = root.join("exp.toml");
    std::fs::write(&config, cfg.to_toml()).unwrap();
    Setup { _tmp: tmp, root, config }
}

/// The port a server started with `--listen 127.0.0.1:0` bound (it writes `listen.addr` once listening).
fn bound_port(out: &Path) -> u16 {
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(addr) = std::fs::read_to_string(out.join("listen.addr")) {
            return addr.trim().parse::<std::net::SocketAddr>().unwrap().port();
        }
        assert!(Instant::now() < until, "the server in {} never started listening", out.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn log_file(path: &Path) -> Stdio {
    Stdio::from(std::fs::File::create(path).unwrap())
}

fn server(s: &Setup, out: &Path, port: u16, extra: &[&str]) -> Child {
    std::fs::create_dir_all(out).unwrap();
    let log = out.with_extension(format!("log{}", std::fs::read_dir(out.parent().unwrap()).unwrap().count()));
    fedsoft()
        .args(["serve", s.config.to_str().unwrap(), "--out", out.to_str().unwrap(), "--insecure", "--linger", "5"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        .stdout(log_file(&log.with_extension("out")))
        .stderr(log_file(&log))
        .spawn()
        .unwrap()
}

fn token(s: &Setup, out: &Path, id: u32) -> String {
    let o = fedsoft()
        .args(["serve", s.config.to_str().unwrap(), "--out", out.to_str().unwrap(), "--issue-token", &id.to_string()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

fn client(s: &Setup, port: u16, id: u32, token: &str) -> Child {
    let state = s.root.join(format!("client-{id}"));
    fedsoft()
        .args(["join", "--server", &format!("http://127.0.0.1:{port}"), "--client-id", &id.to_string()])
        .args(["--token", token, "--state", state.to_str().unwrap(), "--patience", "60"])
        .stdout(log_file(&s.root.join(format!("client-{id}.out"))))
        .stderr(log_file(&s.root.join(format!("client-{id}.log"))))
        .spawn()
        .unwrap()
}

fn wait(child: &mut Child, secs: u64, what: &str) -> bool {
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        if let Some(status) = child.try_wait().unwrap() {
            return status.success();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("{what} did not finish within {secs} s");
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Round records without what legitimately differs between an in-process and a served run: wall-clock
/// timings, and the covariance, which needs the dense local factors that never leave a networked client.
fn comparable(out: &Path) -> Vec<serde_json::Value> {
    lines(&out.join("metrics.jsonl"))
        .into_iter()
        .map(|mut v| {
            let o = v.as_object_mut().unwrap();
            for k in ["wall_s", "time", "covariance"] {
                o.remove(k);
            }
            v
        })
        .collect()
}

/// A served run of `s` on a free port with clients 0..4 joined.
struct Served {
    out: PathBuf,
    port: u16,
    srv: Child,
    clients: Vec<Child>,
}

fn serve_four(s: &Setup) -> Served {
    let out = s.root.join("served");
    let tokens: Vec<String> = (0..4).map(|i| token(s, &out, i)).collect();
    let srv = server(s, &out, 0, &[]);
    let port = bound_port(&out);
    let clients = (0..4).map(|i| client(s, port, i, &tokens[i as usize])).collect();
    Served { out, port, srv, clients }
}

fn in_process(s: &Setup, out: &Path) {
    let o = fedsoft().args(["run", s.config.to_str().unwrap(), "--out", out.to_str().unwrap()]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn log(s: &Setup) -> String {
    let mut all = String::new();
    for e in std::fs::read_dir(&s.root).unwrap().filter_map(Result::ok) {
        let p = e.path();
        if p.extension().is_some_and(|x| x.to_string_lossy().starts_with("log")) {
            all += &format!("== {}\n{}\n", p.display(), std::fs::read_to_string(&p).unwrap_or_default());
        }
    }
    all
}

#[test]
fn four_client_processes_give_exactly_the_in_process_result() {
    let s = setup(&[]);
    let reference = s.root.join("in-process");
    in_process(&s, &reference);

    let Served { out, port: _, mut srv, mut clients } = serve_four(&s);
    assert!(wait(&mut srv, 240, "the server"), "server failed:\n{}", log(&s));
    for (i, c) in clients.iter_mut().enumerate() {
        assert!(wait(c, 30, "a client"), "client {i} failed:\n{}", log(&s));
    }
    // Exactly the same global factors and head, and the same metrics.
    for f in ["adapter/adapter_model.safetensors", "adapter/head.safetensors"] {
        assert!(
            std::fs::read(reference.join(f)).unwrap() == std::fs::read(out.join(f)).unwrap(),
            "{f} differs:\n{}",
            log(&s)
        );
    }
    assert_eq!(comparable(&reference), comparable(&out));
    let served = lines(&out.join("metrics.jsonl"));
    assert_eq!(served.len(), 3);
    assert!(served.iter().all(|r| r["covariance"].is_null() && r["dropped"] == 0));
    // The server logs real timings beside the simulated delay, and the bytes match the ledger.
    let per_client = lines(&out.join("clients.jsonl"));
    assert_eq!(per_client.len(), 9);
    assert!(
        per_client.iter().all(|c| c["transfer_s"].as_f64().unwrap() > 0.0 && c["train_wall_s"].as_f64().unwrap() > 0.0)
    );
}

#[test]
fn a_killed_client_is_dropped_at_the_deadline_and_the_round_completes_without_it() {
    let s = setup(&["clients.per_round=4", "serve.round_deadline_s=3"]);
    let Served { out, port: _, mut srv, mut clients } = serve_four(&s);
    // Kill client 3 once it has joined (the first round is open by then or soon after).
    let until = Instant::now() + Duration::from_secs(120);
    while !std::fs::read_to_string(s.root.join("client-3.log")).unwrap_or_default().contains("joined") {
        assert!(Instant::now() < until, "client 3 never joined:\n{}", log(&s));
        std::thread::sleep(Duration::from_millis(20));
    }
    clients[3].kill().unwrap();
    let _ = clients[3].wait();
    assert!(wait(&mut srv, 240, "the server"), "server failed:\n{}", log(&s));
    for c in clients.iter_mut().take(3) {
        assert!(wait(c, 30, "a client"), "a client failed:\n{}", log(&s));
    }
    let recs = lines(&out.join("metrics.jsonl"));
    assert_eq!(recs.len(), 3, "every round completed");
    let drops: Vec<serde_json::Value> =
        lines(&out.join("clients.jsonl")).into_iter().filter(|c| c["dropped"] == true).collect();
    assert!(drops.iter().any(|c| c["client"] == 3), "client 3 was never dropped:\n{}", log(&s));
    assert!(drops.iter().all(|c| c["reason"].as_str().unwrap().contains("deadline")), "{drops:?}");
    // From round 1 on the three live clients are up (on a loaded machine one may still be starting in round 0):
    // each round ends at the deadline without client 3 and aggregates the three that arrived.
    for r in recs.iter().skip(1) {
        let dropped: Vec<&serde_json::Value> = drops.iter().filter(|c| c["round"] == r["round"]).collect();
        assert!(dropped.iter().all(|c| c["client"] == 3), "round {}: {dropped:?}", r["round"]);
        if r["dropped"] == 1 {
            assert!(r["wall_s"].as_f64().unwrap() >= 3.0 && r["wall_s"].as_f64().unwrap() < 30.0);
            assert_eq!(r["uplink_bits_paper"].as_u64().unwrap() % 3, 0);
        }
    }
}

#[test]
fn a_killed_server_resumes_and_finishes_exactly_like_an_uninterrupted_run() {
    let s = setup(&["rounds.total=10"]);
    let reference = s.root.join("in-process");
    in_process(&s, &reference);
    let Served { out, port, mut srv, mut clients } = serve_four(&s);
    let until = Instant::now() + Duration::from_secs(120);
    while lines(&out.join("metrics.jsonl")).len() < 2 {
        assert!(Instant::now() < until, "round 2 never finished:\n{}", log(&s));
        std::thread::sleep(Duration::from_millis(10));
    }
    srv.kill().unwrap();
    let _ = srv.wait();
    // Killed mid-run: ten rounds of four clients' training against a 10 ms watch loop.
    assert!(lines(&out.join("metrics.jsonl")).len() < 10, "the server finished before it was killed");
    let mut srv = server(&s, &out, port, &["--resume"]);
    assert!(wait(&mut srv, 240, "the resumed server"), "resumed server failed:\n{}", log(&s));
    for c in clients.iter_mut() {
        assert!(wait(c, 30, "a client"), "a client failed:\n{}", log(&s));
    }
    for f in ["adapter/adapter_model.safetensors", "adapter/head.safetensors"] {
        assert!(
            std::fs::read(reference.join(f)).unwrap() == std::fs::read(out.join(f)).unwrap(),
            "{f} differs:\n{}",
            log(&s)
        );
    }
    let (a, b) = (comparable(&reference), comparable(&out));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        for (k, v) in x.as_object().unwrap() {
            assert_eq!(v, &y[k], "round {} field {k}:\n{}", x["round"], log(&s));
        }
    }
}

mod rogue {
    //! A hand-driven client speaking the protocol directly, to send what an honest `fedsoft join` never would.
    use fedsoft_net::proto::federation_client::FederationClient;
    use fedsoft_net::proto::{JoinRequest, PollRequest, Task, UploadReply, UploadRequest, poll_reply};
    use tonic::Request;
    use tonic::service::interceptor::InterceptedService;
    use tonic::transport::Channel;

    pub type Auth = Box<dyn FnMut(Request<()>) -> Result<Request<()>, tonic::Status> + Send>;
    pub type Client = FederationClient<InterceptedService<Channel, Auth>>;

    /// The session of one rogue "process" (its connections share it).
    pub type Session = std::sync::Arc<std::sync::Mutex<Option<u64>>>;

    pub async fn connect(port: u16, id: u32, token: String, session: Session) -> Client {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}")).unwrap();
        let channel = loop {
            match channel.connect().await {
                Ok(c) => break c,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        };
        let auth: Auth = Box::new(move |mut req: Request<()>| {
            req.metadata_mut().insert("fedsoft-client", id.to_string().parse().unwrap());
            req.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
            if let Some(s) = *session.lock().unwrap() {
                req.metadata_mut().insert("fedsoft-session", s.to_string().parse().unwrap());
            }
            Ok(req)
        });
        FederationClient::with_interceptor(channel, auth).max_decoding_message_size(64 << 20)
    }

    pub async fn join(c: &mut Client, session: &Session) -> Result<String, tonic::Status> {
        let reply = c.join(JoinRequest {}).await?.into_inner();
        *session.lock().unwrap() = Some(reply.session);
        Ok(reply.config_toml)
    }

    pub async fn task(c: &mut Client, round: u64) -> Task {
        loop {
            match c.poll(PollRequest {}).await.unwrap().into_inner().state {
                Some(poll_reply::State::Task(t)) if t.round == round => return t,
                _ => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
    }

    pub async fn poll_once(c: &mut Client) -> Result<(), tonic::Status> {
        c.poll(PollRequest {}).await.map(|_| ())
    }

    pub async fn upload(c: &mut Client, req: UploadRequest) -> Result<UploadReply, tonic::Status> {
        c.upload(req).await.map(|r| r.into_inner())
    }
}

#[test]
fn wrong_tokens_are_refused_and_bad_uploads_never_reach_the_aggregate() {
    use fedsoft_core::budget::DropRatio;
    use fedsoft_engine::engine::{Client, Experiment, RoundTask};
    use fedsoft_net::proto::UploadRequest;
    use fedsoft_net::wire::{f32_bytes, f32s, factors};

    let s = setup(&["clients.total=2", "clients.per_round=2", "rounds.total=4", "serve.round_deadline_s=30"]);
    let out = s.root.join("served");
    let (t0, t1) = (token(&s, &out, 0), token(&s, &out, 1));
    let mut srv = server(&s, &out, 0, &[]);
    let port = bound_port(&out);

    // Client 0 with client 1's token, and an id outside the run: refused, with the reason.
    for (id, tok, want) in [("0", t1.as_str(), "wrong token"), ("7", t0.as_str(), "not one of the 2 clients")] {
        let o = fedsoft()
            .args(["join", "--server", &format!("http://127.0.0.1:{port}"), "--client-id", id, "--token", tok])
            .args(["--state", s.root.join("x").to_str().unwrap(), "--patience", "60"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "{id}: {err}");
    }

    let mut honest = client(&s, port, 0, &t0);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let session = rogue::Session::default();
    let mut c = rt.block_on(rogue::connect(port, 1, t1.clone(), session.clone()));
    let cfg_text = rt.block_on(rogue::join(&mut c, &session)).unwrap();
    // Polls come from the process that joined: one without a session, or with another, is refused.
    let other = rogue::Session::default();
    let mut c3 = rt.block_on(rogue::connect(port, 1, t1.clone(), other.clone()));
    let e = rt.block_on(rogue::poll_once(&mut c3)).unwrap_err();
    assert!(e.message().contains("join first"), "{e:?}");
    *other.lock().unwrap() = Some(session.lock().unwrap().unwrap() ^ 1);
    let e = rt.block_on(rogue::poll_once(&mut c3)).unwrap_err();
    assert!(e.message().contains("another process has joined as client 1"), "{e:?}");
    let cfg = fedsoft_engine::ExperimentConfig::from_toml(&cfg_text, "server", &[]).unwrap();
    let exp = Experiment::prepare(&cfg, Path::new("/nonexistent-cache")).unwrap();
    // An honest upload for a task, which each round then spoils in its own way.
    let honest_upload = |t: &fedsoft_net::proto::Task| {
        let global = factors(exp.shapes(), &t.factors).unwrap();
        let head = fedsoft_engine::Head {
            hidden: exp.head_dims().0,
            classes: exp.head_dims().1,
            weight: f32s(&t.head_weight, "w").unwrap(),
            bias: f32s(&t.head_bias, "b").unwrap(),
        };
        let task = RoundTask { round: t.round, global: &global, head: &head, rho: DropRatio::new(t.rho).unwrap() };
        let u = Client::new(&exp, 1, Default::default()).update(&task).unwrap();
        (u, global)
    };
    let request = |round: u64, update: Vec<u8>, head: &fedsoft_engine::Head| UploadRequest {
        round,
        update,
        head_weight: f32_bytes(&head.weight),
        head_bias: f32_bytes(&head.bias),
        train_loss: 1.0,
        train_s: 0.1,
        sparsify_s: 0.01,
    };

    // Round 0: a corrupted byte (the checksum catches it).
    let t = rt.block_on(rogue::task(&mut c, 0));
    let (u, _) = honest_upload(&t);
    let mut bad = u.bytes.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x5a;
    let r = rt.block_on(rogue::upload(&mut c, request(0, bad, &u.head))).unwrap();
    assert!(!r.accepted && r.reason.contains("malformed"), "{}", r.reason);
    // A second try is refused too: as a repeat while the round is open, or as stale once client 0's upload
    // has closed it.
    let r = rt.block_on(rogue::upload(&mut c, request(0, u.bytes.clone(), &u.head))).unwrap();
    assert!(!r.accepted && (r.reason.contains("already uploaded") || r.reason.contains("stale")), "{}", r.reason);

    // Round 1: every entry of the update, far over the round's budget.
    let t = rt.block_on(rogue::task(&mut c, 1));
    let (u, global) = honest_upload(&t);
    let all = fedsoft_core::sparsify::Selection {
        modules: global.shapes.iter().map(|s| (0..s.numel() as u32).collect()).collect(),
    };
    let dense = fedsoft_core::sparsify::SparseUpdate::gather(&global, &all).unwrap();
    let bytes = fedsoft_core::encoding::encode(1, 1, &global.shapes, &dense).unwrap();
    let r = rt.block_on(rogue::upload(&mut c, request(1, bytes, &u.head))).unwrap();
    assert!(!r.accepted && r.reason.contains("over budget"), "{}", r.reason);

    // Round 2: a NaN in the head, then (refused already) a stale upload for round 0; and a message over the
    // size bound is stopped by the transport.
    let t = rt.block_on(rogue::task(&mut c, 2));
    let (mut u, _) = honest_upload(&t);
    let huge = rt.block_on(rogue::upload(&mut c, request(2, vec![0u8; 64 << 20], &u.head)));
    assert!(huge.is_err(), "a 64 MiB upload went through");
    u.head.bias[0] = f32::NAN;
    let r = rt.block_on(rogue::upload(&mut c, request(2, u.bytes.clone(), &u.head))).unwrap();
    assert!(!r.accepted && r.reason.contains("non-finite"), "{}", r.reason);
    let r = rt.block_on(rogue::upload(&mut c, request(0, u.bytes.clone(), &u.head))).unwrap();
    assert!(!r.accepted && r.reason.contains("stale"), "{}", r.reason);
    // One for a round that has not begun is early, not stale.
    let r = rt.block_on(rogue::upload(&mut c, request(9, u.bytes.clone(), &u.head))).unwrap();
    assert!(!r.accepted && r.reason.starts_with("early upload for round 9: "), "{}", r.reason);

    // Round 3: the same honest upload twice at once: one is accepted, the other refused as a repeat (or as
    // late, should the round already have closed).
    let t = rt.block_on(rogue::task(&mut c, 3));
    let (u, _) = honest_upload(&t);
    let mut c2 = rt.block_on(rogue::connect(port, 1, t1.clone(), session.clone()));
    let req = request(3, u.bytes.clone(), &u.head);
    let (a, b) = rt.block_on(async { tokio::join!(rogue::upload(&mut c, req.clone()), rogue::upload(&mut c2, req)) });
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.accepted != b.accepted, "{a:?} / {b:?}");
    let refused = if a.accepted { &b } else { &a };
    assert!(["already uploaded", "stale", "closed"].iter().any(|w| refused.reason.contains(w)), "{}", refused.reason);

    assert!(wait(&mut srv, 240, "the server"), "server failed:\n{}", log(&s));
    assert!(wait(&mut honest, 30, "client 0"), "client 0 failed:\n{}", log(&s));
    // The rogue's uploads were dropped with their reasons; only client 0's budget reached the aggregate.
    let rogue_rows: Vec<serde_json::Value> =
        lines(&out.join("clients.jsonl")).into_iter().filter(|c| c["client"] == 1).collect();
    assert_eq!(rogue_rows.len(), 4);
    assert!(
        rogue_rows[..3].iter().all(|c| c["dropped"] == true && c["reason"].as_str().unwrap().starts_with("rejected"))
    );
    assert_eq!(rogue_rows[3]["dropped"], false, "the one accepted copy of round 3 counts once");
    for r in lines(&out.join("metrics.jsonl")) {
        let rho = DropRatio::new(r["rho"].as_f64().unwrap()).unwrap();
        let uploads = if r["round"] == 3 { 2 } else { 1 };
        assert_eq!(r["dropped"], 2 - uploads);
        assert_eq!(
            r["kept_entries"].as_u64().unwrap() as usize,
            uploads * cfg.method.name.upload_budget(exp.shapes(), rho, &cfg.method.options)
        );
    }
}

#[test]
fn without_tls_the_server_starts_only_on_loopback_and_only_when_asked() {
    let s = setup(&[]);
    let serve = |args: &[&str]| {
        let o = fedsoft()
            .args(["serve", s.config.to_str().unwrap(), "--out", s.root.join("o").to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        (o.status.success(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let (ok, err) = serve(&["--listen", "0.0.0.0:0", "--insecure"]);
    assert!(!ok && err.contains("without TLS"), "{err}");
    let (ok, err) = serve(&["--listen", "127.0.0.1:0"]);
    assert!(!ok && err.contains("--insecure"), "{err}");
}

#[test]
fn a_tls_server_and_clients_that_keep_their_optimisers_complete_a_run() {
    // Both clients take part in both rounds and keep their AdamW moments on their own disks in between.
    let s = setup(&["clients.total=2", "clients.per_round=2", "rounds.total=2", "training.optimizer_state=\"keep\""]);
    let reference = s.root.join("in-process");
    in_process(&s, &reference);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&key, &ca).unwrap();
    let (cert_path, key_path, ca_path) = (s.root.join("server.pem"), s.root.join("server.key"), s.root.join("ca.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let mut text = std::fs::read_to_string(&s.config).unwrap();
    text = text.replace(
        "[serve]\n",
        &format!(
            "[serve]\ntls_cert = {:?}\ntls_key = {:?}\n",
            cert_path.display().to_string(),
            key_path.display().to_string()
        ),
    );
    std::fs::write(&s.config, text).unwrap();

    let out = s.root.join("served");
    let tokens: Vec<String> = (0..2).map(|i| token(&s, &out, i)).collect();
    std::fs::create_dir_all(&out).unwrap();
    let mut srv = fedsoft()
        .args(["serve", s.config.to_str().unwrap(), "--out", out.to_str().unwrap(), "--linger", "5"])
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(log_file(&s.root.join("served.log")))
        .spawn()
        .unwrap();
    let port = bound_port(&out);
    let mut clients: Vec<Child> = (0..2)
        .map(|i| {
            fedsoft()
                .args(["join", "--server", &format!("https://localhost:{port}"), "--client-id", &i.to_string()])
                .args(["--token", &tokens[i], "--ca", ca_path.to_str().unwrap(), "--patience", "60"])
                .args(["--state", s.root.join(format!("c{i}")).to_str().unwrap()])
                .stdout(Stdio::null())
                .stderr(log_file(&s.root.join(format!("client-{i}.log"))))
                .spawn()
                .unwrap()
        })
        .collect();
    assert!(wait(&mut srv, 240, "the TLS server"), "TLS server failed:\n{}", log(&s));
    for c in &mut clients {
        assert!(wait(c, 30, "a TLS client"), "a TLS client failed:\n{}", log(&s));
    }
    assert_eq!(lines(&out.join("metrics.jsonl")).len(), 2);
    assert!(std::fs::read_to_string(s.root.join("served.log")).unwrap().contains("(TLS)"));
    // Kept optimiser state lives with each client, and the served run equals the in-process one.
    assert_eq!(comparable(&reference), comparable(&out));
    for i in 0..2 {
        let kept = std::fs::read(s.root.join(format!("c{i}/memory-1.safetensors"))).unwrap();
        let names: Vec<String> =
            safetensors::SafeTensors::deserialize(&kept).unwrap().names().iter().map(|n| n.to_string()).collect();
        assert!(names.contains(&format!("optimizer.{i}")), "client {i} kept {names:?}");
    }
}

/// `join` against a server that accepts connections and never answers gives up when its patience runs out
/// (each call has a deadline) instead of hanging; an address without a scheme and an unreadable CA file are
/// reported at once instead of being retried as "unreachable".
#[test]
fn join_gives_up_on_a_silent_server_and_reports_permanent_mistakes_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts and holds every connection, reads nothing, answers nothing; stops with the test process.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().take(200) {
            held.push(stream);
        }
    });
    let join = |server: &str, extra: &[&str]| {
        let started = Instant::now();
        let o = fedsoft()
            .args(["join", "--server", server, "--client-id", "0", "--token", "00"])
            .args(["--state", tmp.path().join("state").to_str().unwrap()])
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (o.status.success(), String::from_utf8_lossy(&o.stderr).into_owned(), started.elapsed())
    };
    let (ok, err, took) = join(&format!("http://127.0.0.1:{port}"), &["--rpc-timeout", "1", "--patience", "2"]);
    assert!(!ok && err.contains("no contact"), "{err}");
    // The patience is what was waited (not a backoff beyond it), and the cause reads as words, not Rust's Debug.
    assert!(err.contains(" s (--patience 2 s): ") && !err.contains("for 3."), "{err}");
    assert!(!err.contains("Status {") && !err.contains("Error("), "{err}");
    assert!(took < Duration::from_secs(60), "took {took:?}");
    // The patience bounds each call too: the 60 s default deadline does not outlast a patience of 2 s.
    let (ok, err, took) = join(&format!("http://127.0.0.1:{port}"), &["--patience", "2"]);
    assert!(!ok && err.contains("no contact"), "{err}");
    assert!(took < Duration::from_secs(30), "took {took:?}");

    // A field of the experiment itself is refused at once, naming it; where the files are is the client's own.
    let (ok, err, took) = join(&format!("http://127.0.0.1:{port}"), &["--set", "lora.rank=4", "--patience", "600"]);
    assert!(!ok && err.contains("lora.rank: a client may set only model.path, data.path"), "{err}");
    assert!(took < Duration::from_secs(10), "took {took:?}");

    let (ok, err, took) = join(&format!("127.0.0.1:{port}"), &["--patience", "600"]);
    assert!(!ok && err.contains("--server") && err.contains("scheme"), "{err}");
    assert!(took < Duration::from_secs(10), "took {took:?}");

    let missing = tmp.path().join("no-such-ca.pem");
    let (ok, err, took) =
        join(&format!("https://localhost:{port}"), &["--ca", missing.to_str().unwrap(), "--patience", "600"]);
    assert!(!ok && err.contains("no-such-ca.pem"), "{err}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

/// A garbage TLS certificate or key is reported at once, naming the file, before any model is loaded.
#[test]
fn garbage_tls_files_are_reported_before_loading() {
    let s = setup(&[]);
    let garbage = s.root.join("garbage.pem");
    std::fs::write(&garbage, b"this is not a certificate\n").unwrap();
    let fake = s.root.join("fake.pem");
    std::fs::write(&fake, b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").unwrap();
    let missing = s.root.join("missing-key.pem");
    let cases = [
        (&garbage, &garbage, "garbage.pem"),
        (&fake, &fake, "fake.pem"),
        // A file that is not there is reported against its field, once.
        (&fake, &missing, "error: serve.tls_key: "),
    ];
    for (cert, key, want) in cases {
        let started = Instant::now();
        let o = fedsoft()
            .args(["serve", s.config.to_str().unwrap(), "--out", s.root.join("tls-out").to_str().unwrap()])
            .args(["--listen", "127.0.0.1:0"])
            .args(["--set", &format!("serve.tls_cert={:?}", cert.to_str().unwrap())])
            .args(["--set", &format!("serve.tls_key={:?}", key.to_str().unwrap())])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want) && err.contains("serve.tls_"), "{err}");
        assert!(!err.contains("listening"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(20));
    }
}

/// One client id is one process: a second `join` with the id of a live client is refused, saying so, once
/// its patience is spent; after the first process is killed, a restarted one takes its place.
#[test]
fn a_second_process_for_a_live_client_id_is_refused_and_a_restart_takes_the_place() {
    // Only client 0 runs, so each round waits out its 5 s deadline: the run outlasts the test.
    let s = setup(&["rounds.total=40", "serve.round_deadline_s=5"]);
    let out = s.root.join("served");
    let t0 = token(&s, &out, 0);
    let mut srv = server(&s, &out, 0, &[]);
    let port = bound_port(&out);
    let joined = |what: &str| {
        let until = Instant::now() + Duration::from_secs(120);
        while !std::fs::read_to_string(s.root.join("client-0.log")).unwrap_or_default().contains("joined") {
            assert!(Instant::now() < until, "{what} never joined:\n{}", log(&s));
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let mut first = client(&s, port, 0, &t0);
    joined("client 0");
    let started = Instant::now();
    let second = fedsoft()
        .args(["join", "--server", &format!("http://127.0.0.1:{port}"), "--client-id", "0", "--token", &t0])
        .args(["--state", s.root.join("second").to_str().unwrap(), "--patience", "4"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "a second process was let in as client 0:\n{err}");
    assert!(err.contains("client 0 is already taking part from another process"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
    assert!(first.try_wait().unwrap().is_none(), "the first process must keep its place");

    first.kill().unwrap();
    let _ = first.wait();
    std::fs::remove_file(s.root.join("client-0.log")).unwrap();
    let mut again = client(&s, port, 0, &t0);
    joined("the restarted client 0");
    let _ = again.kill();
    let _ = srv.kill();
    let _ = (again.wait(), srv.wait());
}
