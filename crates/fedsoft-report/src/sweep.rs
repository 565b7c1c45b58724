//! A power sweep's section of the results page: per candidate setting, how many seed-to-seed spreads separate
//! the unsparsified method from the weakest sparsified one, and which setting that makes the figure's own.
//!
//! The choice is made by this ratio alone, computed from the stored runs like every other line of the page, so
//! nobody picks a setting after seeing which method wins; the page also says whether the figure it serves was
//! in fact run under the chosen setting.

use crate::ReportError;
use crate::claims::Metric;
use crate::page::{command, describe, runs};
use crate::record::{FigureRecord, Setting};
use crate::registry::{FigureSpec, Sweep};
use crate::stats::{CONFIDENCE, Interval, mean_sd, paired};
use std::fmt::Write as _;

/// Fewest seeds on which a spread, and so a power, is worth stating.
pub const MIN_SWEEP_SEEDS: usize = 3;

/// One candidate setting as the sweep measured it.
#[derive(Debug, Clone, PartialEq)]
pub struct SettingPower {
    pub label: String,
    /// The overrides that make the setting (the method's own left out).
    pub overrides: Vec<String>,
    /// The dense method's final accuracy over seeds: mean and sd.
    pub dense: (f64, f64),
    /// Per sparsified method, the paired interval of dense − method.
    pub gaps: Vec<(String, Option<Interval>)>,
    /// The sparsified method with the largest mean gap, and gap / spread for it.
    pub weakest: Option<(String, f64)>,
    /// Mean wall time of one run of the setting, in minutes.
    pub minutes: f64,
    pub setting: Option<Setting>,
}

fn final_accuracy(rec: &FigureRecord, label: &str) -> Result<Vec<f64>, ReportError> {
    runs(rec, label)?
        .iter()
        .map(|r| {
            Metric::FinalAccuracy.of(r).ok_or_else(|| ReportError::Input {
                path: format!("results/{}.json", rec.figure),
                detail: format!("variant {label:?} seed {} has no test accuracy", r.seed),
            })
        })
        .collect()
}

/// Every candidate setting's gaps and power, in the sweep's order.
pub fn powers(sweep: &Sweep, rec: &FigureRecord) -> Result<Vec<SettingPower>, ReportError> {
    let mut out = Vec::new();
    for s in sweep.settings {
        let dense_label = format!("{s}-{}", sweep.dense);
        let dense = final_accuracy(rec, &dense_label)?;
        let dense_variant = rec.variant(&dense_label).expect("runs() found it");
        let mut gaps = Vec::new();
        let mut minutes = vec![mean_sd(&dense_variant.runs.iter().map(|r| r.summary.wall_s).collect::<Vec<_>>()).0];
        for m in sweep.sparse {
            let label = format!("{s}-{m}");
            let acc = final_accuracy(rec, &label)?;
            let interval = (dense.len() >= MIN_SWEEP_SEEDS).then(|| paired(&dense, &acc)).flatten();
            gaps.push((m.to_string(), interval));
            let wall: Vec<f64> = runs(rec, &label)?.iter().map(|r| r.summary.wall_s).collect();
            minutes.push(mean_sd(&wall).0);
        }
        let weakest = gaps
            .iter()
            .filter_map(|(m, i)| i.map(|i| (m, i)))
            .max_by(|a, b| a.1.mean.total_cmp(&b.1.mean))
            .map(|(m, i)| (m.clone(), if i.sd > 0.0 { i.mean / i.sd } else { f64::INFINITY * i.mean.signum() }));
        let method_override = format!("method.name=\"{}\"", sweep.dense);
        out.push(SettingPower {
            label: s.to_string(),
            overrides: dense_variant.overrides.iter().filter(|o| **o != method_override).cloned().collect(),
            dense: mean_sd(&dense),
            gaps,
            weakest,
            minutes: minutes.iter().sum::<f64>() / minutes.len() as f64 / 60.0,
            setting: dense_variant.run_setting.clone(),
        });
    }
    Ok(out)
}

