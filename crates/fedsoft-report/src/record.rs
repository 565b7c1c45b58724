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
        let mut text = serde_json::to_string_pretty(self).map_err(|e| ReportError::output(path, e))?;
        text.push('\n');
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| ReportError::output(dir, e))?;
        }
        crate::write_atomic(path, text.as_bytes())
    }

    pub fn variant(&self, label: &str) -> Option<&VariantRecord> {
        self.variants.iter().find(|v| v.label == label)
    }
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
