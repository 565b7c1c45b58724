//! `fedsoft report`: the figures a researcher puts in a paper, drawn from the files runs write.
//!
//! The report reads only what a run leaves on disk (`metrics.jsonl`, `summary.json`, the exported
//! `adapter/`), so it works on finished, interrupted and networked runs alike, and needs neither the model
//! nor the data. Every figure is written twice: PNG for slides and SVG for papers.

pub mod claims;
mod figures;
mod gram;
mod markdown;
pub mod page;
mod plot;
pub mod record;
pub mod registry;
mod runs;
pub mod seeds;
pub mod stats;
mod sweep;

pub use gram::{Gram, gram_matrices};
pub use runs::{Round, Run, Summary, load_runs, skipped_dirs};

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A file the report reads is missing or malformed; `path` names it.
    #[error("{path}: {detail}")]
    Input { path: String, detail: String },
    /// Drawing or writing an output failed.
    #[error("writing {path}: {detail}")]
    Output { path: String, detail: String },
    #[error("font: {0}")]
    Font(String),
}

impl ReportError {
    pub(crate) fn input(path: &Path, detail: impl ToString) -> Self {
        ReportError::Input { path: path.display().to_string(), detail: detail.to_string() }
    }
    pub(crate) fn output(path: &Path, detail: impl ToString) -> Self {
        ReportError::Output { path: path.display().to_string(), detail: detail.to_string() }
    }
}

/// What a report wrote.
#[derive(Debug, Clone, Default)]
pub struct ReportFiles {
    /// `report.md`.
    pub markdown: PathBuf,
    /// Every figure, PNG and SVG.
    pub figures: Vec<PathBuf>,
}

static FONT: OnceLock<Result<(), String>> = OnceLock::new();

/// Registers the TrueType font all text is drawn with. The first call wins; later calls are no-ops.
pub fn register_font(ttf: Vec<u8>) -> Result<(), ReportError> {
    FONT.get_or_init(|| {
        let bytes: &'static [u8] = Box::leak(ttf.into_boxed_slice());
        plotters::style::register_font("sans-serif", plotters::style::FontStyle::Normal, bytes)
            .map_err(|_| "not a TrueType/OpenType font".to_string())
    })
    .clone()
    .map_err(ReportError::Font)
}

/// Draws every figure the runs support into `out` and writes `report.md` linking them.
///
/// `inputs` are run directories (holding `metrics.jsonl`) or directories of runs (what `fedsoft compare`
/// writes). [`register_font`] must have been called.
pub fn report(inputs: &[PathBuf], out: &Path) -> Result<ReportFiles, ReportError> {
    claim_report_dir(out)?;
    if FONT.get().is_none() {
        return Err(ReportError::Font("no font registered".into()));
    }
    let runs = load_runs(inputs)?;
    mark_report_dir(out)?;
    let mut files = ReportFiles::default();
    let mut sections = Vec::new();
    for draw in figures::all() {
        if let Some(section) = draw(&runs, out, &mut files.figures)? {
            sections.push(section);
        }
    }
    let md = markdown::render(&runs, &sections, out);
    let path = out.join("report.md");
    write_atomic(&path, md.as_bytes())?;
    files.markdown = path;
    Ok(files)
}

/// Marks a directory as a fedsoft report's, written before its first figure so that an interrupted report is
/// still recognised as one.
pub const REPORT_MARKER: &str = ".fedsoft-report";

/// Refuses to draw into a directory that holds anything but an earlier fedsoft report: the figures and
/// `report.md` would be written over files of the same names (`--out .`, `--out ~/notes`). A new or empty
/// directory, one with [`REPORT_MARKER`], and one whose `report.md` is fedsoft's (reports drawn before the marker
/// existed) are the report's to write.
fn claim_report_dir(out: &Path) -> Result<(), ReportError> {
    let mut entries = match std::fs::read_dir(out) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ReportError::output(out, format!("{e} (the report needs a directory here)"))),
    };
    if entries.next().is_none() || out.join(REPORT_MARKER).is_file() {
        return Ok(());
    }
    let md = out.join("report.md");
    if std::fs::read_to_string(&md).is_ok_and(|t| t.starts_with(markdown::HEADER)) {
        return Ok(());
    }
    Err(ReportError::output(
        out,
        "holds files that are not a fedsoft report's (no .fedsoft-report marker, no report.md written by fedsoft); \
         a report goes only into a new or empty directory or over an earlier report, so that nothing else is \
         written over: choose another --out",
    ))
}

/// Creates `out` (claimed first with [`claim_report_dir`]) and marks it as a report's before anything is drawn.
fn mark_report_dir(out: &Path) -> Result<(), ReportError> {
    std::fs::create_dir_all(out).map_err(|e| ReportError::output(out, e))?;
    write_atomic(&out.join(REPORT_MARKER), b"a fedsoft report: `fedsoft report` may write over this directory\n")
}

/// Writes whole or not at all (`fedsoft_records::write_atomic`), naming the file on failure.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    fedsoft_records::write_atomic(path, bytes).map_err(|e| ReportError::output(path, e))
}
