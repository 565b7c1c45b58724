//! `fedsoft reproduce` as a user runs it, shrunk with `--set` to a few seconds: runs per variant and seed, a
//! record per figure, a page written only from the records, `--check` catching a hand edit, damaged markers and
//! runs of a config the presets no longer give, runs reused only under the same config, fewer seeds than a
//! record holds refused, a user's directory where a run goes left alone, and ratios FedLoDrop cannot keep whole
//! refused.

mod common;

use common::{fedsoft, require_assets};

const SMALL: [&str; 10] = [
    "--set",
    "rounds.eval_every=1",
    "--set",
    "data.samples_per_client=8",
    "--set",
    "data.test_samples=16",
    "--set",
    "clients.per_round=2",
    "--set",
    "rounds.checkpoint_every=1",
];

#[test]
#[ignore = "reads the packaged assets: ./scripts/test fetches them and includes this test"]
fn a_small_reproduction_writes_a_page_that_only_its_records_can_pass() {
    require_assets(&["dinov2", "fashion-mnist", "dejavu-fonts"]);
    let tmp = tempfile::tempdir().unwrap();
    let (out, page) = (tmp.path().join("runs"), tmp.path().join("docs/results.md"));
    let (out_s, page_s) = (out.to_str().unwrap(), page.to_str().unwrap());
    let with_rounds = |rounds: &str| -> Vec<String> {
        let mut a: Vec<String> = ["reproduce", "fig4", "--seeds", "2", "--out", out_s, "--page", page_s, "--set"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.push(format!("rounds.total={rounds}"));
        a.extend(SMALL.iter().map(|s| s.to_string()));
        a
    };
    let args = with_rounds("2");
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let results = page.parent().unwrap().join("results");
    // Where a run goes, a directory fedsoft did not write: refused, naming it, and left as it was.
    let theirs = out.join("fig4/with/seed-1");
    std::fs::create_dir_all(&theirs).unwrap();
    std::fs::write(theirs.join("notes.txt"), "mine").unwrap();
    let (ok, _, err) = fedsoft(&argv);
    assert!(!ok && err.contains("seed-1") && err.contains("holds no fedsoft-run.json, so fedsoft did not"), "{err}");
    assert_eq!(std::fs::read_to_string(theirs.join("notes.txt")).unwrap(), "mine");
    std::fs::remove_dir_all(&theirs).unwrap();

    let (ok, stdout, err) = fedsoft(&argv);
    assert!(ok, "{err}");
    assert!(stdout.contains("4 runs made, 0 reused") && stdout.contains("page written"), "{stdout}");
    assert!(!results.join("progress").exists(), "a complete figure leaves no progress file");
    for v in ["with", "without"] {
        for s in [1, 2] {
            assert!(out.join(format!("fig4/{v}/seed-{s}/summary.json")).is_file());
        }
    }
    assert!(results.join("fig4.json").is_file() && results.join("fig4.png").is_file());
    let text = std::fs::read_to_string(&page).unwrap();
    assert!(text.starts_with("# Which of the paper's claims hold"), "{text}");
    // Every claim of the registry is listed; figures without runs say so.
    assert!(text.contains("| fig3 | 5 claims, not run yet (`fedsoft reproduce fig3`)"), "{text}");
    assert!(text.contains("accuracy nearly identical with and without it"), "{text}");
    assert!(text.contains("“Adding the orthogonal loss results in negligible performance degradation"), "{text}");
    // Two seeds are too few for a verdict; the setting is the one actually run.
    let section = &text[text.find("<!-- reproduce:fig4 -->").unwrap()..];
    assert_eq!(section.matches("**not judged**").count(), 2, "{section}");
    assert!(section.contains("2 rounds, evaluated every 1 on 16 test samples"), "{section}");
    assert!(section.contains("fedsoft reproduce fig4 --seeds 2 --set 'rounds.total=2'"), "{section}");

    let check = ["reproduce", "--check", "--page", page_s];
    let (ok, stdout, err) = fedsoft(&check);
    assert!(ok && stdout.contains("every line and figure"), "{err}");

    // A stored run made under another config than its preset and overrides resolve to now is named: the page
    // would describe a setting that `reproduce` no longer runs.
    let record_path = results.join("fig4.json");
    let record = std::fs::read_to_string(&record_path).unwrap();
    let mut edited: serde_json::Value = serde_json::from_str(&record).unwrap();
    edited["variants"][1]["runs"][1]["config_sha256"] = serde_json::json!("0".repeat(64));
    std::fs::write(&record_path, serde_json::to_string_pretty(&edited).unwrap()).unwrap();
    let (ok, _, err) = fedsoft(&check);
    assert!(!ok && err.contains("fig4.json: 1 run (first: without seed 2, stored digest 000000000000,"), "{err}");
    std::fs::write(&record_path, record).unwrap();

    // One verdict edited by hand: the check names the line.
    let line = text.lines().position(|l| l.starts_with("| fig4 |") && l.contains("**not judged**")).unwrap() + 1;
    let edited: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, l)| if i + 1 == line { l.replace("**not judged**", "**holds**") } else { l.to_string() })
        .collect();
    std::fs::write(&page, edited.join("\n") + "\n").unwrap();
    let (ok, _, err) = fedsoft(&check);
    assert!(!ok && err.contains(&format!("line {line} is not what the stored runs give")), "{err}");
    // A duplicated section marker is named as such.
    std::fs::write(&page, format!("{text}<!-- reproduce:fig4 -->\n")).unwrap();
    let (ok, _, err) = fedsoft(&check);
    assert!(!ok && err.contains("a second section \"fig4\""), "{err}");

    // A figure no record backs is flagged by the check and removed by the next write.
    std::fs::write(&page, &text).unwrap();
    std::fs::write(results.join("fig7.png"), b"old").unwrap();
    let (ok, _, err) = fedsoft(&check);
    assert!(!ok && err.contains("fig7.png: has no record behind it"), "{err}");

    // Fewer seeds than the record holds under the same config would drop finished runs from it: refused before
    // anything is written, naming the record and the seed it would lose.
    assert_eq!(argv[2..4], ["--seeds", "2"]);
    let mut fewer = argv.clone();
    fewer[3] = "1";
    let refused = |err: &str, file: &str| {
        err.contains(&format!("fig4: {file} holds finished runs of seed 2 under this same config"))
            && err.contains("--seeds 1 would drop them")
    };
    let (ok, _, err) = fedsoft(&fewer);
    assert!(!ok && refused(&err, results.join("fig4.json").to_str().unwrap()), "{err}");
    assert_eq!(std::fs::read_to_string(&page).unwrap(), text);
    // The same where the runs are only in the progress file of an unfinished figure (which completing it at
    // fewer seeds would remove).
    let record: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&record_path).unwrap()).unwrap();
    let stored: Vec<serde_json::Value> = record["variants"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|v| {
            v["runs"].as_array().unwrap().iter().map(|r| serde_json::json!({"variant": v["label"], "run": r}))
        })
        .collect();
    let progress = serde_json::json!({"schema": record["schema"], "figure": "fig4", "runs": stored});
    std::fs::create_dir_all(results.join("progress")).unwrap();
    std::fs::write(results.join("progress/fig4.json"), progress.to_string()).unwrap();
    std::fs::rename(&record_path, tmp.path().join("fig4.json")).unwrap();
    let (ok, _, err) = fedsoft(&fewer);
    assert!(!ok && refused(&err, results.join("progress/fig4.json").to_str().unwrap()), "{err}");
    std::fs::rename(tmp.path().join("fig4.json"), &record_path).unwrap();
    std::fs::remove_dir_all(results.join("progress")).unwrap();

    // Again under the same config, with --seeds left out: the record's 2 seeds, nothing retrained, and the page
    // whole again.
    let stamp = std::fs::metadata(out.join("fig4/with/seed-1/metrics.jsonl")).unwrap().modified().unwrap();
    let seeds_left_out: Vec<&str> = argv[..2].iter().chain(&argv[4..]).copied().collect();
    let (ok, stdout, err) = fedsoft(&seeds_left_out);
    assert!(
        ok && stdout.contains("0 runs made, 0 reused from run directories, 4 from stored records"),
        "{stdout}{err}"
    );
    assert_eq!(std::fs::metadata(out.join("fig4/with/seed-1/metrics.jsonl")).unwrap().modified().unwrap(), stamp);
    assert_eq!(std::fs::read_to_string(&page).unwrap(), text);
    assert!(!results.join("fig7.png").exists());
    let (ok, _, err) = fedsoft(&check);
    assert!(ok, "{err}");

    // A fresh checkout has the tracked page and records but no run directories: the stored runs serve.
    std::fs::rename(&out, tmp.path().join("runs-kept")).unwrap();
    let (ok, stdout, err) = fedsoft(&argv);
    assert!(
        ok && stdout.contains("0 runs made, 0 reused from run directories, 4 from stored records"),
        "{stdout}{err}"
    );
    assert_eq!(std::fs::read_to_string(&page).unwrap(), text);
    std::fs::rename(tmp.path().join("runs-kept"), &out).unwrap();

    // Under another config the runs are made again, saying why, and the page describes the new setting.
    let args3 = with_rounds("3");
    let argv3: Vec<&str> = args3.iter().map(String::as_str).collect();
    let (ok, stdout, err) = fedsoft(&argv3);
    assert!(ok && stdout.contains("4 runs made, 0 reused"), "{stdout}{err}");
    assert!(err.contains("was run under another config"), "{err}");
    let text3 = std::fs::read_to_string(&page).unwrap();
    assert!(text3.contains("3 rounds, evaluated every 1") && text3.contains("rounds.total=3"), "{text3}");
    let metrics = std::fs::read_to_string(out.join("fig4/without/seed-2/metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 3);

    // A --page naming a file that is not a results page is refused before any run, and the file kept.
    let notes = tmp.path().join("notes.md");
    std::fs::write(&notes, "# my notes\n").unwrap();
    let mut on_notes = args3.clone();
    on_notes[7] = notes.to_str().unwrap().into();
    let argv_notes: Vec<&str> = on_notes.iter().map(String::as_str).collect();
    let (ok, _, err) = fedsoft(&argv_notes);
    assert!(!ok && err.contains("notes.md") && err.contains("is not a results page"), "{err}");
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "# my notes\n");

    let (ok, _, err) = fedsoft(&["reproduce", "fig9", "--out", out_s, "--page", page_s]);
    assert!(!ok && err.contains("unknown figure \"fig9\"") && err.contains("fig5-6"), "{err}");
}

