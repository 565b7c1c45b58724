//! The round engine end to end on a tiny BERT checkpoint and a small text task written by the test.

use fedsoft_core::budget::{DropRatio, total_budget};
use fedsoft_core::sparsify::{MethodKind, MethodRules};
use fedsoft_engine::engine::{Client, Experiment, RunOptions};
use fedsoft_engine::fixtures::{tiny_config, tiny_text_task};
use fedsoft_engine::metrics::RoundRecord;
use fedsoft_engine::{EngineError, ExperimentConfig};
use std::path::{Path, PathBuf};

fn fixture(dir: &Path) -> (PathBuf, PathBuf) {
    tiny_text_task(dir)
}

fn config(model: &Path, data: &Path, extra: &[&str]) -> ExperimentConfig {
    tiny_config(model, data, extra)
}

/// Options for a run of the fixture in `out` (the fixture needs no asset cache).
fn options(out: &Path, resume: bool, stop_after: Option<u64>) -> RunOptions {
    RunOptions { out_dir: out.to_path_buf(), resume, cache: PathBuf::from("/nonexistent-cache"), stop_after }
}

fn run(cfg: &ExperimentConfig, out: &Path, resume: bool, stop_after: Option<u64>) -> Vec<RoundRecord> {
    let exp = Experiment::prepare(cfg, Path::new("/nonexistent-cache")).unwrap();
    exp.run(&options(out, resume, stop_after), |_| {}).unwrap();
    read_metrics(out)
}

/// A run's `clients.jsonl` as JSON values (none when it wrote no file).
fn client_rows(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("clients.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn read_metrics(out: &Path) -> Vec<RoundRecord> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The records without wall-clock timings, which legitimately differ between runs.
fn comparable(v: &[RoundRecord]) -> Vec<RoundRecord> {
    v.iter().map(|r| RoundRecord { wall_s: 0.0, time: Default::default(), ..r.clone() }).collect()
}

#[test]
fn every_method_and_controller_runs_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = fixture(tmp.path());
    for method in ["soft", "flasc", "rlora", "hetlora", "fedlodrop", "ilora", "svd"] {
        for controller in ["fixed", "tsfa", "osfa"] {
            let cfg = config(
                &model,
                &data,
                &[&format!("method.name=\"{method}\""), &format!("controller.kind=\"{controller}\"")],
            );
            let out = tmp.path().join(format!("{method}-{controller}"));
            let recs = run(&cfg, &out, false, None);
            assert_eq!(recs.len(), 4);
            let exp_rank = if controller == "tsfa" { recs[0].rank } else { 2 };
            let shapes = cfg.lora_shapes(exp_rank).unwrap();
            let mut queue = 0.0f64;
            let plan = fedsoft_engine::plan::Planner::new(&cfg).unwrap();
            for r in &recs {
                assert_eq!(r.method.as_str(), method);
                assert_eq!(r.clients.len(), 3);
                assert!(r.covariance.unwrap().is_finite() && r.train_loss.is_finite());
                // Exact budgets: every upload keeps what its method promises.
                let rho = DropRatio::new(r.rho).unwrap();
                // FedLoDrop sends the shared budget too (whole components plus one partial one).
                let per_client = match method {
                    "ilora" => shapes.iter().map(|s| s.numel()).sum::<usize>(),
                    _ => total_budget(&shapes, rho),
                };
                assert_eq!(
                    per_client,
                    method.parse::<fedsoft_core::sparsify::MethodKind>().unwrap().upload_budget(
                        &shapes,
                        rho,
                        &cfg.method.options
                    )
                );
                assert_eq!(r.kept_entries as usize, 3 * per_client, "{method}/{controller} round {}", r.round);
                assert_eq!(r.uplink_bits_paper, 32 * r.kept_entries);
                assert!(r.uplink_bits_encoded > 0);
                // The queue follows Eq. (30) for the online controllers.
                if controller != "fixed" {
                    queue = (queue + r.delay_s - plan.tsfa.link.tau_bar).max(0.0);
                    assert!((r.queue - queue).abs() < 1e-9, "queue {} vs {queue}", r.queue);
                    assert!(r.rho >= 0.5 - 1e-12 && r.rho <= 0.99 + 1e-12);
                } else {
                    assert_eq!(r.rho, 0.75);
                }
                assert!(
                    (r.delay_s - r.dense_delay_s * (1.0 - r.rho)).abs() < 0.05 * r.dense_delay_s || method == "ilora"
                );
            }
            assert!(
                recs[1].test_accuracy.is_some() && recs[3].test_accuracy.is_some() && recs[0].test_accuracy.is_none()
            );
            let summary: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
            for key in [
                "final_test_accuracy",
                "num_classes",
                "rounds",
                "wall_s",
                "rank",
                "avg_delay_s",
                "uplink_bits_paper",
                "uplink_bits_encoded",
            ] {
                assert!(summary.get(key).is_some(), "summary lacks {key}");
            }
            let clients = std::fs::read_to_string(out.join("clients.jsonl")).unwrap();
            assert_eq!(clients.lines().count(), 12);
            assert!(out.join("config.toml").is_file() && out.join("checkpoint.json").is_file());
        }
    }
}

#[test]
fn same_seed_same_metrics_and_methods_share_clients_and_channels() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = fixture(tmp.path());
    let a = run(&config(&model, &data, &[]), &tmp.path().join("a"), false, None);
    let b = run(&config(&model, &data, &[]), &tmp.path().join("b"), false, None);
    assert_eq!(comparable(&a), comparable(&b));
    let c = run(&config(&model, &data, &["method.name=\"flasc\""]), &tmp.path().join("c"), false, None);
    for (x, y) in a.iter().zip(&c) {
        assert_eq!(x.clients, y.clients);
        assert_eq!(x.dense_delay_s, y.dense_delay_s);
    }
    let ca = std::fs::read_to_string(tmp.path().join("a/clients.jsonl")).unwrap();
    let cc = std::fs::read_to_string(tmp.path().join("c/clients.jsonl")).unwrap();
    let fading = |s: &str| -> Vec<f64> {
        s.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["fading"].as_f64().unwrap()).collect()
    };
    assert_eq!(fading(&ca), fading(&cc));
}

