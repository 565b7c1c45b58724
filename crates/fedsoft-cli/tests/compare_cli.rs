//! `fedsoft compare` as a user runs it, shrunk with `--set` to seconds: the methods see the same clients and
//! channels, one seed keeps its directory per method, and `--seeds N` pairs the methods seed by seed and judges
//! each against the first with the results page's statistics, recomputed here from the runs' own files.

mod common;

use common::{fedsoft, require_assets};
use std::path::Path;

const SMALL: [&str; 10] = [
    "--set",
    "rounds.total=3",
    "--set",
    "data.samples_per_client=8",
    "--set",
    "data.test_samples=32",
    "--set",
    "clients.per_round=2",
    "--set",
    "rounds.eval_every=1",
];

fn compare(out: &Path, seeds: &str) -> (bool, String, String) {
    let mut args = vec!["compare", "--methods", "soft,rlora", "--seeds", seeds, "--out", out.to_str().unwrap()];
    args.extend(SMALL);
    fedsoft(&args)
}

fn jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The scheduled clients and their channels, round by round.
fn channels(run: &Path) -> Vec<(u64, u64, String, String)> {
    jsonl(&run.join("clients.jsonl"))
        .iter()
        .map(|c| {
            (
                c["round"].as_u64().unwrap(),
                c["client"].as_u64().unwrap(),
                c["fading"].to_string(),
                c["snr_db"].to_string(),
            )
        })
        .collect()
}

/// Final accuracy as the page defines it: the mean of the last three evaluations in `metrics.jsonl`.
fn final_accuracy(run: &Path) -> f64 {
    let acc: Vec<f64> = jsonl(&run.join("metrics.jsonl")).iter().filter_map(|r| r["test_accuracy"].as_f64()).collect();
    let last = &acc[acc.len() - 3..];
    last.iter().sum::<f64>() / 3.0
}

#[test]
#[ignore = "reads the packaged assets: ./scripts/test fetches them and includes this test"]
fn one_seed_gives_each_method_its_directory_and_the_same_clients_and_channels() {
    require_assets(&["dinov2", "fashion-mnist", "dejavu-fonts"]);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("cmp");
    let (ok, stdout, err) = compare(&out, "1");
    assert!(ok, "{err}");
    assert!(stdout.contains("one directory per method, comparison.json"), "{stdout}");
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(out.join("comparison.json")).unwrap()).unwrap();
    assert_eq!(rows.iter().map(|r| r["method"].as_str().unwrap()).collect::<Vec<_>>(), ["soft", "rlora"]);
    let soft = channels(&out.join("soft"));
    assert_eq!(soft.len(), 3 * 2, "two clients in each of three rounds");
    assert_eq!(soft, channels(&out.join("rlora")));
    assert!(out.join("report/report.md").is_file());
}

#[test]
#[ignore = "reads the packaged assets: ./scripts/test fetches them and includes this test"]
fn paired_seeds_judge_each_method_against_the_first_as_the_results_page_does() {
    require_assets(&["dinov2", "fashion-mnist", "dejavu-fonts"]);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("cmp");
    let (ok, stdout, err) = compare(&out, "5");
    assert!(ok, "{err}");
    // Seeds 1-5 of the default's seed 1: one run directory per method and seed, each run under its own seed, the
    // two methods of a seed on the same clients and channels, different seeds on different ones.
    for seed in 1..=5 {
        for m in ["soft", "rlora"] {
            let cfg = std::fs::read_to_string(out.join(format!("{m}/seed-{seed}/config.toml"))).unwrap();
            assert!(cfg.contains(&format!("seed = {seed}\n")), "{m} seed {seed}");
        }
        let dir = |m: &str| out.join(format!("{m}/seed-{seed}"));
        assert_eq!(channels(&dir("soft")), channels(&dir("rlora")), "seed {seed}");
    }
    assert_ne!(channels(&out.join("soft/seed-1")), channels(&out.join("soft/seed-2")));
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(out.join("comparison.json")).unwrap()).unwrap();
    assert_eq!(rows.len(), 10);

    // The table's paired difference, recomputed from the runs' metrics: mean of soft − rlora over the five seeds.
    let d: Vec<f64> = (1..=5)
        .map(|s| {
            final_accuracy(&out.join(format!("soft/seed-{s}"))) - final_accuracy(&out.join(format!("rlora/seed-{s}")))
        })
        .collect();
    let mean = d.iter().sum::<f64>() / 5.0;
    let row = stdout.lines().find(|l| l.starts_with("| rlora | 5 |")).unwrap_or_else(|| panic!("{stdout}"));
    let cells: Vec<&str> = row.split(" | ").collect();
    assert!(cells[5].starts_with(&format!("{:+.2} [", 100.0 * mean)), "{row} (mean {mean})");
    // Five seeds are enough for a verdict, and the verdict is one of the page's words; with one comparison,
    // Holm's correction is the plain test.
    assert!(["**holds**", "**does not hold**", "**inconclusive**"].contains(&cells[7]), "{row}");
    let corrected = if cells[7] == "**holds**" { "**holds** |" } else { "– |" };
    assert_eq!(cells[8], corrected, "{row}");
    let report = std::fs::read_to_string(out.join("report/report.md")).unwrap();
    assert!(report.starts_with("# fedsoft report\n") && report.contains(row), "{report}");
    for ext in ["png", "svg"] {
        assert!(out.join(format!("report/accuracy_over_seeds.{ext}")).is_file());
    }
}
