//! Experiment files: defaults, overrides, and errors that name the field.

use fedsoft_engine::ExperimentConfig;
use fedsoft_engine::plan::Planner;

const MINIMAL: &str = "[model]\narch = \"vit-b16\"\n[lora]\nlayers = [0, 3, 6, 9]\n";

fn err(text: &str, overrides: &[&str]) -> String {
    let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    ExperimentConfig::from_toml(text, "test.toml", &o).unwrap_err().to_string()
}

#[test]
fn defaults_reproduce_the_paper_setting() {
    let cfg = ExperimentConfig::from_toml(MINIMAL, "test.toml", &[]).unwrap();
    assert_eq!(cfg.params_per_rank().unwrap(), 12_288);
    let p = Planner::new(&cfg).unwrap();
    assert_eq!(p.tsfa.offline.best_rank, 8);
    assert!((p.tsfa.link.tau_bar - 2.2733).abs() < 1e-4);
    // The resolved config round-trips.
    let again = ExperimentConfig::from_toml(&cfg.to_toml(), "resolved.toml", &[]).unwrap();
    assert_eq!(again, cfg);
}

#[test]
fn overrides_apply_before_validation() {
    let o = vec!["lora.rank=16".to_string(), "wireless.channel.mean_snr_db=20".into(), "name=\"x y\"".into()];
    let cfg = ExperimentConfig::from_toml(MINIMAL, "test.toml", &o).unwrap();
    assert_eq!(cfg.lora.rank, 16);
    assert_eq!(cfg.wireless.channel.mean_snr_db, Some(20.0));
    assert_eq!(cfg.name, "x y");
    let bare = ExperimentConfig::from_toml(MINIMAL, "t", &["name=plain".to_string()]).unwrap();
    assert_eq!(bare.name, "plain");
    assert!(err(MINIMAL, &["lora.rank"]).contains("expected key=value"));
    assert!(err(MINIMAL, &["model.arch.x=1"]).contains("arch is not a table"));
}

#[test]
fn bad_values_name_their_field() {
    let cases: &[(&str, &[&str], &str)] = &[
        (MINIMAL, &["lora.rank=769"], "lora.rank"),
        (MINIMAL, &["lora.rank=0"], "lora.rank"),
        (MINIMAL, &["clients.per_round=101"], "clients.per_round"),
        (MINIMAL, &["wireless.bandwidth_hz=-1"], "wireless.bandwidth_hz"),
        (MINIMAL, &["tsfa.rho_min=0.99"], "tsfa.rho_min"),
        (MINIMAL, &["tsfa.candidate_ranks=[]"], "tsfa.candidate_ranks"),
        (MINIMAL, &["tsfa.candidate_ranks=[8, 1000]"], "tsfa.candidate_ranks"),
        (MINIMAL, &["tsfa.latency_budget=0"], "tsfa.latency_budget"),
        (MINIMAL, &["tsfa.latency_budget=-2.5"], "tsfa.latency_budget"),
        (MINIMAL, &["lora.layers=[12]"], "lora.layers"),
        (MINIMAL, &["lora.targets=[]"], "lora.targets"),
        (MINIMAL, &["model.hidden=512"], "model.hidden"),
        (MINIMAL, &["wireless.channel.mean_snr_db=nan"], "wireless.channel.mean_snr_db"),
        ("[model]\narch = \"custom\"\nhidden = 64\n", &[], "arch = \"custom\" needs"),
        ("[model]\narch = \"resnet\"\n", &[], "unknown variant `resnet`"),
        ("[model]\narch = \"vit-b16\"\n[lora]\nrnak = 4\n", &[], "unknown field `rnak`"),
        // [tsfa] holds the planner's settings flattened in: a misspelt key is still refused, naming it.
        ("[model]\narch = \"vit-b16\"\n[tsfa]\nrho_mni = 0.6\n", &[], "tsfa.rho_mni"),
        (MINIMAL, &["tsfa.v_kapa=2.0"], "tsfa.v_kapa"),
        (MINIMAL, &["tsfa.pilot.rnds=2"], "unknown field `rnds`"),
        ("[model\narch = 1", &[], "test.toml"),
        // A value of the wrong kind given with --set is reported against that override.
        (MINIMAL, &["lora.rank=4", "training.optimizer_state=\"sometimes\""], "--set training.optimizer_state"),
        (MINIMAL, &["training.optimizer_state=\"sometimes\""], "expected `fresh` or `keep`"),
        (MINIMAL, &["training.pooling=3"], "--set training.pooling=3"),
        // ... and the message names the field inside the merged document, not only serde's type complaint.
        (MINIMAL, &["lora.rank=abc"], "--set lora.rank=abc: lora.rank: invalid type: string \"abc\", expected usize"),
        (MINIMAL, &["method.name=\"foo\""], "method.name: unknown variant `foo`"),
        // Switching a variant field by field is read as a whole; one left incomplete names what is missing.
        (MINIMAL, &["partition.kind=\"dirichlet\"", "partition.alpha=0.3"], "missing field `min_size`"),
        (MINIMAL, &["partition.kind=\"dirichlet\"", "lora.rank=4"], "--set partition.kind=\"dirichlet\""),
        // The error names the override that broke the document, not a later harmless one.
        (MINIMAL, &["training.pooling=3", "lora.rank=4"], "--set training.pooling=3"),
    ];
    for (text, o, want) in cases {
        let e = err(text, o);
        assert!(e.contains(want), "{o:?}: {e}");
    }
    // Empty candidate set reaches the planner's own check too.
    let cfg = ExperimentConfig::from_toml(MINIMAL, "t", &["tsfa.candidate_ranks=[]".into()]);
    assert!(cfg.is_err() || Planner::new(&cfg.unwrap()).unwrap_err().to_string().contains("tsfa.candidate_ranks"));
}