#[test]
#[ignore = "reads the packaged assets: ./scripts/test fetches them and includes this test"]
fn an_interrupted_figure_resumes_from_its_stored_runs_without_the_run_directories() {
    require_assets(&["dinov2", "fashion-mnist", "dejavu-fonts"]);
    let tmp = tempfile::tempdir().unwrap();
    let (out, page) = (tmp.path().join("runs"), tmp.path().join("docs/results.md"));
    let mut args: Vec<String> =
        ["reproduce", "fig4", "--seeds", "2", "--out", out.to_str().unwrap(), "--page", page.to_str().unwrap()]
            .iter()
            .map(|s| s.to_string())
            .collect();
    args.extend(["--set", "rounds.total=2"].iter().chain(SMALL.iter()).map(|s| s.to_string()));
    let progress = tmp.path().join("docs/results/progress/fig4.json");

    // Stopped once the first run is kept, as a session that ends mid-figure is.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fedsoft"))
        .args(&args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while !progress.is_file() {
        assert!(std::time::Instant::now() < deadline, "no run was kept within 5 minutes");
        assert!(child.try_wait().unwrap().is_none(), "reproduce ended before keeping its first run");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let kept: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&progress).unwrap()).unwrap();
    let kept = kept["runs"].as_array().unwrap().len();
    assert!((1..4).contains(&kept), "{kept} runs kept");
    assert!(!tmp.path().join("docs/results/fig4.json").exists(), "no record for an unfinished figure");

    // Elsewhere, with the records but none of the run directories: only the missing runs are made.
    std::fs::remove_dir_all(&out).unwrap();
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, stdout, err) = fedsoft(&argv);
    assert!(ok, "{err}");
    let expected = format!("{} runs made, 0 reused from run directories, {kept} from stored records", 4 - kept);
    assert!(stdout.contains(&expected), "{stdout}");
    assert!(!progress.exists() && !progress.parent().unwrap().exists(), "the figure is complete");

    // The resumed figure is the figure run straight through: the same records (where and how long aside), the
    // same page.
    let record = |path: std::path::PathBuf| -> serde_json::Value {
        let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        for variant in v["variants"].as_array_mut().unwrap() {
            for run in variant["runs"].as_array_mut().unwrap() {
                let summary = run["summary"].as_object_mut().unwrap();
                summary.remove("wall_s");
                summary.remove("out_dir");
            }
        }
        v
    };
    let resumed = record(tmp.path().join("docs/results/fig4.json"));
    let text = std::fs::read_to_string(&page).unwrap();
    let straight = tempfile::tempdir().unwrap();
    let mut args2 = args.clone();
    args2[5] = straight.path().join("runs").to_str().unwrap().into();
    args2[7] = straight.path().join("docs/results.md").to_str().unwrap().into();
    let argv2: Vec<&str> = args2.iter().map(String::as_str).collect();
    let (ok, _, err) = fedsoft(&argv2);
    assert!(ok, "{err}");
    assert_eq!(record(straight.path().join("docs/results/fig4.json")), resumed);
    assert_eq!(std::fs::read_to_string(straight.path().join("docs/results.md")).unwrap(), text);
}

