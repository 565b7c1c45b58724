//! Reading run directories: the per-round metrics and the summary, with errors that name file and line.

use crate::ReportError;
use std::path::{Path, PathBuf};

/// A `metrics.jsonl` line and `summary.json`: the engine's own record types.
pub use fedsoft_records::{RoundRecord as Round, Summary};

/// One run as the report sees it.
#[derive(Debug, Clone)]
pub struct Run {
    pub dir: PathBuf,
    /// Legend label: method and controller, plus the directory name where those repeat.
    pub label: String,
    pub summary: Summary,
    pub rounds: Vec<Round>,
}

impl Run {
    /// `(round, accuracy)` of the evaluated rounds; rounds count from 1 in figures, and round 0 is the
    /// model before training (where the run measured it).
    pub fn accuracy(&self) -> Vec<(f64, f64)> {
        let initial = self.summary.initial_test_accuracy.map(|a| (0.0, a));
        initial
            .into_iter()
            .chain(self.rounds.iter().filter_map(|r| r.test_accuracy.map(|a| ((r.round + 1) as f64, a))))
            .collect()
    }

    /// `(cumulative paper-count uplink bits, accuracy)` of the evaluated rounds.
    pub fn accuracy_vs_bits(&self) -> Vec<(f64, f64)> {
        let mut total = 0u64;
        let mut out: Vec<(f64, f64)> = self.summary.initial_test_accuracy.map(|a| (0.0, a)).into_iter().collect();
        for r in &self.rounds {
            total += r.uplink_bits_paper;
            if let Some(a) = r.test_accuracy {
                out.push((total as f64, a));
            }
        }
        out
    }

    pub fn series(&self, f: impl Fn(&Round) -> Option<f64>) -> Vec<(f64, f64)> {
        self.rounds.iter().filter_map(|r| f(r).map(|v| ((r.round + 1) as f64, v))).collect()
    }
}

fn read_run(dir: &Path) -> Result<Run, ReportError> {
    let metrics = dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&metrics).map_err(|e| ReportError::input(&metrics, e))?;
    let mut rounds = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let r: Round =
            serde_json::from_str(line).map_err(|e| ReportError::input(&metrics, format!("line {}: {e}", i + 1)))?;
        rounds.push(r);
    }
    if rounds.is_empty() {
        return Err(ReportError::input(&metrics, "no rounds recorded yet"));
    }
    let summary_path = dir.join("summary.json");
    let summary: Summary = match std::fs::read_to_string(&summary_path) {
        Ok(s) => serde_json::from_str(&s).map_err(|e| ReportError::input(&summary_path, e))?,
        Err(e) => return Err(ReportError::input(&summary_path, e)),
    };
    Ok(Run { dir: dir.to_path_buf(), label: String::new(), summary, rounds })
}

/// Expands the inputs (a run directory, or a directory whose sub-directories are runs) and labels the runs.
pub fn load_runs(inputs: &[PathBuf]) -> Result<Vec<Run>, ReportError> {
    if inputs.is_empty() {
        return Err(ReportError::Input { path: "(none)".into(), detail: "give at least one run directory".into() });
    }
    let mut runs = Vec::new();
    for input in inputs {
        if input.join("metrics.jsonl").is_file() {
            runs.push(read_run(input)?);
            continue;
        }
        let entries = std::fs::read_dir(input).map_err(|e| ReportError::input(input, e))?;
        let mut dirs: Vec<PathBuf> =
            entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.join("metrics.jsonl").is_file()).collect();
        dirs.sort();
        if dirs.is_empty() {
            return Err(ReportError::input(
                input,
                "holds no metrics.jsonl, nor do its sub-directories: expected a run directory or a compare directory",
            ));
        }
        for d in dirs {
            runs.push(read_run(&d)?);
        }
    }
    let base: Vec<String> = runs.iter().map(|r| format!("{}/{}", r.summary.method, r.summary.controller)).collect();
    // The last path components that tell a run from the others with the same method and controller.
    let tail = |dir: &Path, n: usize| -> String {
        let parts: Vec<String> = dir.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
        parts[parts.len().saturating_sub(n)..].join("/")
    };
    for i in 0..runs.len() {
        let twins: Vec<usize> = (0..runs.len()).filter(|&j| base[j] == base[i]).collect();
        if twins.len() == 1 {
            runs[i].label = base[i].clone();
            continue;
        }
        let depth = (1..=runs[i].dir.components().count())
            .find(|&n| twins.iter().all(|&j| j == i || tail(&runs[j].dir, n) != tail(&runs[i].dir, n)))
            .unwrap_or(1);
        runs[i].label = format!("{} ({})", base[i], tail(&runs[i].dir, depth));
    }
    Ok(runs)
}

