//! The report's figures. Each looks at the runs, draws itself if the runs hold what it shows, and returns
//! the Markdown section that presents it. Add a figure by writing one function and listing it in [`all`].

use crate::ReportError;
use crate::gram::gram_matrices;
use crate::plot::{Heat, LineChart, Reference, Series, colour, heatmaps, line_chart, robust_top};
use crate::runs::{Round, Run};
use std::path::{Path, PathBuf};

/// A drawn figure as the Markdown summary presents it.
pub struct Section {
    pub title: String,
    pub stem: String,
    pub caption: String,
}

type DrawFn = fn(&[Run], &Path, &mut Vec<PathBuf>) -> Result<Option<Section>, ReportError>;

/// Every figure, in the order the report presents them.
pub fn all() -> [DrawFn; 8] {
    [accuracy, accuracy_vs_bits, rho, delay, queue, covariance, train_loss, grams]
}

fn per_run(runs: &[Run], f: impl Fn(&Run) -> Vec<(f64, f64)>) -> Vec<Series> {
    runs.iter()
        .enumerate()
        .map(|(i, r)| Series {
            label: r.label.clone(),
            points: f(r),
            colour: colour(i),
            faint: false,
            dashed: false,
            band: Vec::new(),
        })
        .filter(|s| !s.points.is_empty())
        .collect()
}

/// Draws dashed every series that repeats an earlier one point for point (methods sharing a controller draw
/// the same ratio, delay and queue), so none hides another; returns the caption's note on them.
fn mark_coinciding(series: &mut [Series]) -> String {
    let mut notes = Vec::new();
    for i in 1..series.len() {
        if let Some(j) = (0..i).find(|&j| series[j].points == series[i].points && !series[j].points.is_empty()) {
            series[i].dashed = true;
            notes.push(format!("{} lies on {} (dashed)", series[i].label, series[j].label));
        }
    }
    if notes.is_empty() { String::new() } else { format!(" {}.", notes.join("; ")) }
}

