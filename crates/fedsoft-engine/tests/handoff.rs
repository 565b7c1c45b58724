//! Clients reached by messages (`handoff`): a run whose tasks and replies travel as bytes is the in-process run,
//! record for record and byte for byte, a resumed one included; a reply that is not one, or is another
//! client's, drops that client with the reason; a task made under another config is refused.

use fedsoft_engine::engine::{Experiment, RunOptions};
use fedsoft_engine::fixtures::{tiny_config, tiny_text_task};
use fedsoft_engine::handoff::{HandoffPool, work};
use std::path::{Path, PathBuf};

/// The tiny text task in a temporary directory and an experiment prepared on it under `extra`.
struct Setup {
    tmp: tempfile::TempDir,
    model: PathBuf,
    data: PathBuf,
    exp: Experiment,
    /// The digest of the experiment's config, as a server would send it.
    digest: String,
}

fn setup(extra: &[&str]) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = tiny_text_task(tmp.path());
    let cfg = tiny_config(&model, &data, extra);
    let exp = Experiment::prepare(&cfg, Path::new("/nonexistent-cache")).unwrap();
    Setup { tmp, model, data, exp, digest: cfg.digest() }
}

fn options(out: &Path, resume: bool, stop_after: Option<u64>) -> RunOptions {
    RunOptions { out_dir: out.to_path_buf(), resume, cache: PathBuf::from("/nonexistent-cache"), stop_after }
}

/// What two runs of one config must share: the round and client records without their clocks, and the
/// adapter's files.
#[derive(Debug, PartialEq)]
struct Outcome {
    metrics: Vec<serde_json::Value>,
    clients: Vec<serde_json::Value>,
    adapter: Vec<(String, Vec<u8>)>,
}

fn outcome(out: &Path) -> Outcome {
    let clocks = ["time", "wall_s", "train_wall_s", "transfer_s"];
    let lines = |name: &str| -> Vec<serde_json::Value> {
        std::fs::read_to_string(out.join(name))
            .unwrap()
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                for key in clocks {
                    v.as_object_mut().unwrap().remove(key);
                }
                v
            })
            .collect()
    };
    let mut adapter: Vec<(String, Vec<u8>)> = std::fs::read_dir(out.join("adapter"))
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
        .collect();
    adapter.sort();
    Outcome { metrics: lines("metrics.jsonl"), clients: lines("clients.jsonl"), adapter }
}

#[test]
fn a_run_over_messages_is_the_in_process_run_and_resumes_like_it() {
    // SOFT with error feedback and kept optimiser state: both memories travel with the tasks.
    let Setup { tmp, exp, digest, .. } = setup(&["training.optimizer_state=\"keep\""]);
    let local = tmp.path().join("local");
    exp.run(&options(&local, false, None), |_| {}).unwrap();

    let carried = tmp.path().join("carried");
    let mut sent = 0;
    let mut carry = |_round: u64, tasks: Vec<(usize, Vec<u8>)>| {
        sent += tasks.len();
        Ok(tasks.into_iter().map(|(_, task)| work(&exp, &digest, &task).map_err(|e| e.to_string())).collect())
    };
    // Interrupted after the first round, then resumed with a new pool: the memories come from the checkpoint.
    exp.run_with(&mut HandoffPool::new(Box::new(&mut carry)), &options(&carried, false, Some(1)), |_| {}).unwrap();
    exp.run_with(&mut HandoffPool::new(Box::new(&mut carry)), &options(&carried, true, None), |_| {}).unwrap();
    assert!(sent > 0);
    assert_eq!(outcome(&carried), outcome(&local));
}

#[test]
fn a_bad_reply_drops_its_client_with_the_reason_and_a_foreign_task_is_refused() {
    let Setup { tmp, model, data, exp, digest } = setup(&["rounds.total=1"]);
    let out = tmp.path().join("run");
    let mut carry = |_round: u64, tasks: Vec<(usize, Vec<u8>)>| {
        let mut replies: Vec<Result<Vec<u8>, String>> =
            tasks.iter().map(|(_, task)| work(&exp, &digest, task).map_err(|e| e.to_string())).collect();
        replies[0] = Ok(b"not a reply".to_vec());
        // The second client's reply answers the first client's task.
        let first = work(&exp, &digest, &tasks[0].1).unwrap();
        replies[1] = Ok(first);
        Ok(replies)
    };
    exp.run_with(&mut HandoffPool::new(Box::new(&mut carry)), &options(&out, false, None), |_| {}).unwrap();
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(out.join("clients.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let reasons: Vec<&str> = rows.iter().filter_map(|r| r["reason"].as_str()).collect();
    assert!(reasons.iter().any(|r| r.starts_with("malformed reply")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("answers client")), "{reasons:?}");

    // A task made under another config.
    let other = tiny_config(&model, &data, &["rounds.total=1", "seed=9"]);
    let task = {
        let mut captured = Vec::new();
        let mut capture = |_round: u64, tasks: Vec<(usize, Vec<u8>)>| {
            captured = tasks.iter().map(|(_, t)| t.clone()).collect();
            Err(fedsoft_engine::EngineError::Transport { round: 1, detail: "captured".into() })
        };
        let other_exp = Experiment::prepare(&other, Path::new("/nonexistent-cache")).unwrap();
        let e = other_exp
            .run_with(
                &mut HandoffPool::new(Box::new(&mut capture)),
                &options(&tmp.path().join("o"), false, None),
                |_| {},
            )
            .unwrap_err();
        assert!(e.to_string().contains("the clients could not be reached: captured"), "{e}");
        captured.remove(0)
    };
    let e = work(&exp, &digest, &task).unwrap_err().to_string();
    assert!(e.contains("the server and its clients must run one config"), "{e}");
}
