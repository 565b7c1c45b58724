//! `fedsoft serve` with `fedsoft join` processes on loopback, started and stopped by the tests: parity with
//! the in-process engine, faults (a hung client, a killed and resumed server), authentication, validation of
//! uploads, and the transport rules.

use fedsoft_engine::fixtures::{tiny_config, tiny_text_task};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_fedsoft");

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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn log_file(path: &Path) -> Stdio {
    Stdio::from(std::fs::File::create(path).unwrap())
}

fn server(s: &Setup, out: &Path, port: u16, extra: &[&str]) -> Child {
    std::fs::create_dir_all(out).unwrap();
    let log = out.with_extension(format!("log{}", std::fs::read_dir(out.parent().unwrap()).unwrap().count()));
    Command::new(BIN)
        .args(["serve", s.config.to_str().unwrap(), "--out", out.to_str().unwrap(), "--insecure", "--linger", "5"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        .stdout(log_file(&log.with_extension("out")))
        .stderr(log_file(&log))
        .spawn()
        .unwrap()
}

fn token(s: &Setup, out: &Path, id: u32) -> String {
    let o = Command::new(BIN)
        .args(["serve", s.config.to_str().unwrap(), "--out", out.to_str().unwrap(), "--issue-token", &id.to_string()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

fn client(s: &Setup, port: u16, id: u32, token: &str) -> Child {
    let state = s.root.join(format!("client-{id}"));
    Command::new(BIN)
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

fn in_process(s: &Setup, out: &Path) {
    let o =
        Command::new(BIN).args(["run", s.config.to_str().unwrap(), "--out", out.to_str().unwrap()]).output().unwrap();
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

    let out = s.root.join("served");
    let port = free_port();
    let tokens: Vec<String> = (0..4).map(|i| token(&s, &out, i)).collect();
    let mut srv = server(&s, &out, port, &[]);
    let mut clients: Vec<Child> = (0..4).map(|i| client(&s, port, i, &tokens[i as usize])).collect();
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
    let out = s.root.join("served");
    let port = free_port();
    let tokens: Vec<String> = (0..4).map(|i| token(&s, &out, i)).collect();
    let mut srv = server(&s, &out, port, &[]);
    let mut clients: Vec<Child> = (0..4).map(|i| client(&s, port, i, &tokens[i as usize])).collect();
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
    assert!(!drops.is_empty(), "client 3 was never dropped:\n{}", log(&s));
    assert!(drops.iter().all(|c| c["client"] == 3 && c["reason"].as_str().unwrap().contains("deadline")), "{drops:?}");
    for r in &recs {
        // A round with the dead client ends at the deadline, aggregating the three that arrived.
        if r["dropped"] == 1 {
            assert!(r["wall_s"].as_f64().unwrap() >= 3.0 && r["wall_s"].as_f64().unwrap() < 30.0);
            assert_eq!(r["uplink_bits_paper"].as_u64().unwrap() % 3, 0);
        }
    }
}

#[test]
fn a_killed_server_resumes_and_finishes_exactly_like_an_uninterrupted_run() {
    let s = setup(&[]);
    let reference = s.root.join("in-process");
    in_process(&s, &reference);
    let out = s.root.join("served");
    let port = free_port();
    let tokens: Vec<String> = (0..4).map(|i| token(&s, &out, i)).collect();
    let mut srv = server(&s, &out, port, &[]);
    let mut clients: Vec<Child> = (0..4).map(|i| client(&s, port, i, &tokens[i as usize])).collect();
    let until = Instant::now() + Duration::from_secs(120);
    while lines(&out.join("metrics.jsonl")).len() < 2 {
        assert!(Instant::now() < until, "round 2 never finished:\n{}", log(&s));
        std::thread::sleep(Duration::from_millis(10));
    }
    srv.kill().unwrap();
    let _ = srv.wait();
    // Killed mid-run (rounds are paced by the clients' 200 ms polls, the kill by a 10 ms loop).
    assert!(lines(&out.join("metrics.jsonl")).len() < 3, "the server finished before it was killed");
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