/// Interrupted at round 3 and resumed equals uninterrupted, bit for bit, with fresh optimisers and with each
/// client's optimiser kept across its rounds (whose state then rides in the checkpoint).
#[test]
fn resume_after_interruption_equals_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = fixture(tmp.path());
    let mut finals = Vec::new();
    for mode in ["fresh", "keep"] {
        let cfg = config(&model, &data, &["rounds.checkpoint_every=1", &format!("training.optimizer_state={mode:?}")]);
        let whole = run(&cfg, &tmp.path().join(format!("whole-{mode}")), false, None);
        let part = tmp.path().join(format!("part-{mode}"));
        let first = run(&cfg, &part, false, Some(3));
        assert_eq!(first.len(), 3);
        let ckpt = std::fs::read(part.join("checkpoint.safetensors")).unwrap();
        let optimizers = safetensors::SafeTensors::deserialize(&ckpt)
            .unwrap()
            .names()
            .iter()
            .filter(|n| n.starts_with("optimizer."))
            .count();
        assert_eq!(optimizers > 0, mode == "keep", "{mode}: {optimizers} optimiser states in the checkpoint");
        // A crash after the checkpoint but mid-way through the next round's logging: a stray line is dropped.
        std::fs::write(
            part.join("metrics.jsonl"),
            std::fs::read_to_string(part.join("metrics.jsonl")).unwrap() + "{\"round\":3,\"partial\":true}\n",
        )
        .unwrap();
        let resumed = run(&cfg, &part, true, None);
        assert_eq!(comparable(&resumed), comparable(&whole), "{mode}");
        let s_whole: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(tmp.path().join(format!("whole-{mode}/summary.json"))).unwrap(),
        )
        .unwrap();
        let s_part: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(part.join("summary.json")).unwrap()).unwrap();
        assert_eq!(s_whole["final_test_accuracy"], s_part["final_test_accuracy"]);
        assert_eq!(s_whole["uplink_bits_encoded"], s_part["uplink_bits_encoded"]);
        finals.push(whole.iter().map(|r| r.train_loss).collect::<Vec<_>>());
        // Without --resume an existing run is not overwritten.
        let exp = Experiment::prepare(&cfg, Path::new("/nonexistent-cache")).unwrap();
        let opts = RunOptions { out_dir: part.clone(), resume: false, cache: PathBuf::from("/x"), stop_after: None };
        assert!(exp.run(&opts, |_| {}).unwrap_err().to_string().contains("--resume"));
    }
    // Round 1 is the same (no client has trained before); later rounds see the kept moments.
    assert_eq!(finals[0][0], finals[1][0]);
    assert_ne!(finals[0], finals[1]);
}

/// The finite-horizon rule in a real run: its logged backlog is the spend beyond `t tau_bar`, it keeps rho in
/// range, and an interrupted run resumes to the same records (its spent delay is in the checkpoint).
#[test]
fn the_horizon_rule_runs_and_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = fixture(tmp.path());
    let cfg = config(&model, &data, &["tsfa.online=\"horizon\"", "rounds.checkpoint_every=1"]);
    let tau_bar = fedsoft_engine::plan::Planner::new(&cfg).unwrap().tsfa.link.tau_bar;
    let whole = run(&cfg, &tmp.path().join("whole"), false, None);
    let mut spent = 0.0;
    for r in &whole {
        spent += r.delay_s;
        assert!((r.queue - (spent - (r.round + 1) as f64 * tau_bar)).abs() < 1e-9, "round {}", r.round);
        assert!(r.rho >= 0.5 - 1e-12 && r.rho <= 0.99 + 1e-12);
    }
    let part = tmp.path().join("part");
    run(&cfg, &part, false, Some(2));
    assert_eq!(comparable(&run(&cfg, &part, true, None)), comparable(&whole));
}

