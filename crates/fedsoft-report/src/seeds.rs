//! A comparison over paired seeds for any config (`fedsoft compare --seeds N`): the results page's statistics,
//! applied to variants of the user's own choosing. Every variant is compared with the first (the method listed
//! first), through the per-seed differences of final accuracy, as the page compares a claim's two variants.

use crate::claims::{Judged, Metric, Relation, judge_paired};
use crate::page::{accuracy_over_seeds, after_correction, p_text, pct};
use crate::plot::line_chart;
use crate::record::RunRecord;
use crate::stats::{holm, mean_sd, one_sided_level};
use crate::{ReportError, ReportFiles, claim_report_dir, mark_report_dir, markdown, write_atomic};
use std::fmt::Write as _;
use std::path::Path;

/// One variant's runs, in seed order (the same seeds for every variant).
#[derive(Debug, Clone)]
pub struct SeedVariant {
    pub label: String,
    pub runs: Vec<RunRecord>,
}

/// The first variant against another, judged as the claim "the first above this one" on final accuracy (the
/// page's interval, verdict and one-sided p of `first − other`).
#[derive(Debug, Clone)]
pub struct AgainstFirst {
    pub label: String,
    pub judged: Judged,
}

fn final_accuracies(v: &SeedVariant) -> Result<Vec<f64>, ReportError> {
    v.runs
        .iter()
        .map(|r| {
            Metric::FinalAccuracy.of(r).ok_or_else(|| ReportError::Input {
                path: r.summary.out_dir.clone(),
                detail: format!("{} seed {}: no test accuracy was recorded", v.label, r.seed),
            })
        })
        .collect()
}

/// Every variant after the first, judged against it.
pub fn against_first(variants: &[SeedVariant]) -> Result<Vec<AgainstFirst>, ReportError> {
    let Some(first) = variants.first() else { return Ok(Vec::new()) };
    let a = final_accuracies(first)?;
    variants[1..]
        .iter()
        .map(|v| {
            let judged = judge_paired(Relation::Greater, a.clone(), final_accuracies(v)?);
            Ok(AgainstFirst { label: v.label.clone(), judged })
        })
        .collect()
}

/// The comparison as a Markdown table (readable as plain text too).
pub fn table(variants: &[SeedVariant]) -> Result<String, ReportError> {
    let Some(first) = variants.first() else { return Ok(String::new()) };
    let judged = against_first(variants)?;
    // Several methods against one are several tests: Holm over those with a p, as on the results page.
    let with_p: Vec<(usize, f64)> = judged.iter().enumerate().filter_map(|(k, j)| j.judged.p.map(|p| (k, p))).collect();
    let p: Vec<f64> = with_p.iter().map(|&(_, p)| p).collect();
    let mut kept = vec![false; judged.len()];
    for (&(k, _), keep) in with_p.iter().zip(holm(&p, one_sided_level())) {
        kept[k] = keep;
    }
    let mut md = format!(
        "| method | seeds | final accuracy (mean ± sd) | average delay [s] | uplink Mbit | {0} − method [95 % CI], \
         points | p ({0} above, one-sided) | {0} above | all corrected (Holm) |\n|---|---|---|---|---|---|---|---|---|\n",
        first.label
    );
    for (i, v) in variants.iter().enumerate() {
        let (am, asd) = mean_sd(&final_accuracies(v)?);
        let (dm, _) = mean_sd(&v.runs.iter().map(|r| r.summary.avg_delay_s).collect::<Vec<_>>());
        let (bits, _) = mean_sd(&v.runs.iter().map(|r| r.summary.uplink_bits_paper as f64 / 1e6).collect::<Vec<_>>());
        let against = match i.checked_sub(1) {
            None => "– | – | – | –".to_string(),
            Some(k) => {
                let j = &judged[k].judged;
                let ci = j.interval.map_or("–".into(), |c| format!("{} [{}, {}]", pct(c.mean), pct(c.lo), pct(c.hi)));
                let p = j.p.map_or("–".into(), p_text);
                format!("{ci} | {p} | **{}** | {}", j.verdict.word(), after_correction(j.verdict, kept[k]))
            }
        };
        let _ =
            writeln!(md, "| {} | {} | {am:.4} ± {asd:.4} | {dm:.3} | {bits:.1} | {against} |", v.label, v.runs.len());
    }
    Ok(md)
}

