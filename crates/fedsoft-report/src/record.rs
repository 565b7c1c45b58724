//! What a section of the results page is computed from, kept beside the page as `results/<figure>.json`.
//!
//! `fedsoft reproduce` writes one such file per figure after its runs; the page, its tables, verdicts and
//! figures are then a pure function of these files, so `fedsoft reproduce --check` can re-derive every line
//! and a hand edit of the page is caught. Each run keeps its seed, the digest of its resolved config, its
//! per-round test metrics and its summary: enough to recompute any metric a claim uses.

use crate::ReportError;
use crate::runs::Run;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Bumped when the layout changes, so an old file is refused by name instead of misread.
pub const SCHEMA: u32 = 1;

/// The setting a figure was run under, read from the resolved config of its first run (so the page describes
/// what was run, whatever `--set` changed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Setting {
    pub arch: String,
    pub dataset: String,
    /// Image side in pixels; `None` for text.
    pub image_size: Option<usize>,
    /// Tokens per sample; `None` for images.
    pub max_len: Option<usize>,
    pub targets: Vec<String>,
    /// Adapted layers; empty means every layer.
    pub layers: Vec<usize>,
    pub clients: usize,
    pub per_round: usize,
    pub samples_per_client: Option<usize>,
    pub test_samples: Option<usize>,
    pub partition: String,
    pub rounds: u64,
    pub eval_every: u64,
    pub local_epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub bandwidth_hz: f64,
    pub mean_snr_db: String,
}

/// One variant's resolved setting where it differs from the figure's (rank, method, ratio, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantSetting {
    pub method: String,
    pub controller: String,
    pub rank: usize,
    /// The fixed drop ratio; `None` under an online controller.
    pub rho: Option<f64>,
    pub orthogonality: f64,
}

/// One round as the page needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundPoint {
    /// Counted from 1.
    pub round: u64,
    pub rho: f64,
    pub delay_s: f64,
    pub avg_delay_s: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covariance: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_accuracy: Option<f64>,
}

/// One finished run of one variant at one seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub seed: u64,
    /// SHA-256 of the run's resolved config (the engine's `ExperimentConfig::digest`).
    pub config_sha256: String,
    pub rounds: Vec<RoundPoint>,
    pub summary: fedsoft_records::Summary,
    /// Share of the Gram matrices' squared norm off the diagonal in the final adapter's first module, mean of
    /// `BᵀB` and `AAᵀ`; `None` where no adapter was exported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub off_diagonal: Option<f64>,
}

impl RunRecord {
    /// The record of a finished run directory (its `metrics.jsonl`, `summary.json` and `adapter/`).
    pub fn from_run(run: &Run, seed: u64, config_sha256: String) -> Result<Self, ReportError> {
        let rounds = run
            .rounds
            .iter()
            .map(|r| RoundPoint {
                round: r.round + 1,
                rho: r.rho,
                delay_s: r.delay_s,
                avg_delay_s: r.avg_delay_s,
                covariance: r.covariance,
                test_accuracy: r.test_accuracy,
            })
            .collect();
        let off_diagonal =
            crate::gram_matrices(&run.dir.join("adapter"))?.map(|g| 0.5 * (g.off_diagonal_b + g.off_diagonal_a));
        Ok(RunRecord { seed, config_sha256, rounds, summary: run.summary.clone(), off_diagonal })
    }

    /// `(round, accuracy)` of the evaluated rounds.
    pub fn accuracy(&self) -> Vec<(f64, f64)> {
        self.rounds.iter().filter_map(|r| r.test_accuracy.map(|a| (r.round as f64, a))).collect()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantRecord {
    pub label: String,
    /// The overrides that make this variant, as given to the preset.
    pub overrides: Vec<String>,
    pub setting: VariantSetting,
    /// The variant's whole resolved setting, where variants differ in more than method, rank and ratio (a
    /// power sweep's candidate settings); absent in records written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_setting: Option<Setting>,
    /// In seed order.
    pub runs: Vec<RunRecord>,
}

/// Everything one figure's section is computed from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FigureRecord {
    pub schema: u32,
    /// The registry's id of the figure.
    pub figure: String,
    pub preset: String,
    /// Overrides given to the whole figure with `--set` (a quick look, not the registry's setting).
    pub overrides: Vec<String>,
    pub seeds: Vec<u64>,
    pub setting: Setting,
    pub variants: Vec<VariantRecord>,
}

impl FigureRecord {
    /// `<page dir>/results/<figure>.json`.
    pub fn path(results_dir: &Path, figure: &str) -> PathBuf {
        results_dir.join(format!("{figure}.json"))
    }

    pub fn read(path: &Path) -> Result<Self, ReportError> {
        let text = std::fs::read_to_string(path).map_err(|e| ReportError::input(path, e))?;
        let rec: FigureRecord = serde_json::from_str(&text).map_err(|e| ReportError::input(path, e))?;
        if rec.schema != SCHEMA {
            return Err(ReportError::input(
                path,
                format!(
                    "schema {} where this build reads {SCHEMA}: run `fedsoft reproduce {}` again",
                    rec.schema, rec.figure
                ),
            ));
        }
        for v in &rec.variants {
            let seeds: Vec<u64> = v.runs.iter().map(|r| r.seed).collect();
            if seeds != rec.seeds {
                return Err(ReportError::input(
                    path,
                    format!("variant {:?} holds seeds {seeds:?}, the figure lists {:?}", v.label, rec.seeds),
                ));
            }
        }
        Ok(rec)
    }