/// Where a bad setting is caught matters: a mistake in the config itself is refused while the config is read
/// (before any model or data file is opened), and only what needs the files (a data path, more samples than
/// the split holds) is refused while preparing, still before the first round.
#[test]
fn bad_configs_fail_before_training_naming_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = fixture(tmp.path());
    let text = std::fs::read_to_string(tmp.path().join("task.csv")).unwrap();
    assert!(!text.is_empty());
    let read = |o: &str| {
        let toml = config(&model, &data, &[]).to_toml();
        ExperimentConfig::from_toml(&toml, "tiny.toml", &[o.to_string()])
    };
    for (o, want) in [
        ("method.name=\"topk\"", "unknown variant `topk`"),
        ("lora.rank=17", "lora.rank"),
        ("clients.per_round=9", "clients.per_round"),
        ("controller.rho=1.0", "controller.rho"),
        ("training.device=\"tpu\"", "training.device"),
        ("rounds.total=0", "rounds"),
        ("training.threads=1000000", "training.threads"),
        ("training.threads=-1", "training.threads"),
        ("lora.layers=[0, 0]", "block 0 is listed twice"),
        ("lora.targets=[\"query\", \"query\"]", "lora.targets"),
        ("name=\"/tmp/elsewhere\"", "not a plain run name"),
        ("name=\"../up\"", "not a plain run name"),
        ("name=\"\"", "name"),
        ("robust.median_factor=0.5", "robust.median_factor"),
        ("robust.max_norm=-1", "robust.max_norm"),
        ("clients.total=1000000000", "clients.total"),
        ("data.image_size=100000", "data.image_size"),
        ("training.local_epochs=1000000000", "local_epochs"),
    ] {
        let e = match read(o) {
            Err(e) => e.to_string(),
            Ok(c) => match c.validate_run() {
                Err(e) => e.to_string(),
                Ok(()) => panic!("{o}: accepted while reading the config (the files were not needed to refuse it)"),
            },
        };
        assert!(e.contains(want), "{o}: {e}");
    }
    // These need the files: refused while preparing, and nothing is written.
    for (o, want) in [
        ("data.path=\"/no/such/file.csv\"", "data.path"),
        // More samples than the split holds is refused, not clamped to what exists.
        ("data.samples_per_client=1000000000000", "data.samples_per_client: 1000000000000 per client x"),
        ("data.test_samples=1000000000", "data.test_samples: 1000000000 asked for, but the test split holds"),
    ] {
        let cfg = read(o).unwrap_or_else(|e| panic!("{o}: refused before the files were read: {e}"));
        let e = Experiment::prepare(&cfg, Path::new("/nonexistent-cache")).err().expect(o).to_string();
        assert!(e.contains(want), "{o}: {e}");
    }
}

#[test]
fn the_exported_adapter_reloads_with_the_same_accuracy() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = fixture(tmp.path());
    let cfg = config(&model, &data, &["controller.kind=\"fixed\""]);
    let out = tmp.path().join("run");
    let recs = run(&cfg, &out, false, None);
    let exp = Experiment::prepare(&cfg, Path::new("/nonexistent-cache")).unwrap();
    let (state, head) = fedsoft_engine::export::import_peft(&out.join("adapter"), exp.shapes()).unwrap();
    let (acc, _) = exp.evaluate(&state, &head).unwrap();
    assert_eq!(Some(acc), recs.last().unwrap().test_accuracy);
    let adapter: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("adapter/adapter_config.json")).unwrap()).unwrap();
    assert_eq!(adapter["peft_type"], "LORA");
    assert_eq!(adapter["r"], 2);
    assert_eq!(adapter["target_modules"][0], "encoder.layer.0.attention.self.query");
    // A custom architecture has no hub id: the base is the checkpoint it was trained on.
    assert_eq!(adapter["base_model_name_or_path"], model.display().to_string());
    // The probe: the first test samples as the model takes them and fedsoft's logits for them.
    let probe_bytes = std::fs::read(out.join("adapter/probe.safetensors")).unwrap();
    let probe = safetensors::SafeTensors::deserialize(&probe_bytes).unwrap();
    let ids = probe.tensor("input_ids").unwrap();
    let logits = probe.tensor("logits").unwrap();
    assert_eq!((ids.dtype(), logits.dtype()), (safetensors::Dtype::I64, safetensors::Dtype::F32));
    assert_eq!(ids.shape()[0], logits.shape()[0]);
    assert_eq!(logits.shape()[1], head.classes);
    assert!(fedsoft_core::le::f32_from_le(logits.data()).iter().all(|v| v.is_finite()));
    // The base id can be overridden, and only transformers 4 and 5 are known.
    let named = config(&model, &data, &["controller.kind=\"fixed\"", "export.base_model=\"my/base\""]);
    let out = tmp.path().join("named");
    run(&named, &out, false, None);
    let adapter: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("adapter/adapter_config.json")).unwrap()).unwrap();
    assert_eq!(adapter["base_model_name_or_path"], "my/base");
    let e = ExperimentConfig::from_toml(&cfg.to_toml(), "t", &["export.transformers=3".into()]).unwrap_err();
    assert!(e.to_string().contains("export.transformers"), "{e}");
}