/// Writes `report.md` (the table and how to read it) and the accuracy figure, mean ± sd over seeds, as PNG and
/// SVG, into `out`, under the same rule as a run's report: only a new or empty directory or an earlier report's.
/// [`crate::register_font`] must have been called.
pub fn write(variants: &[SeedVariant], title: &str, out: &Path) -> Result<ReportFiles, ReportError> {
    claim_report_dir(out)?;
    if crate::FONT.get().is_none() {
        return Err(ReportError::Font("no font registered".into()));
    }
    let table = table(variants)?;
    mark_report_dir(out)?;
    let seeds = variants.first().map_or(0, |v| v.runs.len());
    let lines: Vec<(&str, &[RunRecord])> = variants.iter().map(|v| (v.label.as_str(), &v.runs[..])).collect();
    let chart = accuracy_over_seeds(format!("{title}: test accuracy, mean ± sd over {seeds} seeds"), &lines);
    let mut files = ReportFiles::default();
    line_chart(out, "accuracy_over_seeds", &chart, &mut files.figures)?;
    let first = variants.first().map_or("", |v| v.label.as_str());
    let md = format!(
        "{}\n{title}: every method on the same {seeds} seeds (a seed fixes the data split, the test set, the \
         scheduled clients and the channels, so each seed's runs are paired). Final accuracy is the mean of a run's \
         last {} evaluations; each method is compared with {first} through the per-seed differences, their mean \
         with a 95 % Student t interval; **holds** when the interval lies wholly above 0, **does not hold** when \
         wholly below, **inconclusive** otherwise, **not judged** with fewer than {} seeds. Comparing several \
         methods with one makes several tests; the last column keeps a **holds** only where Holm's correction over \
         all of them (at most a 2.5 % chance of any wrong one) keeps it.\n\n{table}\n\
         ![test accuracy, mean ± sd over seeds](accuracy_over_seeds.png)\n",
        markdown::HEADER,
        crate::claims::FINAL_EVALUATIONS,
        crate::stats::MIN_SEEDS,
    );
    let path = out.join("report.md");
    write_atomic(&path, md.as_bytes())?;
    files.markdown = path;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::Verdict;
    use crate::page::tests::run;

    fn variant(label: &str, acc: &[f64]) -> SeedVariant {
        SeedVariant { label: label.into(), runs: acc.iter().zip(1..).map(|(&a, s)| run(s, a, 0.1)).collect() }
    }

    #[test]
    fn each_method_is_judged_against_the_first_by_its_per_seed_differences() {
        let first = variant("soft", &[0.80, 0.81, 0.79, 0.82, 0.80]);
        // One point below on every seed but the fourth (two): mean 1.2 points, an interval wholly above 0.
        let lower = variant("rlora", &[0.79, 0.80, 0.78, 0.80, 0.79]);
        let same = variant("flasc", &[0.80, 0.81, 0.79, 0.82, 0.80]);
        let rows = table(&[first.clone(), lower.clone(), same]).unwrap();
        let row = rows.lines().find(|l| l.starts_with("| rlora |")).unwrap();
        // p = 0.0019 (SciPy's one-sided t test of these differences): kept by Holm over the two comparisons.
        assert!(row.contains("| +1.20 [+0.64, +1.76] | 0.0019 | **holds** | **holds** |"), "{row}");
        let row = rows.lines().find(|l| l.starts_with("| flasc |")).unwrap();
        assert!(row.ends_with("| +0.00 [+0.00, +0.00] | 1.0000 | **inconclusive** | – |"), "{row}");
        assert!(rows.lines().find(|l| l.starts_with("| soft |")).unwrap().ends_with("| – | – | – | – |"), "{rows}");
        // Four seeds: the interval is shown, but no p and no verdict.
        let four = |v: &SeedVariant| SeedVariant { label: v.label.clone(), runs: v.runs[..4].to_vec() };
        let judged = against_first(&[four(&first), four(&lower)]).unwrap();
        assert!(judged[0].judged.interval.is_some() && judged[0].judged.p.is_none());
        assert_eq!(judged[0].judged.verdict, Verdict::NotJudged);
    }
}
