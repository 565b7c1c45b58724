//! `fedsoft plan` as a user runs it.

mod common;

use common::fedsoft;

#[test]
fn plan_prints_the_offline_table_and_r_star() {
    let (ok, out, err) = fedsoft(&["plan", "configs/paper-fig3c-vit-b16.toml"]);
    assert!(ok, "{err}");
    assert!(out.contains("chosen rank r* = 8"), "{out}");
    assert!(out.contains("tau_bar = 2.2733 s"), "{out}");
    assert!(out.contains("8.6000 <- r*"), "{out}");
}

#[test]
fn plan_json_and_simulation() {
    let (ok, out, err) = fedsoft(&[
        "plan",
        "configs/paper-fig3c-vit-b16.toml",
        "--json",
        "--simulate",
        "500",
        "--kappa",
        "1,10",
        "--seeds",
        "3",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["offline"]["best_rank"], 8);
    assert_eq!(v["offline"]["rows"].as_array().unwrap().len(), 7);
    let sims = v["simulations"].as_array().unwrap();
    // Two Lyapunov rows (one per kappa), then the horizon rule, each over 3 seeds.
    assert_eq!(sims.len(), 3);
    assert_eq!((sims[0]["rounds"].as_u64(), sims[0]["seeds"].as_u64()), (Some(500), Some(3)));
    assert_eq!((sims[0]["rule"].as_str(), sims[2]["rule"].as_str()), (Some("lyapunov"), Some("horizon")));
    assert!(sims[0]["avg_rho"].as_f64().unwrap() >= sims[1]["avg_rho"].as_f64().unwrap());
    let tau_bar = v["tau_bar_s"].as_f64().unwrap();
    assert!((sims[2]["avg_delay_s"].as_f64().unwrap() / tau_bar - 1.0).abs() < 0.05, "{}", sims[2]);
}

#[test]
fn plan_defaults_to_the_embedded_config_and_summarises_a_thousand_seeds_stably() {
    let (ok, out, err) = fedsoft(&["plan", "--json", "--simulate", "20", "--kappa", "1"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["name"], "default");
    let sims = v["simulations"].as_array().unwrap();
    let tau_bar = v["tau_bar_s"].as_f64().unwrap();
    for s in sims {
        assert_eq!((s["seeds"].as_u64(), s["batches"].as_u64()), (Some(1000), Some(10)), "{s}");
        let (median, mean) = (s["median_delay_s"].as_f64().unwrap(), s["avg_delay_s"].as_f64().unwrap());
        let medians = s["batch_median_range_s"].as_array().unwrap();
        let (lo, hi) = (medians[0].as_f64().unwrap(), medians[1].as_f64().unwrap());
        assert!(lo <= median && median <= hi, "{s}");
        // The heavy tail pulls the mean above the median.
        assert!(mean > median, "{s}");
    }
    // The horizon rule spends the budget: half the draws end at or below it, most within 5 %.
    let horizon = &sims[1];
    assert_eq!(horizon["rule"], "horizon");
    assert!((horizon["median_delay_s"].as_f64().unwrap() / tau_bar - 1.0).abs() < 0.01, "{horizon}");
    assert!(horizon["share_within_5pct"].as_f64().unwrap() > 0.9, "{horizon}");
    let (ok, text, err) = fedsoft(&["plan", "--simulate", "20", "--seeds", "40", "--kappa", "1"]);
    assert!(ok, "{err}");
    assert!(
        text.contains("median [s]") && text.contains("batch medians (10)") && text.contains("no finite mean"),
        "{text}"
    );
}

#[test]
fn plan_over_all_integer_ranks_picks_11() {
    let (ok, out, err) = fedsoft(&[
        "plan",
        "configs/paper-fig3c-vit-b16.toml",
        "--json",
        "--set",
        "tsfa.candidate_ranks=[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,50,51,52,53,54,55,56,57,58,59,60,61,62,63,64]",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["offline"]["best_rank"], 11);
}

#[test]
fn errors_name_the_file_or_field_and_exit_non_zero() {
    let (ok, _, err) = fedsoft(&["plan", "configs/does-not-exist.toml"]);
    assert!(!ok && err.contains("configs/does-not-exist.toml"), "{err}");
    let (ok, _, err) = fedsoft(&["plan", "configs/paper-fig3c-vit-b16.toml", "--set", "clients.per_round=500"]);
    assert!(!ok && err.contains("clients.per_round"), "{err}");
    let (ok, _, err) = fedsoft(&["plan", "configs/paper-fig3c-vit-b16.toml", "--set", "tsfa.rho_min=0.995"]);
    assert!(!ok && err.contains("tsfa.rho_min"), "{err}");
    assert!(!err.contains("panicked"));
}

/// A link whose every setting is in range but whose product is no radio (a bandwidth of 1e-300 Hz, a mean
/// SNR of -300 dB) is refused by plan and run alike, naming the link and the delay it gives, instead of
/// `plan` printing 300-digit delays and `V = inf` with exit code 0 and `run` blaming `tsfa.v`.
#[test]
fn an_impossible_link_is_refused_by_plan_and_run_naming_the_link() {
    let tmp = tempfile::tempdir().unwrap();
    for (set, says) in [
        ("wireless.bandwidth_hz=1e-300", "bandwidth_hz = 1e-300 with the cell's mean SNRs (10.0 to 10.0 dB)"),
        ("wireless.bandwidth_hz=1e300", "round delay of 4.547e-294 s"),
        ("wireless.channel.mean_snr_db=-300", "mean SNRs (-300.0 to -300.0 dB)"),
    ] {
        let out = tmp.path().join(set.replace(['.', '='], "-"));
        for args in [vec!["plan", "--set", set], vec!["run", "--set", set, "--out", out.to_str().unwrap()]] {
            let (ok, stdout, err) = fedsoft(&args);
            assert!(!ok, "{args:?} was accepted:\n{stdout}");
            assert!(err.contains("error: wireless: ") && err.contains(says), "{args:?}: {err}");
            assert!(err.contains("the planner works with delays of 1e-9 to 1e9 s"), "{err}");
            assert!(!err.contains("tsfa.v"), "{err}");
        }
    }
}

#[test]
fn help_explains_the_commands() {
    let (ok, out, _) = fedsoft(&["plan", "--help"]);
    assert!(ok);
    assert!(out.contains("offline table") && out.contains("--simulate") && out.contains("--set"), "{out}");
}

#[test]
fn run_refuses_resume_without_a_directory_and_bad_configs_before_training() {
    let (ok, _, err) = fedsoft(&["run", "--resume"]);
    assert!(!ok && err.contains("--resume needs --out"), "{err}");
    let (ok, _, err) = fedsoft(&["run", "--set", "method.name=\"topk\""]);
    assert!(!ok && err.contains("topk"), "{err}");
    let (ok, _, err) = fedsoft(&["run", "configs/paper-fig3c-vit-b16.toml"]);
    assert!(!ok && (err.contains("data.path") || err.contains("model.path")), "{err}");
    let (ok, out, _) = fedsoft(&["run", "--help"]);
    assert!(ok && out.contains("--resume") && out.contains("metrics.jsonl"), "{out}");
}

#[test]
fn report_names_a_directory_that_holds_no_run() {
    let tmp = std::env::temp_dir().join(format!("fedsoft-report-cli-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let (ok, _, err) = fedsoft(&["report", tmp.to_str().unwrap()]);
    assert!(!ok && err.contains(tmp.to_str().unwrap()) && err.contains("metrics.jsonl"), "{err}");
    let (ok, _, err) = fedsoft(&["report"]);
    assert!(!ok && err.contains("RUNS"), "{err}");
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn a_simulation_of_no_rounds_is_refused_instead_of_printing_zeros() {
    let (ok, out, err) = fedsoft(&["plan", "--simulate", "0", "--seeds", "10"]);
    assert!(!ok, "{out}");
    assert!(err.contains("--simulate") && err.contains("0 is not in 1..=1000000"), "{err}");
}
