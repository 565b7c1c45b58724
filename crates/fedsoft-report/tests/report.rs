//! The report on run directories the tests write in the engine's formats.

use fedsoft_data::assets;
use fedsoft_report::{ReportError, gram_matrices, load_runs, register_font, report};
use safetensors::Dtype;
use safetensors::tensor::TensorView;
use std::path::{Path, PathBuf};

fn cache() -> PathBuf {
    std::env::var_os("FEDSOFT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../.cache/fedsoft")))
}

/// Registers the packaged font; a missing font fails the (explicitly included) test.
fn font() {
    let a = assets::find("dejavu-fonts").unwrap();
    let dir = assets::installed(&cache(), a)
        .unwrap_or_else(|| panic!("asset dejavu-fonts is not fetched; run `cargo run -p fedsoft -- fetch` first"));
    register_font(std::fs::read(dir.join("DejaVuSans.ttf")).unwrap()).unwrap();
}

fn write_run(dir: &Path, method: &str, controller: &str, rounds: u64, lambda: f64) {
    std::fs::create_dir_all(dir).unwrap();
    let mut lines = String::new();
    let mut sum = 0.0;
    for t in 0..rounds {
        let delay = 2.0 + (t % 3) as f64 * 0.3;
        sum += delay;
        let mut rec = serde_json::json!({
            "round": t, "method": method, "controller": controller, "rank": 4, "rho": 0.8 + 0.01 * t as f64,
            "delay_s": delay, "avg_delay_s": sum / (t + 1) as f64, "queue": (t as f64 * 0.1),
            "uplink_bits_paper": 1000 * (t + 1), "uplink_bits_encoded": 900 * (t + 1), "covariance": 0.5 / (t + 1) as f64,
            "train_loss": 2.0 / (t + 1) as f64, "kept_entries": 10, "clients": [1, 2], "dropped": 0,
            "dense_delay_s": 9.0, "wall_s": 1.0,
            "time": {"train_s": 1.0, "sparsify_s": 0.0, "aggregate_s": 0.0, "eval_s": 0.0, "other_s": 0.0},
        });
        if t % 2 == 1 {
            rec["test_accuracy"] = serde_json::json!(0.5 + 0.05 * t as f64);
        }
        lines.push_str(&format!("{rec}\n"));
    }
    std::fs::write(dir.join("metrics.jsonl"), lines).unwrap();
    let summary = serde_json::json!({
        "name": "t", "method": method, "controller": controller, "rounds": rounds, "completed": true,
        "num_classes": 3, "rank": 4, "orthogonality": lambda, "final_test_accuracy": 0.7, "final_test_loss": 0.9,
        "avg_delay_s": sum / rounds as f64, "latency_budget_s": 2.3, "uplink_bits_paper": 55000,
        "uplink_bits_encoded": 49500, "uploads": 20, "wall_s": 12.0, "out_dir": dir.display().to_string(),
    });
    std::fs::write(dir.join("summary.json"), summary.to_string()).unwrap();
}

/// PEFT adapter with `B` (d×r) and `A` (r×k); `orthogonal` puts each rank on its own coordinates.
fn write_adapter(dir: &Path, orthogonal: bool) {
    let (d, r, k) = (12, 4, 10);
    let mut b = vec![0f32; d * r];
    let mut a = vec![0f32; r * k];
    for i in 0..d {
        for j in 0..r {
            b[i * r + j] = if orthogonal {
                if i % r == j { 1.0 + j as f32 } else { 0.0 }
            } else {
                ((i * 7 + j * 3) % 5) as f32 + 1.0
            };
        }
    }
    for j in 0..r {
        for c in 0..k {
            a[j * k + c] =
                if orthogonal { if c % r == j { 0.5 } else { 0.0 } } else { ((j * 5 + c * 2) % 7) as f32 + 0.5 };
        }
    }
    let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let (ab, bb) = (bytes(&a), bytes(&b));
    let m = "encoder.layer.0.attention.self.query";
    let views = vec![
        (format!("base_model.model.{m}.lora_A.weight"), TensorView::new(Dtype::F32, vec![r, k], &ab).unwrap()),
        (format!("base_model.model.{m}.lora_B.weight"), TensorView::new(Dtype::F32, vec![d, r], &bb).unwrap()),
    ];
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("adapter_model.safetensors"), safetensors::serialize(views, None).unwrap()).unwrap();
}

#[test]
fn gram_of_orthogonal_factors_is_diagonal_and_of_generic_factors_is_not() {
    let tmp = tempfile::tempdir().unwrap();
    write_adapter(&tmp.path().join("o"), true);
    write_adapter(&tmp.path().join("g"), false);
    let o = gram_matrices(&tmp.path().join("o")).unwrap().unwrap();
    let g = gram_matrices(&tmp.path().join("g")).unwrap().unwrap();
    assert_eq!((o.rank, o.module.as_str()), (4, "encoder.layer.0.attention.self.query"));
    assert!(o.off_diagonal_b < 1e-12 && o.off_diagonal_a < 1e-12);
    assert!(g.off_diagonal_b > 0.3 && g.off_diagonal_a > 0.3, "{} {}", g.off_diagonal_b, g.off_diagonal_a);
    for i in 0..4 {
        assert!((o.btb[i * 4 + i] - 1.0).abs() < 1e-12 && (g.aat[i * 4 + i] - 1.0).abs() < 1e-12);
    }
    assert!(gram_matrices(&tmp.path().join("none")).unwrap().is_none());
}