#[test]
fn a_pilot_run_measures_the_sigma_profile_the_offline_stage_uses() {
    use fedsoft_wireless::tsfa::SigmaProfile;
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = fixture(tmp.path());
    let cfg = config(&model, &data, &["tsfa.pilot={ rounds = 2 }", "rounds.total=2"]);
    let out = tmp.path().join("run");
    let opts = RunOptions {
        out_dir: out.clone(),
        resume: false,
        cache: PathBuf::from("/nonexistent-cache"),
        stop_after: None,
    };
    let exp = Experiment::prepare_run(&cfg, &opts).unwrap();
    let SigmaProfile::Measured { singular_values: sv } = exp.config().tsfa.settings.bound.sigma.clone() else {
        panic!("the pilot did not replace the profile")
    };
    assert_eq!(sv.len(), 8, "one value per rank up to tsfa.bound.max_rank");
    assert_eq!(sv[0], 1.0);
    assert!(sv.windows(2).all(|w| w[0] >= w[1] && w[1] >= 0.0), "{sv:?}");
    assert!(sv[1] > 0.0, "a trained rank-8 update has more than one direction: {sv:?}");
    let pilot = read_metrics(&out.join("pilot"));
    assert_eq!(pilot.len(), 2);
    assert!(pilot.iter().all(|r| r.method == MethodKind::Ilora && r.rank == 8 && r.rho == 0.0));
    assert_eq!(exp.rank(), exp.planner().tsfa.offline.best_rank);

    // The main run records the measured profile; preparing again reuses the finished pilot (same profile,
    // no more pilot rounds).
    exp.run(&opts, |_| {}).unwrap();
    assert!(std::fs::read_to_string(out.join("config.toml")).unwrap().contains("singular_values"));
    let again = Experiment::prepare_run(&cfg, &RunOptions { resume: true, ..opts.clone() }).unwrap();
    assert_eq!(again.config().tsfa.settings.bound.sigma, exp.config().tsfa.settings.bound.sigma);
    assert_eq!(read_metrics(&out.join("pilot")).len(), 2);
    let text = std::fs::read_to_string(out.join("config.toml")).unwrap();
    let e = ExperimentConfig::from_toml(&text, "t", &["tsfa.pilot={ rounds = 0 }".into()]).unwrap_err();
    assert!(e.to_string().contains("tsfa.pilot.rounds"), "{e}");
}

/// Clients run side by side on `training.threads` cores; any thread count gives the same rounds, client
/// records and adapter bits (with fresh and with kept optimiser state), and a run resumes under another.
#[test]
fn the_thread_count_changes_no_result() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = fixture(tmp.path());
    let clients_without_timings = |out: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(out.join("clients.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().unwrap().retain(|k, _| k != "train_wall_s" && k != "transfer_s");
                v
            })
            .collect()
    };
    let adapter = |out: &Path| std::fs::read(out.join("adapter/adapter_model.safetensors")).unwrap();
    for state in ["fresh", "keep"] {
        let opt = format!("training.optimizer_state=\"{state}\"");
        let base = tmp.path().join(format!("{state}-1"));
        let one = run(&config(&model, &data, &[&opt, "training.threads=1"]), &base, false, None);
        for threads in [2, 3, 8] {
            let out = tmp.path().join(format!("{state}-{threads}"));
            let set = format!("training.threads={threads}");
            let many = run(&config(&model, &data, &[&opt, &set]), &out, false, None);
            assert_eq!(comparable(&one), comparable(&many), "{state}, {threads} threads");
            assert_eq!(clients_without_timings(&base), clients_without_timings(&out), "{state}, {threads} threads");
            assert_eq!(adapter(&base), adapter(&out), "{state}, {threads} threads");
        }
        // Interrupted with one thread, resumed with two: the uninterrupted run's bits.
        let out = tmp.path().join(format!("{state}-resumed"));
        run(&config(&model, &data, &[&opt, "training.threads=1"]), &out, false, Some(2));
        let resumed = run(&config(&model, &data, &[&opt, "training.threads=2"]), &out, true, None);
        assert_eq!(comparable(&one), comparable(&resumed), "{state}, resumed with 2 threads");
        assert_eq!(adapter(&base), adapter(&out));
    }
}

