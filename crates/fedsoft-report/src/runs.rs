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
    /// `(round, accuracy)` of the evaluated rounds; rounds count from 1 in figures.
    pub fn accuracy(&self) -> Vec<(f64, f64)> {
        self.rounds.iter().filter_map(|r| r.test_accuracy.map(|a| ((r.round + 1) as f64, a))).collect()
    }

    /// `(cumulative paper-count uplink bits, accuracy)` of the evaluated rounds.
    pub fn accuracy_vs_bits(&self) -> Vec<(f64, f64)> {
        let mut total = 0u64;
        let mut out = Vec::new();
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
    for i in 0..runs.len() {
        let repeated = base.iter().filter(|b| **b == base[i]).count() > 1;
        let name = runs[i].dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        runs[i].label = if repeated { format!("{} ({name})", base[i]) } else { base[i].clone() };
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