#[test]
#[ignore = "reads the packaged assets: ./scripts/test fetches them and includes this test"]
fn a_comparison_gets_every_figure_in_png_and_svg_and_a_summary() {
    font();
    let tmp = tempfile::tempdir().unwrap();
    let cmp = tmp.path().join("cmp");
    write_run(&cmp.join("soft"), "soft", "tsfa", 8, 1.0);
    write_adapter(&cmp.join("soft/adapter"), true);
    write_run(&cmp.join("flasc"), "flasc", "fixed", 8, 0.0);
    write_adapter(&cmp.join("flasc/adapter"), false);
    let out = tmp.path().join("report");
    let files = report(&[cmp], &out).unwrap();
    for stem in ["accuracy", "accuracy_vs_bits", "rho", "delay", "queue", "covariance", "train_loss", "gram"] {
        for ext in ["png", "svg"] {
            assert!(files.figures.contains(&out.join(format!("{stem}.{ext}"))), "{stem}.{ext} missing");
        }
    }
    let png = image::open(out.join("accuracy.png")).unwrap().to_rgb8();
    assert_eq!(png.dimensions(), (900, 560));
    // Both runs' line colours (Okabe–Ito blue and vermillion) are on the canvas.
    for c in [[0u8, 114, 178], [213, 94, 0]] {
        assert!(png.pixels().any(|p| p.0 == c), "colour {c:?} not drawn");
    }
    let svg = std::fs::read_to_string(out.join("delay.svg")).unwrap();
    assert!(svg.contains("soft/tsfa (running mean)") && svg.contains("latency budget 2.300 s"));
    let md = std::fs::read_to_string(&files.markdown).unwrap();
    assert!(md.contains("| soft/tsfa |") && md.contains("| flasc/fixed |"));
    assert!(md.contains("![Test accuracy vs round](accuracy.png)") && md.contains("(gram.svg)"));
    assert!(md.contains("soft/tsfa: off-diagonal share 0.000 (BᵀB)"));
    assert!(!md.contains("makes them diagonal"), "the caption states what the data show, not a hope");
}