/// `training.execution = "batched"` (one backbone pass over all of a round's clients per step, clients with
/// different step counts under a Dirichlet split) trains the same models as the per-client path up to float
/// rounding, and is itself deterministic.
#[test]
fn batched_execution_matches_per_client_training() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = fixture(tmp.path());
    let factors = |out: &Path| -> Vec<(String, Vec<f32>)> {
        let bytes = std::fs::read(out.join("adapter/adapter_model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut v: Vec<(String, Vec<f32>)> = st
            .tensors()
            .into_iter()
            .map(|(name, t)| (name, t.data().chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let split = ["partition={ kind = \"dirichlet\", alpha = 0.5, min_size = 4 }"];
    // ILoRA without the regulariser, with fresh and kept optimiser state; SOFT with its orthogonality term,
    // sparsification and error feedback.
    for (method, state) in [("ilora", "fresh"), ("ilora", "keep"), ("soft", "fresh")] {
        let opt = format!("training.optimizer_state=\"{state}\"");
        let name = format!("method.name=\"{method}\"");
        let state = format!("{method}-{state}");
        let mut common = vec![name.as_str(), "controller.kind=\"fixed\"", opt.as_str()];
        common.extend(split);
        let with = |x: &'static str| -> Vec<&str> { common.iter().copied().chain([x]).collect() };
        let regularised = config(&model, &data, &common).orthogonality() > 0.0;
        assert_eq!(regularised, method == "soft", "{state}: the orthogonality term is on for SOFT only");
        let per_client = tmp.path().join(format!("{state}-per-client"));
        let a = run(&config(&model, &data, &with("training.execution=\"per_client\"")), &per_client, false, None);
        let batched = tmp.path().join(format!("{state}-batched"));
        let b = run(&config(&model, &data, &with("training.execution=\"batched\"")), &batched, false, None);
        let again = tmp.path().join(format!("{state}-batched-again"));
        let c = run(&config(&model, &data, &with("training.execution=\"batched\"")), &again, false, None);
        assert_eq!(comparable(&b), comparable(&c), "batched runs are deterministic");
        assert_eq!(factors(&batched), factors(&again));
        for (x, y) in a.iter().zip(&b) {
            assert_eq!((&x.clients, x.kept_entries, x.rho), (&y.clients, y.kept_entries, y.rho));
            assert!((x.train_loss - y.train_loss).abs() <= 1e-4 * x.train_loss.abs().max(1.0), "{x:?} vs {y:?}");
        }
        let mut worst = 0.0f32;
        for ((na, va), (nb, vb)) in factors(&per_client).iter().zip(&factors(&batched)) {
            assert_eq!(na, nb);
            for (p, q) in va.iter().zip(vb) {
                worst = worst.max((p - q).abs());
            }
        }
        assert!(worst <= 1e-4, "{state}: batched and per-client adapters differ by up to {worst}");
        // The split gave a round's clients different numbers of local steps (batch size 8).
        let steps: Vec<(u64, u64)> = std::fs::read_to_string(batched.join("clients.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (v["round"].as_u64().unwrap(), v["samples"].as_u64().unwrap().div_ceil(8))
            })
            .collect();
        assert!(steps.iter().any(|a| steps.iter().any(|b| a.0 == b.0 && a.1 != b.1)), "{steps:?}");
    }
}

/// `--resume` never starts over on top of recorded rounds: a run directory whose checkpoint was deleted, or
/// replaced by a directory, is refused with the reason, and its metrics are left as they were. A fresh
/// directory still starts with `--resume`.
#[test]
fn resume_without_a_checkpoint_refuses_to_start_over() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = fixture(tmp.path());
    let cfg = config(&model, &data, &["rounds.checkpoint_every=1"]);
    let exp = Experiment::prepare(&cfg, Path::new("/nonexistent-cache")).unwrap();
    let opts = |out: &Path| RunOptions {
        out_dir: out.to_path_buf(),
        resume: true,
        cache: PathBuf::from("/nonexistent-cache"),
        stop_after: Some(2),
    };
    let fresh = tmp.path().join("fresh");
    exp.run(&opts(&fresh), |_| {}).unwrap();
    let metrics = std::fs::read_to_string(fresh.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 2);
    let ckpt = fresh.join(fedsoft_engine::checkpoint::CHECKPOINT);
    std::fs::remove_file(&ckpt).unwrap();
    let e = exp.run(&opts(&fresh), |_| {}).unwrap_err();
    assert!(matches!(e, EngineError::RunDirectory { ref dir, .. } if dir == &fresh), "{e:?}");
    let e = e.to_string();
    assert!(e.contains("--resume") && e.contains("no checkpoint"), "{e}");
    std::fs::create_dir(&ckpt).unwrap();
    let e = exp.run(&opts(&fresh), |_| {}).unwrap_err();
    assert!(matches!(e, EngineError::File { ref path, .. } if path == &ckpt), "{e:?}");
    let e = e.to_string();
    assert!(e.contains("checkpoint.safetensors") && e.contains("not a file"), "{e}");
    assert_eq!(std::fs::read_to_string(fresh.join("metrics.jsonl")).unwrap(), metrics, "recorded rounds kept");
}

#[test]
fn a_checkpoint_keyed_by_the_old_hash_resumes_once_and_is_rekeyed_by_the_config_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = fixture(tmp.path());
    let cfg = config(&model, &data, &["rounds.checkpoint_every=1"]);
    let whole = run(&cfg, &tmp.path().join("whole"), false, None);
    let part = tmp.path().join("part");
    run(&cfg, &part, false, Some(3));
    let exp = Experiment::prepare(&cfg, Path::new("/nonexistent-cache")).unwrap();
    let mut st = fedsoft_engine::checkpoint::load(&part, exp.shapes()).unwrap().unwrap();
    assert_eq!(st.meta.config_sha256, cfg.digest());
    // As a checkpoint written before the digest: only the toolchain's hash of the canonical config.
    st.meta.config_sha256 = String::new();
    st.meta.config_hash = Some(fedsoft_engine::checkpoint::legacy_config_hash(&cfg.canonical_toml()));
    fedsoft_engine::checkpoint::save(&part, &st).unwrap();
    let resumed = run(&cfg, &part, true, None);
    assert_eq!(comparable(&resumed), comparable(&whole));
    let after = fedsoft_engine::checkpoint::load(&part, exp.shapes()).unwrap().unwrap();
    assert_eq!((after.meta.config_sha256.as_str(), after.meta.config_hash), (cfg.digest().as_str(), None));
    // An old hash that does not match is refused like any other config.
    let other = tmp.path().join("other");
    run(&cfg, &other, false, Some(2));
    let mut st = fedsoft_engine::checkpoint::load(&other, exp.shapes()).unwrap().unwrap();
    st.meta.config_sha256 = String::new();
    st.meta.config_hash = Some(12345);
    fedsoft_engine::checkpoint::save(&other, &st).unwrap();
    let e = exp.run(&options(&other, true, None), |_| {}).unwrap_err().to_string();
    assert!(e.contains("was written by a different config"), "{e}");
}

#[test]
fn resume_refuses_logs_that_lost_rounds_the_checkpoint_covers() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = fixture(tmp.path());
    let cfg = config(&model, &data, &["rounds.checkpoint_every=1"]);
    for (file, damage) in [("metrics.jsonl", "cut"), ("metrics.jsonl", "removed"), ("clients.jsonl", "cut")] {
        let out = tmp.path().join(format!("{file}-{damage}"));
        run(&cfg, &out, false, Some(3));
        let path = out.join(file);
        let kept = std::fs::read_to_string(&path).unwrap();
        if damage == "cut" {
            // The first round's records lost (a truncated copy, an editor's save).
            let rest: String = kept.lines().filter(|l| !l.contains("\"round\":0,")).map(|l| format!("{l}\n")).collect();
            assert_ne!(rest, kept);
            std::fs::write(&path, rest).unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }
        let exp = Experiment::prepare(&cfg, Path::new("/nonexistent-cache")).unwrap();
        let e = exp.run(&options(&out, true, None), |_| {}).unwrap_err();
        assert!(matches!(e, EngineError::File { ref path, .. } if path == &out.join(file)), "{e:?}");
        let e = e.to_string();
        let what = if damage == "cut" { "holds no record of round 1" } else { "holds no round at all" };
        assert!(
            e.contains(&format!("{what}, but the checkpoint is at round 3: the log was cut or removed")),
            "{file} {damage}: {e}"
        );
    }
}

/// Every round, the first scheduled client sends huge but finite values within its budget (3e38 in its LoRA
/// entries, 1e30 in its head): the attack of issue #15 on an in-process pool.
struct Poisoner(fedsoft_engine::engine::LocalClients);

impl fedsoft_engine::engine::ClientPool for Poisoner {
    fn run_round(
        &mut self,
        exp: &Experiment,
        task: &fedsoft_engine::engine::RoundTask<'_>,
        clients: &[usize],
    ) -> Result<Vec<Result<fedsoft_engine::engine::ClientUpload, String>>, fedsoft_engine::EngineError> {
        let mut out = self.0.run_round(exp, task, clients)?;
        if let Some(Ok(u)) = out.first_mut() {
            // An upload the server will refuse anyway (e.g. trained from an already broken model) stays as is.
            let Ok(msg) = fedsoft_core::encoding::decode(&u.bytes, exp.shapes()) else { return Ok(out) };
            let mut update = msg.update;
            for m in &mut update.modules {
                m.values.iter_mut().for_each(|v| *v = 3e38f32.copysign(*v));
            }
            u.bytes = fedsoft_core::encoding::encode(msg.round, msg.client, exp.shapes(), &update).unwrap();
            u.head.weight.iter_mut().for_each(|w| *w = 1e30);
        }
        Ok(out)
    }
    fn memories(&self) -> std::collections::BTreeMap<usize, fedsoft_engine::checkpoint::ClientMemory> {
        self.0.memories()
    }
    fn restore(&mut self, memories: std::collections::BTreeMap<usize, fedsoft_engine::checkpoint::ClientMemory>) {
        self.0.restore(memories)
    }
}

/// The fixture with `extra` overrides run in `<dir>/<name>` with [`Poisoner`]'s pool: its outcome and directory.
fn run_poisoned(
    dir: &Path,
    (model, data): (&Path, &Path),
    extra: &[&str],
    name: &str,
) -> (Result<fedsoft_engine::metrics::Summary, EngineError>, PathBuf) {
    let exp = Experiment::prepare(&config(model, data, extra), Path::new("/nonexistent-cache")).unwrap();
    let out = dir.join(name);
    let r = exp.run_with(&mut Poisoner(Default::default()), &options(&out, false, None), |_| {});
    (r, out)
}

/// Norm bounds (`[robust]`): without them a poisoner makes the run stop with an error (never a success with a
/// broken model); with a median bound its uploads are rejected with the reason, or clipped, and the run ends
/// with a finite model; honest runs are unchanged by a bound.
#[test]
fn norm_bounds_keep_a_poisoning_client_out() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = fixture(tmp.path());
    let poisoned = |extra: &[&str], name: &str| run_poisoned(tmp.path(), (&model, &data), extra, name);
    let (r, _) = poisoned(&[], "open");
    let e = r.unwrap_err();
    assert!(matches!(e, EngineError::Diverged { .. }), "{e:?}");
    let e = e.to_string();
    assert!(e.contains("non-finite") || e.contains("test loss"), "{e}");

    let (r, out) = poisoned(&["robust.median_factor=5"], "reject");
    let summary = r.unwrap();
    assert!(summary.final_test_loss.is_some_and(f64::is_finite) && summary.completed);
    let rows = client_rows(&out);
    let refused = rows.iter().filter(|r| r["reason"].as_str().is_some_and(|s| s.starts_with("norm bound"))).count();
    assert_eq!(refused, 4, "one poisoned upload refused per round");
    assert!(read_metrics(&out).iter().all(|r| r.dropped == 1));

    let (r, out) = poisoned(&["robust.median_factor=5", "robust.action=\"clip\""], "clip");
    assert!(r.unwrap().final_test_loss.is_some_and(f64::is_finite));
    assert!(read_metrics(&out).iter().all(|r| r.dropped == 0));

    let honest = run(&config(&model, &data, &[]), &tmp.path().join("honest"), false, None);
    let bounded = tmp.path().join("honest-bounded");
    let with_bound = run(&config(&model, &data, &["robust.median_factor=10"]), &bounded, false, None);
    assert_eq!(comparable(&honest), comparable(&with_bound));
    let adapter = |d: &Path| std::fs::read(d.join("adapter/adapter_model.safetensors")).unwrap();
    assert_eq!(adapter(&tmp.path().join("honest")), adapter(&bounded));
}