/// The setting of largest power; `None` when no setting has a power yet.
pub fn chosen(powers: &[SettingPower]) -> Option<&SettingPower> {
    powers
        .iter()
        .filter_map(|p| p.weakest.as_ref().map(|w| (p, w.1)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(p, _)| p)
}

fn ratio(x: f64) -> String {
    if x.is_finite() { format!("{x:.2}") } else { "∞ (no spread)".into() }
}

/// The sweep's section: the table of settings, the choice it makes, and whether the served figure used it.
pub fn section(
    md: &mut String,
    fig: &FigureSpec,
    sweep: &Sweep,
    rec: &FigureRecord,
    target: Option<&FigureRecord>,
) -> Result<(), ReportError> {
    let powers = powers(sweep, rec)?;
    let _ = writeln!(md, "<!-- reproduce:{} -->", fig.id);
    let _ = writeln!(md, "## {}\n", fig.title);
    let _ = writeln!(md, "{}\n", fig.about);
    let _ = writeln!(md, "Setting `a` (from its resolved config): {}\n", describe(&rec.setting));
    let seeds: Vec<String> = rec.seeds.iter().map(u64::to_string).collect();
    let _ = writeln!(
        md,
        "Preset `{}`; seeds {} ({} paired runs per variant). The gap's interval is a {}% Student t interval over \
         seeds; with {} seeds the spread is itself only roughly known, so the power ranks settings and is not a \
         verdict.\n",
        rec.preset,
        seeds.join(", "),
        rec.seeds.len(),
        (100.0 * CONFIDENCE).round(),
        rec.seeds.len()
    );
    let _ = writeln!(md, "Produced by:\n\n```bash\n{}\n```\n", command(rec));
    let mut head = format!("| setting | overrides | {} final accuracy |", sweep.dense);
    let mut rule = String::from("|---|---|---|");
    for m in sweep.sparse {
        let _ = write!(head, " {} − {m} [95 % CI] (sd), points |", sweep.dense);
        rule.push_str("---|");
    }
    let _ = writeln!(md, "{head} weakest | power (gap / sd) | minutes per run |\n{rule}---|---|---|");
    for p in &powers {
        let overrides: Vec<String> = p.overrides.iter().map(|o| format!("`{o}`")).collect();
        let mut row = format!("| {} | {} | {:.4} ± {:.4} |", p.label, overrides.join(", "), p.dense.0, p.dense.1);
        for (_, gap) in &p.gaps {
            match gap {
                Some(i) => {
                    let _ = write!(
                        row,
                        " {:+.2} [{:+.2}, {:+.2}] ({:.2}) |",
                        100.0 * i.mean,
                        100.0 * i.lo,
                        100.0 * i.hi,
                        100.0 * i.sd
                    );
                }
                None => row.push_str(" – |"),
            }
        }
        match &p.weakest {
            Some((m, power)) => {
                let _ = write!(row, " {m} | {} |", ratio(*power));
            }
            None => row.push_str(" – | – |"),
        }
        let _ = writeln!(md, "{row} {:.1} |", p.minutes);
    }
    md.push('\n');
    match chosen(&powers) {
        None => {
            let _ = writeln!(md, "No setting has a power yet (it needs at least {MIN_SWEEP_SEEDS} seeds).");
        }
        Some(best) => {
            let (m, power) = best.weakest.as_ref().expect("chosen settings have a power");
            let _ = writeln!(
                md,
                "Chosen: setting `{}`, where {} stands {} seed-to-seed spreads above {m}, the weaker sparsifier \
                 there.",
                best.label,
                sweep.dense,
                ratio(*power)
            );
            let served = match target {
                None => format!("{} has not been run yet.", sweep.for_figure),
                Some(t) if best.setting.as_ref() == Some(&t.setting) => {
                    format!("{}'s stored runs were made under this setting.", sweep.for_figure)
                }
                Some(t) => match powers.iter().find(|p| p.setting.as_ref() == Some(&t.setting)) {
                    Some(p) => format!(
                        "{}'s stored runs were made under setting `{}`, not the chosen one: run it again after \
                         setting its preset to the chosen setting.",
                        sweep.for_figure, p.label
                    ),
                    None => format!(
                        "{}'s stored runs were made under none of these settings: run it again after setting its \
                         preset to the chosen setting.",
                        sweep.for_figure
                    ),
                },
            };
            let _ = writeln!(md, "{served}");
        }
    }
    let _ = writeln!(md, "\n![{}](results/{}.png)", fig.title, fig.id);
    let _ = writeln!(md, "<!-- /reproduce:{} -->", fig.id);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page::tests::{run, setting};
    use crate::record::{SCHEMA, VariantRecord, VariantSetting};
    use crate::registry;

    /// A sweep record whose dense method beats the sparsifiers by `gap(setting)` with per-seed noise `noise`.
    fn record(gaps: &[(&str, f64, f64, f64)]) -> FigureRecord {
        let seeds = 4u64;
        let sweep = registry::figure("fig3-power").unwrap().sweep.unwrap();
        let mut variants = Vec::new();
        for (s, gap, noise, minutes) in gaps {
            let mut st = setting();
            st.rounds = if *s == "b" { 20 } else { 30 };
            if *s == "c" {
                st.partition = "dirichlet (alpha = 0.5)".into();
            }
            for (k, m) in std::iter::once(sweep.dense).chain(sweep.sparse.iter().copied()).enumerate() {
                let shift = if k == 0 { 0.0 } else { -gap * k as f64 };
                variants.push(VariantRecord {
                    label: format!("{s}-{m}"),
                    overrides: vec![format!("rounds.total={}", st.rounds), format!("method.name=\"{m}\"")],
                    setting: VariantSetting {
                        method: m.into(),
                        controller: "fixed".into(),
                        rank: 8,
                        rho: Some(0.75),
                        orthogonality: 0.01,
                    },
                    run_setting: Some(st.clone()),
                    runs: (1..=seeds)
                        .map(|seed| {
                            let wobble = if k == 0 { 0.0 } else { noise * ((seed % 2) as f64 - 0.5) };
                            let mut r = run(seed, 0.8 + shift + wobble, 0.1);
                            r.summary.wall_s = minutes * 60.0;
                            r
                        })
                        .collect(),
                });
            }
        }
        FigureRecord {
            schema: SCHEMA,
            figure: "fig3-power".into(),
            preset: "configs/cpu-fig3-dinov2.toml".into(),
            overrides: Vec::new(),
            seeds: (1..=seeds).collect(),
            setting: setting(),
            variants,
        }
    }

    #[test]
    fn the_setting_of_largest_gap_over_spread_is_chosen() {
        let sweep = registry::figure("fig3-power").unwrap().sweep.unwrap();
        // b: larger gap but much noisier; c: smaller gap and noisier still; a: wins on power.
        let rec = record(&[("a", 0.02, 0.004, 3.0), ("b", 0.05, 0.08, 3.5), ("c", 0.01, 0.01, 6.0)]);
        let p = powers(&sweep, &rec).unwrap();
        assert_eq!(p.len(), 3);
        // The weakest is FedLoDrop (twice the gap in this construction).
        assert_eq!(p[0].weakest.as_ref().unwrap().0, "fedlodrop");
        let a_gap = p[0].gaps[1].1.unwrap();
        assert!((a_gap.mean - 0.04).abs() < 1e-9, "{a_gap:?}");
        assert!(p[0].overrides.iter().all(|o| !o.starts_with("method.name")));
        assert_eq!(chosen(&p).unwrap().label, "a");
        assert!((p[2].minutes - 6.0).abs() < 1e-9);
    }

    #[test]
    fn the_page_says_whether_the_served_figure_used_the_chosen_setting() {
        let sweep = registry::figure("fig3-power").unwrap().sweep.unwrap();
        let fig = registry::figure("fig3-power").unwrap();
        let rec = record(&[("a", 0.02, 0.004, 3.0), ("b", 0.05, 0.08, 3.5), ("c", 0.01, 0.01, 6.0)]);
        let mut target = rec.clone();
        target.figure = "fig3".into();
        target.setting = rec.variant("a-ilora").unwrap().run_setting.clone().unwrap();
        let mut md = String::new();
        section(&mut md, &fig, &sweep, &rec, Some(&target)).unwrap();
        assert!(md.contains("Chosen: setting `a`"), "{md}");
        assert!(md.contains("fig3's stored runs were made under this setting."), "{md}");
        target.setting.rounds = 20;
        let mut md = String::new();
        section(&mut md, &fig, &sweep, &rec, Some(&target)).unwrap();
        assert!(md.contains("made under setting `b`, not the chosen one"), "{md}");
        let mut md = String::new();
        section(&mut md, &fig, &sweep, &rec, None).unwrap();
        assert!(md.contains("fig3 has not been run yet."), "{md}");
    }
}
