//! `fedsoft report`: figures and a Markdown summary from run directories.

use anyhow::{Context, Result};
use fedsoft_data::assets;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct ReportArgs {
    /// Run directories, or directories of runs (what `fedsoft compare` writes).
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Where the figures and report.md go (default: <RUN>/report for one directory, ./report for several).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Asset cache holding the font (default: $FEDSOFT_CACHE or .cache/fedsoft).
    #[arg(long)]
    pub cache: Option<PathBuf>,
}

/// Makes the packaged font (fetched on first use) the one figures are drawn with.
pub fn register_font(cache: &Path) -> Result<()> {
    let font_dir = assets::ensure(cache, "dejavu-fonts").context("fetching the report font")?;
    let ttf = std::fs::read(font_dir.join("DejaVuSans.ttf")).context("reading the report font")?;
    Ok(fedsoft_report::register_font(ttf)?)
}

/// Draws the report for `runs` into `out`; returns the Markdown file.
pub fn write_report(runs: &[PathBuf], out: &Path, cache: &Path) -> Result<PathBuf> {
    // Bad run directories are reported before anything is fetched.
    fedsoft_report::load_runs(runs)?;
    register_font(cache)?;
    let files = fedsoft_report::report(runs, out)?;
    Ok(files.markdown)
}

pub fn run(args: &ReportArgs) -> Result<()> {
    let out = match (&args.out, args.runs.as_slice()) {
        (Some(o), _) => o.clone(),
        (None, [one]) => one.join("report"),
        (None, _) => PathBuf::from("report"),
    };
    let cache = args.cache.clone().unwrap_or_else(assets::default_cache);
    let md = write_report(&args.runs, &out, &cache)?;
    println!("report: {} (figures as PNG and SVG beside it)", md.display());
    Ok(())
}