/// A variant with fields of its own can be switched one field at a time with --set.
#[test]
fn a_variant_is_switched_one_field_at_a_time() {
    let sets = ["partition.kind=\"dirichlet\"", "partition.alpha=0.3", "partition.min_size=8"].map(String::from);
    let cfg = ExperimentConfig::from_toml(MINIMAL, "t", &sets).unwrap();
    let toml = cfg.to_toml();
    assert!(
        toml.contains("kind = \"dirichlet\"") && toml.contains("alpha = 0.3") && toml.contains("min_size = 8"),
        "{toml}"
    );
}

#[test]
fn shipped_presets_load() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let cfg = ExperimentConfig::load(&path, &[]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            Planner::new(&cfg).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            // Presets on the packaged assets need no paths: they pass the run checks as shipped.
            let name = path.file_name().unwrap().to_string_lossy();
            // Each preset names its runs after its file, so runs and compare directories of two presets
            // never collide.
            assert_eq!(format!("{}.toml", cfg.name), name, "{}: the run name", path.display());
            if name.starts_with("cpu-") || name == "default.toml" {
                cfg.validate_run().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
            n += 1;
        }
    }
    // The default, the paper's Figs. 3(a), 3(b), 3(c), 4, 5-6, 7, their CPU versions, and the physical cell.
    assert!(n >= 13, "{n} presets");
}

#[test]
fn a_bad_partition_is_refused_before_anything_loads() {
    let text = include_str!("../../../configs/default.toml");
    let run_err = |o: &[&str]| -> String {
        let o: Vec<String> = o.iter().map(|s| s.to_string()).collect();
        let cfg = ExperimentConfig::from_toml(text, "default.toml", &o).unwrap();
        cfg.validate_run().unwrap_err().to_string()
    };
    let e = run_err(&["partition={kind=\"dirichlet\",alpha=0,min_size=1}"]);
    assert!(e.contains("partition.alpha") && e.contains("must be a positive number, got 0"), "{e}");
    let e = run_err(&["partition={kind=\"shards\",shards_per_client=0}"]);
    assert!(e.contains("partition.shards_per_client") && e.contains("must be at least 1"), "{e}");
    // 100 clients x 48 samples cannot give every client 100.
    let e = run_err(&["partition={kind=\"dirichlet\",alpha=0.5,min_size=100}"]);
    assert!(e.contains("partition.min_size") && e.contains("100 clients x 100 samples exceeds the 4800"), "{e}");
    let e = run_err(&["partition={kind=\"shards\",shards_per_client=49}"]);
    assert!(e.contains("4900 shards for 4800 samples"), "{e}");
}