/// The median bound holds when a round admits only one or two uploads: two give no median that one attacker
/// cannot move (the smaller sets the reference), and a lone upload is compared with the uploads accepted in
/// the previous round. A clip is recorded against its client with the norms. A lone first upload has nothing
/// to be compared with; the run then stops naming `max_norm` instead of claiming a bound kept it out.
#[test]
fn norm_bounds_hold_in_rounds_of_one_or_two_uploads() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = fixture(tmp.path());
    let poisoned = |extra: &[&str], name: &str| {
        let (r, out) = run_poisoned(tmp.path(), (&model, &data), extra, name);
        (r, client_rows(&out))
    };
    // Two scheduled, one of them poisoning: refused every round.
    let (r, rows) = poisoned(&["clients.per_round=2", "robust.median_factor=5"], "two");
    assert!(r.unwrap().final_test_loss.is_some_and(f64::is_finite));
    let refused = rows.iter().filter(|r| r["reason"].as_str().is_some_and(|s| s.starts_with("norm bound"))).count();
    assert_eq!(refused, 4, "{rows:?}");
    // Clipped instead: kept, and each clip recorded with the part and norms.
    let (r, rows) = poisoned(&["clients.per_round=2", "robust.median_factor=5", "robust.action=\"clip\""], "clip2");
    assert!(r.unwrap().final_test_loss.is_some_and(f64::is_finite));
    let notes: Vec<&str> = rows.iter().filter_map(|r| r["note"].as_str()).collect();
    assert_eq!(notes.len(), 4, "{rows:?}");
    assert!(
        notes.iter().all(|n| n.starts_with("clipped by the norm bound: ") && n.contains("over its limit")),
        "{notes:?}"
    );
    // One scheduled: the first round's lone upload has no reference, so a relative bound cannot hold it, and
    // the message says what would.
    let (r, _) = poisoned(&["clients.per_round=1", "robust.median_factor=5"], "one");
    let e = r.unwrap_err().to_string();
    assert!(e.contains("the [robust] bound in force did not prevent it: set robust.max_norm"), "{e}");
    let (r, _) = poisoned(&["clients.per_round=1"], "one-open");
    let e = r.unwrap_err().to_string();
    assert!(e.contains("a [robust] bound (median_factor or max_norm) keeps huge uploads out"), "{e}");
}