/// Sub-directories of the directory inputs that `load_runs` passes over because they hold no `metrics.jsonl`
/// (a nested comparison, an unfinished run, a report written earlier), so a caller can say so instead of
/// leaving them out without a word. `ignore` (the report's own output) is not listed.
pub fn skipped_dirs(inputs: &[PathBuf], ignore: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for input in inputs.iter().filter(|i| !i.join("metrics.jsonl").is_file()) {
        let Ok(entries) = std::fs::read_dir(input) else { continue };
        let mut dirs: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_dir() && !p.join("metrics.jsonl").is_file() && p.as_path() != ignore)
            .collect();
        dirs.sort();
        out.extend(dirs);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_run(dir: &Path, method: &str) {
        std::fs::create_dir_all(dir).unwrap();
        let round = serde_json::json!({
            "round": 0, "method": method, "controller": "fixed", "rank": 4, "rho": 0.5, "delay_s": 1.0,
            "avg_delay_s": 1.0, "queue": 0.0, "uplink_bits_paper": 1, "uplink_bits_encoded": 1, "train_loss": 1.0,
            "kept_entries": 1, "clients": [0], "dropped": 0, "dense_delay_s": 2.0, "wall_s": 1.0,
            "time": {"train_s": 0.0, "sparsify_s": 0.0, "aggregate_s": 0.0, "eval_s": 0.0, "other_s": 0.0},
        });
        std::fs::write(dir.join("metrics.jsonl"), format!("{round}\n")).unwrap();
        let summary = serde_json::json!({
            "name": "t", "method": method, "controller": "fixed", "rounds": 1, "completed": true, "num_classes": 2,
            "rank": 4, "avg_delay_s": 1.0, "latency_budget_s": 1.0, "uplink_bits_paper": 1, "uplink_bits_encoded": 1,
            "uploads": 1, "wall_s": 1.0, "out_dir": "x",
        });
        std::fs::write(dir.join("summary.json"), summary.to_string()).unwrap();
    }

    #[test]
    fn runs_of_one_method_are_told_apart_by_as_much_of_their_path_as_it_takes() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b, c) = (tmp.path().join("with/seed-1"), tmp.path().join("without/seed-1"), tmp.path().join("x/flasc"));
        fake_run(&a, "ilora");
        fake_run(&b, "ilora");
        fake_run(&c, "flasc");
        let runs = load_runs(&[a, b, c]).unwrap();
        let labels: Vec<&str> = runs.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(labels, ["ilora/fixed (with/seed-1)", "ilora/fixed (without/seed-1)", "flasc/fixed"]);
    }

    #[test]
    fn the_model_before_training_is_round_zero_of_the_accuracy_curves() {
        let tmp = tempfile::tempdir().unwrap();
        let (old, new) = (tmp.path().join("old"), tmp.path().join("new"));
        fake_run(&old, "soft");
        fake_run(&new, "soft");
        let mut runs = load_runs(&[old, new.clone()]).unwrap();
        runs[0].rounds[0].test_accuracy = Some(0.6);
        runs[1].rounds[0].test_accuracy = Some(0.6);
        runs[1].summary.initial_test_accuracy = Some(0.1);
        // A run written before the initial evaluation existed has no round-0 point.
        assert_eq!(runs[0].accuracy(), vec![(1.0, 0.6)]);
        assert_eq!(runs[1].accuracy(), vec![(0.0, 0.1), (1.0, 0.6)]);
        assert_eq!(runs[1].accuracy_vs_bits(), vec![(0.0, 0.1), (1.0, 0.6)]);
    }

    #[test]
    fn directories_without_runs_are_named_but_the_output_is_not() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        for d in ["soft", "nested/flasc", "report"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("soft/metrics.jsonl"), "").unwrap();
        std::fs::write(root.join("nested/flasc/metrics.jsonl"), "").unwrap();
        let inputs = [root.to_path_buf()];
        assert_eq!(skipped_dirs(&inputs, &root.join("report")), vec![root.join("nested")]);
        assert_eq!(skipped_dirs(&inputs, Path::new("elsewhere")), vec![root.join("nested"), root.join("report")]);
        // A run directory itself has nothing skipped.
        assert!(skipped_dirs(&[root.join("soft")], Path::new("x")).is_empty());
    }
}
