//! A paper's claims checked against repeated runs: each variant of a figure run once per seed, each claim a
//! comparison of one metric between two variants, judged on the per-seed differences (the seeds pair the
//! runs: the same seed gives both variants the same data split, clients and channels).
//!
//! The verdict is deliberately plain so a reader can check it from the table: a claim *holds* when the
//! comparison goes the claimed way on every seed, *does not hold* when it goes the other way on every seed,
//! and is *inconclusive* otherwise.

use crate::plot::{Series, line_chart_png};
use crate::runs::Run;
use crate::{ReportError, gram_matrices};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One setting of a figure, run once per seed (in seed order).
pub struct Variant {
    pub label: String,
    pub runs: Vec<Run>,
}

/// What a claim compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Test accuracy at the last evaluation.
    FinalAccuracy,
    /// Mean over rounds of the covariance of the clients' local models (SPEC §2.4).
    MeanCovariance,
    /// Time-average round delay, seconds.
    AvgDelay,
    /// Share of the Gram matrices' squared norm off the diagonal, mean of `BᵀB` and `AAᵀ`, final adapter.
    OffDiagonal,
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::FinalAccuracy => "final accuracy",
            Metric::MeanCovariance => "mean covariance",
            Metric::AvgDelay => "average delay [s]",
            Metric::OffDiagonal => "Gram off-diagonal share",
        }
    }

    pub fn of(self, run: &Run) -> Result<f64, ReportError> {
        let missing = |what: &str| ReportError::input(&run.dir, format!("{what} is not recorded"));
        match self {
            Metric::FinalAccuracy => run.accuracy().last().map(|p| p.1).ok_or_else(|| missing("test accuracy")),
            Metric::MeanCovariance => {
                let c: Vec<f64> = run.rounds.iter().filter_map(|r| r.covariance).collect();
                if c.is_empty() { Err(missing("covariance")) } else { Ok(c.iter().sum::<f64>() / c.len() as f64) }
            }
            Metric::AvgDelay => Ok(run.summary.avg_delay_s),
            Metric::OffDiagonal => {
                let g = gram_matrices(&run.dir.join("adapter"))?.ok_or_else(|| missing("an exported adapter"))?;
                Ok(0.5 * (g.off_diagonal_b + g.off_diagonal_a))
            }
        }
    }
}

/// How the first variant's metric is claimed to compare with the second's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Relation {
    Greater,
    Less,
    /// `a >= b - margin`.
    NotWorse {
        margin: f64,
    },
    /// `|a - b| <= margin`.
    Similar {
        margin: f64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    /// The claim in the paper's words.
    pub text: String,
    pub metric: Metric,
    pub a: String,
    pub b: String,
    pub relation: Relation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Holds,
    DoesNotHold,
    Inconclusive,
}