#[test]
#[ignore = "reads the packaged assets: ./scripts/test fetches them and includes this test"]
fn a_ratio_that_splits_a_rank_component_is_refused_before_any_run() {
    require_assets(&["dinov2", "fashion-mnist", "dejavu-fonts"]);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("runs");
    let (ok, _, err) =
        fedsoft(&["reproduce", "fig3", "--out", out.to_str().unwrap(), "--set", "controller.rho=0.9", "--seeds", "1"]);
    assert!(!ok, "{err}");
    assert!(
        err.contains("controller.rho = 0.9 at lora.rank = 8 keeps (1 - rho) r = 0.800 rank components")
            && err.contains("rho = 0.875, 0.75, 0.625"),
        "{err}"
    );
    assert!(!out.exists(), "nothing may run");
}

#[test]
fn check_names_a_page_that_does_not_exist_and_refuses_figures() {
    let tmp = tempfile::tempdir().unwrap();
    let page = tmp.path().join("nowhere/results.md");
    let (ok, _, err) = fedsoft(&["reproduce", "--check", "fig4", "--page", page.to_str().unwrap()]);
    assert!(!ok && err.contains("--check runs nothing"), "{err}");
    let (ok, _, err) = fedsoft(&["reproduce"]);
    assert!(!ok && err.contains("name a figure to reproduce"), "{err}");
}