/// Sets round 0's delay of a run the tests wrote (a deep fade in the first round).
fn first_round_delay(dir: &Path, delay: f64) {
    let path = dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    lines[0]["delay_s"] = serde_json::json!(delay);
    // The running mean as the engine writes it.
    let mut sum = 0.0;
    for (t, l) in lines.iter_mut().enumerate() {
        sum += l["delay_s"].as_f64().unwrap();
        l["avg_delay_s"] = serde_json::json!(sum / (t + 1) as f64);
    }
    std::fs::write(&path, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
}

#[test]
#[ignore = "reads the packaged assets: ./scripts/test fetches them and includes this test"]
fn figures_keep_outliers_from_flattening_the_rest_and_say_what_their_data_show() {
    font();
    let tmp = tempfile::tempdir().unwrap();
    let cmp = tmp.path().join("cmp");
    write_run(&cmp.join("soft"), "soft", "tsfa", 8, 1.0);
    write_run(&cmp.join("flasc"), "flasc", "tsfa", 8, 0.0);
    first_round_delay(&cmp.join("soft"), 12.9);
    first_round_delay(&cmp.join("flasc"), 12.9);
    let out = tmp.path().join("report");
    let files = report(&[cmp], &out).unwrap();
    let md = std::fs::read_to_string(&files.markdown).unwrap();
    // The deep fades sit above the axis, and so do the running mean's first points, which start at them (the
    // axis is set by the rounds alone), said in the caption; the running mean's end is read from the data.
    assert!(md.contains("2 round(s) (up to 12.90 s) and the running mean's first 2 point(s) (up to 12.90 s)"), "{md}");
    assert!(md.contains("The running mean ends at flasc/tsfa 3.625 s (+58 % against τ̄ = 2.300 s)"), "{md}");
    // Both methods share the controller, so their ratio curves coincide: the later one is dashed and named.
    assert!(md.contains("soft/tsfa lies on flasc/tsfa (dashed)"), "{md}");
    // Every drawn series is in the legend, the per-round delay included.
    let svg = std::fs::read_to_string(out.join("delay.svg")).unwrap();
    assert!(svg.contains("soft/tsfa (per round)") && svg.contains("flasc/tsfa (running mean)"));
    // The axis top sits below the outlier: no tick label reaches 12.
    let ticks: Vec<f64> =
        svg.split("</text>").filter_map(|t| t.rsplit('>').next().and_then(|v| v.trim().parse::<f64>().ok())).collect();
    assert!(ticks.iter().all(|&t| t < 12.0), "{ticks:?}");
    // Rounds are labelled by whole numbers, each once.
    let svg = std::fs::read_to_string(out.join("rho.svg")).unwrap();
    let labels: Vec<&str> = svg.split("</text>").filter_map(|t| t.rsplit('>').next()).collect();
    for round in 1..=8 {
        let n = labels.iter().filter(|l| l.trim() == round.to_string()).count();
        assert!(n <= 1, "round {round} labelled {n} times: {labels:?}");
    }
    assert!(md.contains("Last evaluation: flasc/tsfa 0.850 (round 8), soft/tsfa 0.850 (round 8)"), "{md}");
}

#[test]
#[ignore = "reads the packaged assets: ./scripts/test fetches them and includes this test"]
fn fixed_controllers_have_no_queue_figure() {
    font();
    let tmp = tempfile::tempdir().unwrap();
    write_run(&tmp.path().join("a"), "rlora", "fixed", 3, 0.0);
    let files = report(&[tmp.path().join("a")], &tmp.path().join("r")).unwrap();
    assert!(!files.figures.iter().any(|p| p.ends_with("queue.png")));
    assert!(!files.figures.iter().any(|p| p.ends_with("gram.png")));
    assert!(files.figures.iter().any(|p| p.ends_with("delay.png")));
}

#[test]
fn bad_inputs_name_the_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = load_runs(std::slice::from_ref(&empty)).unwrap_err().to_string();
    assert!(e.contains("empty") && e.contains("expected a run directory"), "{e}");

    let run = tmp.path().join("run");
    write_run(&run, "soft", "tsfa", 3, 1.0);
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let broken: Vec<&str> = text.lines().collect();
    std::fs::write(run.join("metrics.jsonl"), format!("{}\n{{\"round\": 1, \"rho\": \"x\"}}\n", broken[0])).unwrap();
    let e = load_runs(std::slice::from_ref(&run)).unwrap_err();
    assert!(matches!(e, ReportError::Input { .. }));
    let e = e.to_string();
    assert!(e.contains("metrics.jsonl") && e.contains("line 2"), "{e}");

    std::fs::write(run.join("metrics.jsonl"), text).unwrap();
    std::fs::remove_file(run.join("summary.json")).unwrap();
    assert!(load_runs(&[run]).unwrap_err().to_string().contains("summary.json"));
}

#[test]
fn a_report_is_not_drawn_over_files_that_are_not_a_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    write_run(&run, "soft", "tsfa", 3, 1.0);
    // `--out` at a directory of the user's: refused before anything is written, naming the directory.
    let notes = tmp.path().join("notes");
    std::fs::create_dir_all(&notes).unwrap();
    std::fs::write(notes.join("report.md"), "# my notes\n").unwrap();
    std::fs::write(notes.join("accuracy.png"), b"my figure").unwrap();
    let e = report(std::slice::from_ref(&run), &notes).unwrap_err().to_string();
    assert!(e.contains("notes") && e.contains("holds files that are not a fedsoft report's"), "{e}");
    assert_eq!(std::fs::read_to_string(notes.join("report.md")).unwrap(), "# my notes\n");
    assert_eq!(std::fs::read(notes.join("accuracy.png")).unwrap(), b"my figure");
    assert!(!notes.join(".fedsoft-report").exists());
    // A file where the directory would go.
    let file = tmp.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let e = report(std::slice::from_ref(&run), &file).unwrap_err().to_string();
    assert!(e.contains("file") && e.contains("the report needs a directory here"), "{e}");
}

#[test]
#[ignore = "reads the packaged assets: ./scripts/test fetches them and includes this test"]
fn a_report_is_drawn_again_over_an_earlier_report_and_into_new_or_empty_directories() {
    font();
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    write_run(&run, "soft", "tsfa", 3, 1.0);
    let runs = std::slice::from_ref(&run);
    let out = tmp.path().join("report");
    let first = report(runs, &out).unwrap();
    assert!(out.join(".fedsoft-report").is_file());
    // Again over itself; over an interrupted one (marker and a figure, no report.md); over one drawn before the
    // marker existed (its report.md is fedsoft's); into an empty directory.
    report(runs, &out).unwrap();
    std::fs::remove_file(&first.markdown).unwrap();
    report(runs, &out).unwrap();
    std::fs::remove_file(out.join(".fedsoft-report")).unwrap();
    report(runs, &out).unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    report(runs, &empty).unwrap();
    // A report.md that is not fedsoft's still stops it.
    std::fs::remove_file(out.join(".fedsoft-report")).unwrap();
    std::fs::write(out.join("report.md"), "# mine\n").unwrap();
    assert!(report(runs, &out).is_err());
    assert_eq!(std::fs::read_to_string(out.join("report.md")).unwrap(), "# mine\n");
}