/// A learning rate no model survives stops the run with a message about the learning rate, not about
/// `[robust]`: the clients' own training losses show where the divergence began.
#[test]
fn a_runaway_learning_rate_is_named_as_the_cause() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = fixture(tmp.path());
    let exp =
        Experiment::prepare(&config(&model, &data, &["training.lr=1e30"]), Path::new("/nonexistent-cache")).unwrap();
    let e = exp.run(&options(&tmp.path().join("lr"), false, None), |_| {}).unwrap_err().to_string();
    assert!(e.contains("diverged from the initial model: lower training.lr (now 1e30) if it is too large"), "{e}");
    assert!(!e.contains("[robust]"), "{e}");
}

/// A checkpoint carries a digest of its metadata and tensors: one edited after it was written (the round
/// counter in its header, a byte of a tensor) is refused on resume, naming the file.
#[test]
fn edited_or_damaged_checkpoints_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = fixture(tmp.path());
    let cfg = config(&model, &data, &["rounds.checkpoint_every=1"]);
    let out = tmp.path().join("run");
    run(&cfg, &out, false, Some(2));
    let path = out.join(fedsoft_engine::checkpoint::CHECKPOINT);
    let original = std::fs::read(&path).unwrap();
    let resume_error = || {
        let exp = Experiment::prepare(&cfg, Path::new("/nonexistent-cache")).unwrap();
        let opts = RunOptions {
            out_dir: out.clone(),
            resume: true,
            cache: PathBuf::from("/nonexistent-cache"),
            stop_after: None,
        };
        exp.run(&opts, |_| {}).unwrap_err().to_string()
    };

    // The header's round counter moved on, the digest kept.
    let st = safetensors::SafeTensors::deserialize(&original).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&original).unwrap();
    let mut meta = header.metadata().clone().unwrap();
    let m = meta.get_mut("fedsoft.meta").unwrap();
    assert!(m.contains("\"next_round\":2"), "{m}");
    *m = m.replace("\"next_round\":2", "\"next_round\":3");
    let edited = safetensors::serialize(st.tensors(), Some(meta)).unwrap();
    std::fs::write(&path, edited).unwrap();
    let e = resume_error();
    assert!(e.contains("checkpoint.safetensors") && e.contains("digest"), "{e}");

    // One bit of the last tensor flipped.
    let mut damaged = original.clone();
    *damaged.last_mut().unwrap() ^= 0x01;
    std::fs::write(&path, damaged).unwrap();
    let e = resume_error();
    assert!(e.contains("checkpoint.safetensors") && e.contains("digest"), "{e}");

    // The untouched checkpoint resumes to the end.
    std::fs::write(&path, &original).unwrap();
    let exp = Experiment::prepare(&cfg, Path::new("/nonexistent-cache")).unwrap();
    let opts =
        RunOptions { out_dir: out.clone(), resume: true, cache: PathBuf::from("/nonexistent-cache"), stop_after: None };
    assert!(exp.run(&opts, |_| {}).unwrap().completed);
}

