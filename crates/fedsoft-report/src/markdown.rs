//! `report.md`: a table of the runs and every figure with its caption.

use crate::figures::Section;
use crate::runs::Run;
use std::fmt::Write;
use std::path::Path;

fn opt(v: Option<f64>, digits: usize) -> String {
    v.filter(|x| x.is_finite()).map_or_else(|| "–".into(), |x| format!("{x:.digits$}"))
}

/// The first line of every `report.md`, by which an earlier report's directory is recognised.
pub(crate) const HEADER: &str = "# fedsoft report\n";

pub fn render(runs: &[Run], sections: &[Section], out: &Path) -> String {
    let mut md = format!("{HEADER}\n");
    md.push_str(
        "| run | directory | rank | λ | rounds | final accuracy | avg delay (s) | τ̄ (s) | uplink Mbit (paper) | \
         uplink Mbit (encoded) | wall (s) |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in runs {
        let s = &r.summary;
        let dir = r.dir.canonicalize().unwrap_or_else(|_| r.dir.clone());
        let rel = relative(&dir, out);
        let _ = writeln!(
            md,
            "| {} | `{}` | {} | {} | {}{} | {} | {:.3} | {:.3} | {:.2} | {:.2} | {:.0} |",
            r.label,
            rel,
            s.rank,
            opt(s.orthogonality, 2),
            s.rounds,
            if s.completed { "" } else { " (unfinished)" },
            opt(s.final_test_accuracy, 4),
            s.avg_delay_s,
            s.latency_budget_s,
            s.uplink_bits_paper as f64 / 1e6,
            s.uplink_bits_encoded as f64 / 1e6,
            s.wall_s,
        );
    }
    for sec in sections {
        let _ = write!(
            md,
            "\n## {}\n\n![{}]({}.png)\n\n{} ([SVG]({}.svg))\n",
            sec.title, sec.title, sec.stem, sec.caption, sec.stem
        );
    }
    md
}

/// `dir` relative to `base` where one contains the other, else absolute.
fn relative(dir: &Path, base: &Path) -> String {
    let base = base.canonicalize().unwrap_or_else(|_| base.to_path_buf());
    match base.parent().and_then(|p| dir.strip_prefix(p).ok()) {
        Some(rel) => format!("../{}", rel.display()),
        None => dir.display().to_string(),
    }
}
