//! A run directory is the run's own: `fedsoft run` never writes over a user's files, and a second writer on
//! the same `--out` is refused at once while the first runs.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
mod common;

use common::{fedsoft, require_assets};

const SMALL: [&str; 10] = [
    "--set",
    "data.samples_per_client=8",
    "--set",
    "data.test_samples=16",
    "--set",
    "clients.per_round=2",
    "--set",
    "rounds.eval_every=1000",
    "--set",
    "rounds.checkpoint_every=1000",
];

#[test]
#[ignore = "reads the packaged assets: ./scripts/test fetches them and includes this test"]
fn a_users_config_beside_the_output_is_never_overwritten() {
    require_assets(&["dinov2", "fashion-mnist"]);
    let tmp = tempfile::tempdir().unwrap();
    let mine = tmp.path().join("myexp");
    std::fs::create_dir_all(&mine).unwrap();
    let text = format!("# my own notes, kept\n{}", include_str!("../../../configs/default.toml"));
    std::fs::write(mine.join("config.toml"), &text).unwrap();
    let config = mine.join("config.toml");
    let mut args = vec!["run", config.to_str().unwrap(), "--out", mine.to_str().unwrap()];
    args.extend(SMALL);
    args.extend(["--set", "rounds.total=1"]);
    let (ok, _, err) = fedsoft(&args);
    assert!(!ok, "{err}");
    assert!(err.contains("already holds \"config.toml\", which no fedsoft run of this directory wrote"), "{err}");
    assert_eq!(std::fs::read_to_string(mine.join("config.toml")).unwrap(), text);
    let names: Vec<String> =
        std::fs::read_dir(&mine).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names.iter().filter(|n| !n.starts_with('.')).count(), 1, "{names:?}");
}

#[test]
#[ignore = "reads the packaged assets: ./scripts/test fetches them and includes this test"]
fn a_second_run_on_the_same_directory_is_refused_while_the_first_writes_it() {
    require_assets(&["dinov2", "fashion-mnist"]);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("shared");
    let first = |seed: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_fedsoft"));
        c.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .args(["run", "--out", out.to_str().unwrap(), "--set", "rounds.total=400", "--set", seed])
            .args(SMALL)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    };
    let mut one = first("seed=1").spawn().unwrap();
    // The first run holds the lock once its first round is on disk.
    let started = Instant::now();
    while !std::fs::read_to_string(out.join("metrics.jsonl")).is_ok_and(|t| !t.is_empty()) {
        assert!(started.elapsed() < Duration::from_secs(120), "the first run never wrote a round");
        assert!(one.try_wait().unwrap().is_none(), "the first run ended early");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut args = vec!["run", "--out", out.to_str().unwrap(), "--set", "rounds.total=400", "--set", "seed=2"];
    args.extend(SMALL);
    let (ok, _, err) = fedsoft(&args);
    let still_running = one.try_wait().unwrap().is_none();
    one.kill().unwrap();
    one.wait().unwrap();
    assert!(still_running, "the first run ended before the second was tried: make it longer");
    assert!(!ok, "{err}");
    // Under the same config the lock refuses it; under another the marker does, naming both digests.
    assert!(
        err.contains("is being written by another fedsoft run (process")
            || err.contains("holds a run of another config"),
        "{err}"
    );
    let mut same = vec!["run", "--out", out.to_str().unwrap(), "--set", "rounds.total=400", "--set", "seed=1"];
    same.extend(SMALL);
    let mut one = first("seed=1").spawn().unwrap();
    let started = Instant::now();
    while std::fs::read_to_string(out.join(".fedsoft.lock")).ok().and_then(|p| p.trim().parse::<u32>().ok())
        != Some(one.id())
    {
        assert!(started.elapsed() < Duration::from_secs(120), "the first run never took the lock");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (ok, _, err) = fedsoft(&same);
    one.kill().unwrap();
    one.wait().unwrap();
    assert!(!ok && err.contains("is being written by another fedsoft run (process"), "{err}");
}