/// `soft 0.766 (round 20), flasc 0.741 (round 20)`: each run's last evaluated accuracy.
fn finals(runs: &[Run]) -> String {
    runs.iter()
        .filter_map(|r| r.accuracy().last().map(|&(round, a)| format!("{} {a:.3} (round {round})", r.label)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A per-round quantity drawn once per run.
struct PerRound {
    stem: &'static str,
    title: &'static str,
    y_label: &'static str,
    value: fn(&Round) -> Option<f64>,
    caption: &'static str,
}

fn simple(runs: &[Run], out: &Path, files: &mut Vec<PathBuf>, fig: PerRound) -> Result<Option<Section>, ReportError> {
    let PerRound { stem, title, y_label, value, caption } = fig;
    let mut series = per_run(runs, |r| r.series(value));
    if series.is_empty() {
        return Ok(None);
    }
    let note = mark_coinciding(&mut series);
    let chart = LineChart {
        title: title.into(),
        x_label: "round".into(),
        y_label: y_label.into(),
        series,
        references: vec![],
        unit_interval: false,
        y_max: None,
        integer_x: true,
    };
    line_chart(out, stem, &chart, files)?;
    Ok(Some(Section { title: title.into(), stem: stem.into(), caption: format!("{caption}{note}") }))
}

fn accuracy(runs: &[Run], out: &Path, files: &mut Vec<PathBuf>) -> Result<Option<Section>, ReportError> {
    let series = per_run(runs, Run::accuracy);
    if series.is_empty() {
        return Ok(None);
    }
    let chart = LineChart {
        title: "Test accuracy".into(),
        x_label: "round".into(),
        y_label: "accuracy".into(),
        series,
        references: vec![],
        unit_interval: false,
        y_max: None,
        integer_x: true,
    };
    line_chart(out, "accuracy", &chart, files)?;
    Ok(Some(Section {
        title: "Test accuracy vs round".into(),
        stem: "accuracy".into(),
        caption: format!(
            "Accuracy of the global model on the test set at each evaluated round (the paper's Fig. 3){}; the \
             axis spans the data, not 0-1. Last evaluation: {}.",
            if runs.iter().any(|r| r.summary.initial_test_accuracy.is_some()) {
                ", round 0 being the model before training"
            } else {
                ""
            },
            finals(runs)
        ),
    }))
}

fn accuracy_vs_bits(runs: &[Run], out: &Path, files: &mut Vec<PathBuf>) -> Result<Option<Section>, ReportError> {
    let series = per_run(runs, |r| r.accuracy_vs_bits().into_iter().map(|(b, a)| (b / 1e6, a)).collect());
    if series.is_empty() {
        return Ok(None);
    }
    let chart = LineChart {
        title: "Accuracy vs uplink traffic".into(),
        x_label: "cumulative uplink (Mbit, paper count)".into(),
        y_label: "accuracy".into(),
        series,
        references: vec![],
        unit_interval: false,
        y_max: None,
        integer_x: false,
    };
    line_chart(out, "accuracy_vs_bits", &chart, files)?;
    Ok(Some(Section {
        title: "Accuracy vs uplink traffic".into(),
        stem: "accuracy_vs_bits".into(),
        caption: "Test accuracy against the total bits all clients have uploaded so far: the communication cost of \
                  each method's accuracy."
            .into(),
    }))
}

fn rho(runs: &[Run], out: &Path, files: &mut Vec<PathBuf>) -> Result<Option<Section>, ReportError> {
    simple(
        runs,
        out,
        files,
        PerRound {
            stem: "rho",
            title: "Sparsification ratio ρ_t",
            y_label: "ρ_t (share of entries dropped)",
            value: |r| Some(r.rho),
            caption: "The drop ratio each round: constant under a fixed controller, chosen per round by the Lyapunov \
         controller under TSFA/OSFA.",
        },
    )
}

fn delay(runs: &[Run], out: &Path, files: &mut Vec<PathBuf>) -> Result<Option<Section>, ReportError> {
    let mut series = Vec::new();
    let mut means = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        let c = colour(i);
        series.push(Series {
            label: format!("{} (per round)", r.label),
            points: r.series(|x| Some(x.delay_s)),
            colour: c,
            faint: true,
            dashed: false,
            band: Vec::new(),
        });
        means.push(Series {
            label: format!("{} (running mean)", r.label),
            points: r.series(|x| Some(x.avg_delay_s)),
            colour: c,
            faint: false,
            dashed: false,
            band: Vec::new(),
        });
    }
    let coinciding = mark_coinciding(&mut series) + &mark_coinciding(&mut means);
    let mut budgets: Vec<f64> = runs.iter().map(|r| r.summary.latency_budget_s).filter(|t| t.is_finite()).collect();
    budgets.sort_by(f64::total_cmp);
    budgets.dedup_by(|a, b| (*a - *b).abs() < 1e-9);
    let references = budgets.iter().map(|&y| Reference { label: format!("latency budget {y:.3} s"), y }).collect();
    // One deep fade can take a round a hundred times longer than the rest; the axis keeps the rest readable.
    let per_round: Vec<f64> = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).collect();
    // The axis is set by the rounds alone: the running mean starts at the first round's delay, and a deep fade
    // there would otherwise flatten every later round (and the budget line) to the floor.
    let y_max = robust_top(&per_round, budgets.iter().copied().fold(0.0, f64::max));
    let above = |points: &[Series]| -> Vec<f64> {
        points.iter().flat_map(|s| s.points.iter().map(|p| p.1)).filter(|&d| y_max.is_some_and(|t| d > t)).collect()
    };
    let (rounds_above, means_above) = (above(&series), above(&means));
    let highest = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let clipped = match (y_max, means_above.is_empty()) {
        (None, _) => String::new(),
        (Some(_), true) => format!(
            " {} round(s) above the axis (up to {:.2} s) are drawn as triangles on its top edge.",
            rounds_above.len(),
            highest(&rounds_above)
        ),
        (Some(_), false) => format!(
            " {} round(s) (up to {:.2} s) and the running mean's first {} point(s) (up to {:.2} s) lie above the \
             axis and are drawn as triangles on its top edge.",
            rounds_above.len(),
            highest(&rounds_above),
            means_above.len(),
            highest(&means_above)
        ),
    };
    let ends: Vec<String> = runs
        .iter()
        .filter_map(|r| {
            let last = r.rounds.last()?.avg_delay_s;
            let budget = r.summary.latency_budget_s;
            Some(if budget.is_finite() && budget > 0.0 {
                format!("{} {last:.3} s ({:+.0} % against τ̄ = {budget:.3} s)", r.label, 100.0 * (last / budget - 1.0))
            } else {
                format!("{} {last:.3} s", r.label)
            })
        })
        .collect();
    series.extend(means);
    let chart = LineChart {
        title: "Uplink delay per round".into(),
        x_label: "round".into(),
        y_label: "delay (s)".into(),
        series,
        references,
        unit_interval: false,
        y_max,
        integer_x: true,
    };
    line_chart(out, "delay", &chart, files)?;
    Ok(Some(Section {
        title: "Uplink delay and its running mean vs the latency budget".into(),
        stem: "delay".into(),
        caption: format!(
            "Thin lines: the slowest scheduled client's delay each round; bold: its running mean; dashed grey: the \
             budget τ̄ that the paper's constraint asks the long-run mean to meet. The running mean ends at {}.{clipped}{coinciding}",
            ends.join(", ")
        ),
    }))
}

fn queue(runs: &[Run], out: &Path, files: &mut Vec<PathBuf>) -> Result<Option<Section>, ReportError> {
    let controlled: Vec<Run> = runs.iter().filter(|r| r.summary.controller.is_online()).cloned().collect();
    if controlled.is_empty() {
        return Ok(None);
    }
    simple(
        &controlled,
        out,
        files,
        PerRound {
            stem: "queue",
            title: "Virtual delay queue Q_t",
            y_label: "Q_t (s)",
            value: |r| Some(r.queue),
            caption: "The Lyapunov virtual queue (the paper's Eq. (30)): it grows while rounds run over τ̄ and pulls ρ_t up until the \
         backlog is paid off (TSFA vs OSFA).",
        },
    )
}

fn covariance(runs: &[Run], out: &Path, files: &mut Vec<PathBuf>) -> Result<Option<Section>, ReportError> {
    simple(
        runs,
        out,
        files,
        PerRound {
            stem: "covariance",
            title: "Covariance of the local models",
            y_label: "covariance",
            value: |r| r.covariance,
            caption: "How far the clients' local LoRA products spread around their average each round (the paper's Fig. 5).",
        },
    )
}

fn train_loss(runs: &[Run], out: &Path, files: &mut Vec<PathBuf>) -> Result<Option<Section>, ReportError> {
    simple(
        runs,
        out,
        files,
        PerRound {
            stem: "train_loss",
            title: "Local training loss",
            y_label: "mean loss of scheduled clients",
            value: |r| Some(r.train_loss),
            caption: "Mean local training loss (cross-entropy + λ·orthogonality) of the round's clients.",
        },
    )
}

fn grams(runs: &[Run], out: &Path, files: &mut Vec<PathBuf>) -> Result<Option<Section>, ReportError> {
    let mut panels = Vec::new();
    let mut notes = Vec::new();
    let mut module = String::new();
    for r in runs {
        let Some(g) = gram_matrices(&r.dir.join("adapter"))? else { continue };
        let lambda = r.summary.orthogonality.map_or(String::new(), |l| format!(", λ = {l}"));
        panels.push(vec![
            Heat { title: format!("{}{lambda}: |BᵀB|", r.label), r: g.rank, values: g.btb.clone() },
            Heat { title: format!("{}{lambda}: |AAᵀ|", r.label), r: g.rank, values: g.aat.clone() },
        ]);
        notes.push(format!(
            "{}: off-diagonal share {:.3} (BᵀB), {:.3} (AAᵀ)",
            r.label, g.off_diagonal_b, g.off_diagonal_a
        ));
        module = g.module;
    }
    if panels.is_empty() {
        return Ok(None);
    }
    let title = format!("Normalised Gram matrices of the final adapter, {module}");
    heatmaps(out, "gram", &title, &panels, files)?;
    Ok(Some(Section {
        title: "Gram matrices BᵀB and AAᵀ (normalised)".into(),
        stem: "gram".into(),
        caption: format!(
            "|G_ij|/sqrt(G_ii·G_jj) of the final global factors of `{module}` (1 on the diagonal by construction). \
             An exactly diagonal pair would make the factors an SVD; the share of each matrix's squared norm that \
             lies off the diagonal measures how far they are from it (the paper's Fig. 4 compares it with and \
             without the regulariser): {}.",
            notes.join("; ")
        ),
    }))
}