    pub fn write(&self, path: &Path) -> Result<(), ReportError> {
        write_json(path, self)
    }

    pub fn variant(&self, label: &str) -> Option<&VariantRecord> {
        self.variants.iter().find(|v| v.label == label)
    }
}

/// The runs of a figure finished so far, kept in `<page dir>/results/progress/<figure>.json` until the figure's
/// record is complete. Because it lives beside the page (and can be committed with it), an unfinished figure
/// resumes from its stored runs on another machine or in a fresh checkout, where the run directories are gone;
/// the page never reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub schema: u32,
    pub figure: String,
    pub runs: Vec<StoredRun>,
}

/// One finished run and the variant it belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredRun {
    pub variant: String,
    pub run: RunRecord,
}

impl Progress {
    pub fn new(figure: &str) -> Self {
        Progress { schema: SCHEMA, figure: figure.into(), runs: Vec::new() }
    }

    /// `<page dir>/results/progress/<figure>.json`.
    pub fn path(results_dir: &Path, figure: &str) -> PathBuf {
        results_dir.join("progress").join(format!("{figure}.json"))
    }

    /// The stored progress, or an empty one where there is none. A file of another schema or figure is an
    /// error naming it, not an empty start: its runs would otherwise be made again without a word.
    pub fn read(path: &Path, figure: &str) -> Result<Self, ReportError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Progress::new(figure)),
            Err(e) => return Err(ReportError::input(path, e)),
        };
        let p: Progress = serde_json::from_str(&text).map_err(|e| ReportError::input(path, e))?;
        if p.schema != SCHEMA || p.figure != figure {
            return Err(ReportError::input(
                path,
                format!(
                    "holds figure {:?} at schema {} where {figure:?} at schema {SCHEMA} is asked for; remove the file",
                    p.figure, p.schema
                ),
            ));
        }
        Ok(p)
    }

    pub fn write(&self, path: &Path) -> Result<(), ReportError> {
        write_json(path, self)
    }

    /// The stored run of `variant` at `seed` made under the config with this digest, if any.
    pub fn find(&self, variant: &str, seed: u64, digest: &str) -> Option<&RunRecord> {
        self.runs
            .iter()
            .find(|s| s.variant == variant && s.run.seed == seed && s.run.config_sha256 == digest)
            .map(|s| &s.run)
    }

    /// Keeps `run`, replacing an older run of the same variant and seed.
    pub fn keep(&mut self, variant: &str, run: RunRecord) {
        self.runs.retain(|s| !(s.variant == variant && s.run.seed == run.seed));
        self.runs.push(StoredRun { variant: variant.into(), run });
    }
}

/// `value` as pretty JSON with a final newline, written atomically (its folder made first).
fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), ReportError> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| ReportError::output(path, e))?;
    text.push('\n');
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| ReportError::output(dir, e))?;
    }
    crate::write_atomic(path, text.as_bytes())
}

/// Every figure record in `results_dir`, in the registry's order (files the registry does not know are an
/// error naming them: a stale figure would otherwise vanish from the page without a word).
pub fn read_all(results_dir: &Path) -> Result<Vec<FigureRecord>, ReportError> {
    let mut out = Vec::new();
    let known: Vec<&str> = crate::registry::figures().iter().map(|f| f.id).collect();
    let entries = match std::fs::read_dir(results_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(ReportError::input(results_dir, e)),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    for f in files {
        let stem = f.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        if !known.contains(&stem.as_str()) {
            return Err(ReportError::input(
                &f,
                format!("no figure {stem:?} in the registry (known: {}); remove the file", known.join(", ")),
            ));
        }
        let rec = FigureRecord::read(&f)?;
        if rec.figure != stem {
            return Err(ReportError::input(&f, format!("holds figure {:?}, not {stem:?}", rec.figure)));
        }
        out.push(rec);
    }
    out.sort_by_key(|r| known.iter().position(|k| *k == r.figure));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page::tests::run;

    #[test]
    fn progress_keeps_one_run_per_variant_and_seed_and_finds_it_only_under_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = Progress::path(dir.path(), "fig4");
        let mut p = Progress::read(&path, "fig4").unwrap();
        assert!(p.runs.is_empty());
        p.keep("with", run(1, 0.5, 0.1));
        p.keep("with", run(2, 0.6, 0.1));
        p.keep("with", run(1, 0.7, 0.1));
        p.write(&path).unwrap();
        let back = Progress::read(&path, "fig4").unwrap();
        assert_eq!(back, p);
        assert_eq!(back.runs.len(), 2);
        let digest = "0".repeat(64);
        assert_eq!(back.find("with", 1, &digest).and_then(|r| r.summary.final_test_accuracy), Some(0.7));
        assert!(back.find("with", 1, &"1".repeat(64)).is_none());
        assert!(back.find("without", 1, &digest).is_none());
        assert!(back.find("with", 3, &digest).is_none());
    }

    #[test]
    fn progress_of_another_figure_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = Progress::path(dir.path(), "fig4");
        Progress::new("fig3").write(&path).unwrap();
        let err = Progress::read(&path, "fig4").unwrap_err().to_string();
        assert!(err.contains("progress/fig4.json") && err.contains("holds figure \"fig3\""), "{err}");
        std::fs::write(&path, "{").unwrap();
        let err = Progress::read(&path, "fig4").unwrap_err().to_string();
        assert!(err.contains("progress/fig4.json"), "{err}");
    }
}