impl Verdict {
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Holds => "holds",
            Verdict::DoesNotHold => "does not hold",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

/// Mean and (sample) standard deviation.
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n.max(1.0);
    let var = if v.len() > 1 { v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (mean, var.sqrt())
}

/// The verdict on paired per-seed values of the two variants.
pub fn judge(relation: Relation, a: &[f64], b: &[f64]) -> Verdict {
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    type Test = fn(f64, f64) -> bool;
    let (pass, fail): (Test, Test) = match relation {
        Relation::Greater => (|d, _| d > 0.0, |d, _| d < 0.0),
        Relation::Less => (|d, _| d < 0.0, |d, _| d > 0.0),
        Relation::NotWorse { .. } => (|d, m| d >= -m, |d, m| d < -m),
        Relation::Similar { .. } => (|d, m| d.abs() <= m, |d, m| d.abs() > m),
    };
    // Margins are inclusive; the 1e-9 keeps float noise in a difference of two accuracies (multiples of
    // 1 / test size) from deciding a verdict.
    let margin = match relation {
        Relation::NotWorse { margin } | Relation::Similar { margin } => margin + 1e-9,
        _ => 0.0,
    };
    if d.is_empty() {
        Verdict::Inconclusive
    } else if d.iter().all(|&x| pass(x, margin)) {
        Verdict::Holds
    } else if d.iter().all(|&x| fail(x, margin)) {
        Verdict::DoesNotHold
    } else {
        Verdict::Inconclusive
    }
}

fn relation_text(r: Relation) -> String {
    match r {
        Relation::Greater => ">".into(),
        Relation::Less => "<".into(),
        Relation::NotWorse { margin } => format!(">= (within {margin})"),
        Relation::Similar { margin } => format!("≈ (within {margin})"),
    }
}

/// Everything a figure's section of the results page says.
pub struct FigureSection {
    pub id: String,
    pub title: String,
    /// The commands that produced it, shown verbatim.
    pub commands: Vec<String>,
    pub notes: String,
}

/// Draws the figure's accuracy curves (mean ± one standard deviation over seeds) as `<dir>/<id>.png` and
/// returns the Markdown section, with the variants' table and the claims' verdicts.
pub fn section(
    fig: &FigureSection,
    variants: &[Variant],
    claims: &[Claim],
    image_dir: &Path,
    image_link: &str,
) -> Result<(String, PathBuf), ReportError> {
    let mut md = String::new();
    let seeds = variants.iter().map(|v| v.runs.len()).min().unwrap_or(0);
    let _ = writeln!(md, "## {}\n", fig.title);
    let _ = writeln!(md, "{}\n", fig.notes);
    let _ = writeln!(md, "Produced by:\n\n```bash");
    for c in &fig.commands {
        let _ = writeln!(md, "{c}");
    }
    let _ = writeln!(md, "```\n");
    let _ = writeln!(
        md,
        "| variant | final accuracy (mean ± std over {seeds} seeds) | average delay [s] | uplink Mbit | wall time per run |\n|---|---|---|---|---|"
    );
    for v in variants {
        let acc: Vec<f64> = v.runs.iter().map(|r| Metric::FinalAccuracy.of(r)).collect::<Result<_, _>>()?;
        let delay: Vec<f64> = v.runs.iter().map(|r| r.summary.avg_delay_s).collect();
        let bits: Vec<f64> = v.runs.iter().map(|r| r.summary.uplink_bits_paper as f64 / 1e6).collect();
        let wall: Vec<f64> = v.runs.iter().map(|r| r.summary.wall_s).collect();
        let ((am, asd), (dm, dsd), (bm, _), (wm, _)) =
            (mean_std(&acc), mean_std(&delay), mean_std(&bits), mean_std(&wall));
        let _ =
            writeln!(md, "| {} | {am:.4} ± {asd:.4} | {dm:.3} ± {dsd:.3} | {bm:.1} | {:.1} min |", v.label, wm / 60.0);
    }
    let _ = writeln!(
        md,
        "\n| claim | metric | A | B | A (mean ± std) | B (mean ± std) | per-seed A − B | verdict |\n|---|---|---|---|---|---|---|---|"
    );
    for c in claims {
        let values = |label: &str| -> Result<Vec<f64>, ReportError> {
            let v = variants.iter().find(|v| v.label == label).ok_or_else(|| ReportError::Input {
                path: label.to_string(),
                detail: "a claim names a variant the figure does not run".into(),
            })?;
            v.runs.iter().map(|r| c.metric.of(r)).collect()
        };
        let (a, b) = (values(&c.a)?, values(&c.b)?);
        let verdict = judge(c.relation, &a, &b);
        let diffs: Vec<String> = a.iter().zip(&b).map(|(x, y)| format!("{:+.4}", x - y)).collect();
        let ((am, asd), (bm, bsd)) = (mean_std(&a), mean_std(&b));
        let _ = writeln!(
            md,
            "| {} | {} {} | {} | {} | {am:.4} ± {asd:.4} | {bm:.4} ± {bsd:.4} | {} | **{}** |",
            c.text,
            c.metric.name(),
            relation_text(c.relation),
            c.a,
            c.b,
            diffs.join(", "),
            verdict.word()
        );
    }
    let series: Vec<Series> = variants
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let curves: Vec<Vec<(f64, f64)>> = v.runs.iter().map(Run::accuracy).collect();
            let points = curves.first().map_or(0, Vec::len);
            let mut mean = Vec::new();
            let mut band = Vec::new();
            for k in 0..points {
                let ys: Vec<f64> = curves.iter().filter_map(|c| c.get(k).map(|p| p.1)).collect();
                let (m, s) = mean_std(&ys);
                let x = curves[0][k].0;
                mean.push((x, m));
                band.push((x, m - s, m + s));
            }
            Series { label: v.label.clone(), points: mean, colour: crate::plot::colour(i), faint: false, band }
        })
        .collect();
    let chart = crate::plot::LineChart {
        title: format!("{}: test accuracy, mean ± std over {seeds} seeds", fig.id),
        x_label: "round".into(),
        y_label: "test accuracy".into(),
        series,
        references: Vec::new(),
        unit_interval: false,
        integer_x: true,
    };
    let png = line_chart_png(image_dir, &fig.id, &chart)?;
    let _ = writeln!(md, "\n![{}]({image_link})\n", fig.title);
    Ok((md, png))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_need_every_seed_to_agree() {
        assert_eq!(judge(Relation::Greater, &[0.8, 0.7, 0.9], &[0.7, 0.6, 0.85]), Verdict::Holds);
        assert_eq!(judge(Relation::Greater, &[0.6, 0.5], &[0.7, 0.6]), Verdict::DoesNotHold);
        assert_eq!(judge(Relation::Greater, &[0.8, 0.5], &[0.7, 0.6]), Verdict::Inconclusive);
        assert_eq!(judge(Relation::Greater, &[0.7], &[0.7]), Verdict::Inconclusive);
        assert_eq!(judge(Relation::Less, &[0.1, 0.2], &[0.3, 0.4]), Verdict::Holds);
        assert_eq!(judge(Relation::NotWorse { margin: 0.01 }, &[0.795, 0.81], &[0.80, 0.80]), Verdict::Holds);
        assert_eq!(judge(Relation::NotWorse { margin: 0.01 }, &[0.70, 0.71], &[0.80, 0.80]), Verdict::DoesNotHold);
        assert_eq!(judge(Relation::Similar { margin: 0.01 }, &[0.80, 0.795], &[0.805, 0.80]), Verdict::Holds);
        assert_eq!(judge(Relation::Similar { margin: 0.01 }, &[0.90, 0.60], &[0.80, 0.80]), Verdict::DoesNotHold);
        // 0.798 - 0.788 is 0.010000000000000009 in f64: still within a margin of 0.01.
        assert_eq!(judge(Relation::Similar { margin: 0.01 }, &[0.798], &[0.788]), Verdict::Holds);
        assert_eq!(judge(Relation::Greater, &[], &[]), Verdict::Inconclusive);
    }

    #[test]
    fn sample_standard_deviation() {
        let (m, s) = mean_std(&[1.0, 2.0, 3.0]);
        assert_eq!(m, 2.0);
        assert!((s - 1.0).abs() < 1e-12);
        assert_eq!(mean_std(&[4.0]), (4.0, 0.0));
    }
}