/// One schema: what the engine hands its caller is what lands in the files and what the report reads back,
/// field for field (a run that never evaluated included: its accuracy is `None`, not NaN).
#[test]
fn records_round_trip_from_engine_to_files_to_report() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = fixture(tmp.path());
    for (name, eval_every) in [("evaluated", "1"), ("never", "100")] {
        let cfg = config(&model, &data, &[&format!("rounds.eval_every={eval_every}"), "rounds.total=3"]);
        let out = tmp.path().join(name);
        let exp = Experiment::prepare(&cfg, Path::new("/nonexistent-cache")).unwrap();
        let opts = RunOptions {
            out_dir: out.clone(),
            resume: false,
            cache: PathBuf::from("/nonexistent-cache"),
            stop_after: Some(2),
        };
        let mut seen = Vec::new();
        let summary = exp.run(&opts, |r| seen.push(r.clone())).unwrap();
        let runs = fedsoft_report::load_runs(std::slice::from_ref(&out)).unwrap();
        assert_eq!(runs[0].rounds, seen);
        assert_eq!(runs[0].summary, summary);
        // Stopped after round 2 of 3: evaluated every round, or never (the last round would have).
        assert_eq!(summary.final_test_accuracy.is_some(), name == "evaluated");
        assert!(!summary.completed);
    }
}

/// Every way `UploadCheck::accept` refuses an upload is its own `Rejection` variant, and an honest upload
/// passes; the variant's text is what clients.jsonl and the network record.
#[test]
fn rejections_are_typed() {
    use fedsoft_engine::engine::{Rejection, RoundTask};
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = fixture(tmp.path());
    let cfg = config(&model, &data, &["controller.kind=\"fixed\""]);
    let exp = Experiment::prepare(&cfg, Path::new("/nonexistent-cache")).unwrap();
    let global = fedsoft_core::lora::LoraState::init_gaussian(exp.shapes(), 1).unwrap();
    let (hidden, classes) = exp.head_dims();
    let head = fedsoft_model::adapters::Head::init(hidden, classes, 1);
    let task = RoundTask { round: 3, global: &global, head: &head, rho: DropRatio::new(0.75).unwrap() };
    let upload = Client::new(&exp, 0, Default::default()).update(&task).unwrap();
    assert!(exp.upload_check().accept(&task, &upload).is_ok());
    let reject =
        |u: &fedsoft_engine::engine::ClientUpload, t: &RoundTask<'_>| exp.upload_check().accept(t, u).unwrap_err();

    let later = RoundTask { round: 4, ..task };
    assert_eq!(reject(&upload, &later), Rejection::Stale { sent: 3, current: 4 });
    let mut other = upload.clone();
    other.client = 1;
    assert_eq!(reject(&other, &task), Rejection::WrongSender { named: 0, from: 1 });
    let mut garbage = upload.clone();
    garbage.bytes.truncate(garbage.bytes.len() / 2);
    assert!(matches!(reject(&garbage, &task), Rejection::Malformed(m) if m.starts_with("malformed upload")));
    let mut nan_head = upload.clone();
    nan_head.head.bias[0] = f32::NAN;
    assert_eq!(reject(&nan_head, &task), Rejection::NonFiniteHead);
    let mut short_head = upload.clone();
    short_head.head.bias.pop();
    let e = reject(&short_head, &task);
    assert!(matches!(e, Rejection::HeadShape { biases, want_biases, .. } if biases + 1 == want_biases), "{e}");
    // A tighter ratio than the upload was made for: over budget, and the text says by how much.
    let tighter = RoundTask { rho: DropRatio::new(0.95).unwrap(), ..task };
    let e = reject(&upload, &tighter);
    assert!(matches!(e, Rejection::OverBudget { entries, budget, .. } if entries > budget), "{e}");
    assert!(e.to_string().starts_with("over budget: "), "{e}");
}

/// A run directory that cannot be made is an I/O error naming the path, with the system's error as its source
/// (printed once by the CLI's error chain, not repeated in the message).
#[test]
fn output_that_cannot_be_created_is_an_io_error_with_its_path_and_source() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = fixture(tmp.path());
    let exp = Experiment::prepare(&config(&model, &data, &[]), Path::new("/nonexistent-cache")).unwrap();
    let blocker = tmp.path().join("a-file");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let out = blocker.join("run");
    let opts = RunOptions {
        out_dir: out.clone(),
        resume: false,
        cache: PathBuf::from("/nonexistent-cache"),
        stop_after: Some(1),
    };
    let e = exp.run(&opts, |_| {}).unwrap_err();
    match &e {
        EngineError::Io { action, path, source } => {
            assert_eq!((*action, path), ("create", &out));
            assert!(!e.to_string().contains(&source.to_string()), "the source is not repeated: {e}");
            assert!(std::error::Error::source(&e).is_some());
        }
        other => panic!("expected an I/O error, got {other:?}"),
    }
}