#[test]
#[ignore = "reads the packaged assets: ./scripts/test fetches them and includes this test"]
fn a_power_sweep_gets_its_section_and_its_runs_serve_the_figure_it_chooses_for() {
    require_assets(&["dinov2", "fashion-mnist", "dejavu-fonts"]);
    let tmp = tempfile::tempdir().unwrap();
    let (out, page) = (tmp.path().join("runs"), tmp.path().join("results.md"));
    let args = |figure: &str| -> Vec<String> {
        let mut a: Vec<String> =
            ["reproduce", figure, "--seeds", "1", "--out", out.to_str().unwrap(), "--page", page.to_str().unwrap()]
                .iter()
                .map(|s| s.to_string())
                .collect();
        a.extend(SMALL.iter().map(|s| s.to_string()));
        // The Dirichlet setting needs enough samples for every client to hold its minimum.
        a.extend(["--set", "rounds.total=1", "--set", "data.samples_per_client=48"].iter().map(|s| s.to_string()));
        a
    };
    let sweep = args("fig3-power");
    let (ok, stdout, err) = fedsoft(&sweep.iter().map(String::as_str).collect::<Vec<_>>());
    // With rounds and samples forced equal, settings a and b are one config: b's runs are a's, copied.
    assert!(ok && stdout.contains("6 runs made, 3 reused"), "{stdout}{err}");
    assert!(err.contains("fig3-power b-ilora seed 1: the same config was already run in"), "{err}");
    let text = std::fs::read_to_string(&page).unwrap();
    let section = &text[text.find("<!-- reproduce:fig3-power -->").unwrap()..];
    assert!(section.contains("## Choosing Fig. 3's CPU setting: a power sweep"), "{section}");
    // One seed gives no spread, so no setting is chosen; the sweep judges no claim of the paper.
    assert!(section.contains("No setting has a power yet"), "{section}");
    assert!(!text.contains("| fig3-power |"), "{text}");

    // Fig. 3 at the same setting reuses the sweep's ILoRA, RLoRA and FedLoDrop runs instead of training them.
    let fig3 = args("fig3");
    let (ok, stdout, err) = fedsoft(&fig3.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok && stdout.contains("fig3: 3 runs made, 3 reused"), "{stdout}{err}");
    assert!(err.contains("fig3 ilora seed 1: the same config was already run in"), "{err}");
    let a = std::fs::read_to_string(out.join("fig3-power/a-ilora/seed-1/metrics.jsonl")).unwrap();
    assert_eq!(std::fs::read_to_string(out.join("fig3/ilora/seed-1/metrics.jsonl")).unwrap(), a);
    let (ok, _, err) = fedsoft(&["reproduce", "--check", "--page", page.to_str().unwrap()]);
    assert!(ok, "{err}");
}
