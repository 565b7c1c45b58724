//! `fedsoft report`: figures and a Markdown summary from run directories.

use anyhow::{Context, Result, bail};
use fedsoft_data::assets;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct ReportArgs {
    /// Run directories, or directories of runs (what `fedsoft compare` writes).
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Where the figures and report.md go (default: `report/` beside the runs: inside the one directory given,
    /// or in the directory that holds all of them).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Asset cache holding the font (default: $FEDSOFT_CACHE or .cache/fedsoft).
    #[arg(long)]
    pub cache: Option<PathBuf>,
}

/// Makes the packaged font (fetched on first use) the one figures are drawn with.
pub fn register_font(cache: &Path) -> Result<()> {
    let ttf = assets::report_font(cache).context("fetching the report font")?;
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

/// Where a report goes without `--out`: beside its input, never into the working directory by accident.
fn default_out(runs: &[PathBuf]) -> Result<PathBuf> {
    if let [one] = runs {
        return Ok(one.join("report"));
    }
    let absolute: Vec<PathBuf> = runs
        .iter()
        .map(|r| std::path::absolute(r).with_context(|| format!("resolving {}", r.display())))
        .collect::<Result<_>>()?;
    let mut common = absolute[0].parent().map(Path::to_path_buf).unwrap_or_default();
    while !absolute.iter().all(|r| r.starts_with(&common)) {
        common = match common.parent() {
            Some(p) => p.to_path_buf(),
            None => break,
        };
    }
    if common.parent().is_none() {
        bail!("the runs share no directory to put the report in; say where it goes with --out DIR");
    }
    Ok(common.join("report"))
}

pub fn run(args: &ReportArgs) -> Result<()> {
    let out = match &args.out {
        Some(o) => o.clone(),
        None => default_out(&args.runs)?,
    };
    let cache = args.cache.clone().unwrap_or_else(assets::default_cache);
    for skipped in fedsoft_report::skipped_dirs(&args.runs, &out) {
        eprintln!(
            "skipped {}: it holds no metrics.jsonl (a directory of runs? name it: fedsoft report {})",
            skipped.display(),
            skipped.display()
        );
    }
    let md = write_report(&args.runs, &out, &cache)?;
    println!("report: {} (figures as PNG and SVG beside it)", md.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_goes_beside_its_runs() {
        assert_eq!(default_out(&[PathBuf::from("runs/a")]).unwrap(), PathBuf::from("runs/a/report"));
        let cwd = std::env::current_dir().unwrap();
        let two = [PathBuf::from("runs/cmp/soft"), PathBuf::from("runs/cmp/flasc")];
        assert_eq!(default_out(&two).unwrap(), cwd.join("runs/cmp/report"));
        let apart = [PathBuf::from("runs/cmp/soft"), PathBuf::from("runs/other/flasc")];
        assert_eq!(default_out(&apart).unwrap(), cwd.join("runs/report"));
        let err = default_out(&[PathBuf::from("/a/x"), PathBuf::from("/b/y")]).unwrap_err().to_string();
        assert!(err.contains("share no directory") && err.contains("--out"), "{err}");
    }
}
