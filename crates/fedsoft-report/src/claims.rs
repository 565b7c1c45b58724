//! A claim is one metric compared between two variants of a figure, judged on the paired 95 % interval of
//! the per-seed differences (`stats`):
//!
//! - `A > B`: holds when the whole interval is above 0, does not hold when it is below 0;
//! - `A < B`: the mirror image;
//! - `A ≥ B − m` (not worse by more than `m`): holds when the interval's low end is above `−m`, does not hold
//!   when its high end is below `−m`;
//! - `|A − B| ≤ m` (close to): holds when the interval lies inside `(−m, m)`, does not hold when it lies wholly
//!   outside it.
//!
//! Everything else is inconclusive, and fewer than `stats::MIN_SEEDS` seeds give no verdict. Margins are part
//! of the registry, fixed before any run.

use crate::record::RunRecord;
use crate::stats::{Interval, MIN_SEEDS, p_above, p_below, paired};

/// Evaluations averaged into a run's final accuracy: the last few, not the last one, so one noisy
/// evaluation does not decide a claim.
pub const FINAL_EVALUATIONS: usize = 3;

/// What a claim compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Mean test accuracy over the last [`FINAL_EVALUATIONS`] evaluations.
    FinalAccuracy,
    /// Mean over rounds of the covariance of the clients' local models (the paper's Eqs. 20-22).
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

    /// The metric of one run; `None` when the run does not record it.
    pub fn of(self, run: &RunRecord) -> Option<f64> {
        match self {
            Metric::FinalAccuracy => {
                let acc = run.accuracy();
                let last = &acc[acc.len().saturating_sub(FINAL_EVALUATIONS)..];
                (!last.is_empty()).then(|| last.iter().map(|p| p.1).sum::<f64>() / last.len() as f64)
            }
            Metric::MeanCovariance => {
                let c: Vec<f64> = run.rounds.iter().filter_map(|r| r.covariance).collect();
                (!c.is_empty()).then(|| c.iter().sum::<f64>() / c.len() as f64)
            }
            Metric::AvgDelay => Some(run.summary.avg_delay_s),
            Metric::OffDiagonal => run.off_diagonal,
        }
    }

    /// A margin on this metric in the unit the page shows its differences in: percentage points for
    /// accuracies (the registry keeps them as fractions), the metric's own unit otherwise.
    pub fn margin_text(self, margin: f64) -> String {
        match self {
            Metric::FinalAccuracy => {
                let p = 100.0 * margin;
                if (p - 1.0).abs() < 1e-9 { "1 point".into() } else { format!("{p} points") }
            }
            _ => format!("{margin}"),
        }
    }
}

/// How variant A's metric is claimed to compare with variant B's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Relation {
    Greater,
    Less,
    /// `A ≥ B − margin`.
    NotWorse {
        margin: f64,
    },
    /// `|A − B| ≤ margin`.
    Close {
        margin: f64,
    },
}

/// One comparison of the registry.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    /// Short statement, e.g. "SOFT above FLASC".
    pub text: &'static str,
    /// The paper's sentence it comes from, verbatim; empty for comparisons beyond the paper.
    pub quote: &'static str,
    pub metric: Metric,
    pub a: &'static str,
    pub b: &'static str,
    pub relation: Relation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Holds,
    DoesNotHold,
    Inconclusive,
    /// Fewer than `MIN_SEEDS` paired seeds.
    NotJudged,
}

impl Verdict {
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Holds => "holds",
            Verdict::DoesNotHold => "does not hold",
            Verdict::Inconclusive => "inconclusive",
            Verdict::NotJudged => "not judged",
        }
    }
}

impl Claim {
    /// The relation as the page's metric column shows it, its margin in the unit of the differences beside it.
    pub fn relation_text(&self) -> String {
        match self.relation {
            Relation::Greater => ">".into(),
            Relation::Less => "<".into(),
            Relation::NotWorse { margin } => format!("≥ (at most {} below)", self.metric.margin_text(margin)),
            Relation::Close { margin } => format!("≈ (within ±{})", self.metric.margin_text(margin)),
        }
    }
}

/// The verdict on a paired interval of `A − B`.
pub fn judge(relation: Relation, interval: Option<&Interval>) -> Verdict {
    let Some(i) = interval.filter(|i| i.n >= MIN_SEEDS) else {
        return Verdict::NotJudged;
    };
    let (holds, fails) = match relation {
        Relation::Greater => (i.lo > 0.0, i.hi < 0.0),
        Relation::Less => (i.hi < 0.0, i.lo > 0.0),
        Relation::NotWorse { margin } => (i.lo > -margin, i.hi < -margin),
        Relation::Close { margin } => (i.lo > -margin && i.hi < margin, i.lo > margin || i.hi < -margin),
    };
    if holds {
        Verdict::Holds
    } else if fails {
        Verdict::DoesNotHold
    } else {
        Verdict::Inconclusive
    }
}

/// The one-sided p-value of the test whose rejection is "holds": below `stats::one_sided_level()` exactly when
/// [`judge`] says the claim holds, so it can be corrected for many claims at once (`stats::holm`). A claim of
/// closeness is two one-sided tests (one per margin), and its p the larger. `None` where no verdict is given.
pub fn p_holds(relation: Relation, interval: Option<&Interval>) -> Option<f64> {
    let i = interval.filter(|i| i.n >= MIN_SEEDS)?;
    Some(match relation {
        Relation::Greater => p_above(i, 0.0),
        Relation::Less => p_below(i, 0.0),
        Relation::NotWorse { margin } => p_above(i, -margin),
        Relation::Close { margin } => p_above(i, -margin).max(p_below(i, margin)),
    })
}

/// A claim's per-seed values, interval, verdict and the p-value behind a "holds".
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    pub a: Vec<f64>,
    pub b: Vec<f64>,
    pub interval: Option<Interval>,
    pub verdict: Verdict,
    /// [`p_holds`].
    pub p: Option<f64>,
}

/// Judges a claim on two variants' runs (paired by position, i.e. by seed); `Err` names what is missing.
pub fn evaluate(claim: &Claim, a: &[RunRecord], b: &[RunRecord]) -> Result<Judged, String> {
    let values = |label: &str, runs: &[RunRecord]| -> Result<Vec<f64>, String> {
        runs.iter()
            .map(|r| {
                claim
                    .metric
                    .of(r)
                    .ok_or_else(|| format!("{label} seed {}: {} is not recorded", r.seed, claim.metric.name()))
            })
            .collect()
    };
    Ok(judge_paired(claim.relation, values(claim.a, a)?, values(claim.b, b)?))
}

/// Judges per-seed values of A and B, paired by position, under `relation`: interval, verdict and p.
pub fn judge_paired(relation: Relation, a: Vec<f64>, b: Vec<f64>) -> Judged {
    let interval = paired(&a, &b);
    Judged { verdict: judge(relation, interval.as_ref()), p: p_holds(relation, interval.as_ref()), a, b, interval }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(relation: Relation, a: &[f64], b: &[f64]) -> Verdict {
        judge(relation, paired(a, b).as_ref())
    }

    #[test]
    fn equal_methods_are_inconclusive_and_a_constant_offset_holds() {
        let a = [0.80, 0.75, 0.82, 0.78, 0.79];
        assert_eq!(verdict(Relation::Greater, &a, &a), Verdict::Inconclusive);
        assert_eq!(verdict(Relation::Less, &a, &a), Verdict::Inconclusive);
        let up: Vec<f64> = a.iter().map(|x| x + 0.01).collect();
        assert_eq!(verdict(Relation::Greater, &up, &a), Verdict::Holds);
        assert_eq!(verdict(Relation::Less, &up, &a), Verdict::DoesNotHold);
        assert_eq!(verdict(Relation::Greater, &a, &up), Verdict::DoesNotHold);
    }

    #[test]
    fn same_sign_on_every_seed_is_not_enough_when_the_spread_is_wide() {
        // All five differences positive, but one is large: the interval reaches below 0.
        let b = [0.0; 5];
        assert_eq!(verdict(Relation::Greater, &[0.001, 0.001, 0.001, 0.001, 0.2], &b), Verdict::Inconclusive);
        // A consistent effect with a small spread holds.
        assert_eq!(verdict(Relation::Greater, &[0.010, 0.012, 0.009, 0.011, 0.010], &b), Verdict::Holds);
    }

    #[test]
    fn fewer_than_five_seeds_get_no_verdict() {
        assert_eq!(verdict(Relation::Greater, &[1.0, 2.0, 3.0, 4.0], &[0.0; 4]), Verdict::NotJudged);
        assert_eq!(verdict(Relation::Greater, &[1.0], &[0.0]), Verdict::NotJudged);
    }

    #[test]
    fn margins_decide_close_and_not_worse() {
        let b = [0.80; 5];
        let near = [0.801, 0.799, 0.802, 0.800, 0.798];
        assert_eq!(verdict(Relation::Close { margin: 0.01 }, &near, &b), Verdict::Holds);
        assert_eq!(verdict(Relation::NotWorse { margin: 0.01 }, &near, &b), Verdict::Holds);
        let far = [0.70, 0.71, 0.69, 0.70, 0.70];
        assert_eq!(verdict(Relation::Close { margin: 0.01 }, &far, &b), Verdict::DoesNotHold);
        assert_eq!(verdict(Relation::NotWorse { margin: 0.01 }, &far, &b), Verdict::DoesNotHold);
        // An interval straddling the margin is inconclusive.
        let edge = [0.79, 0.80, 0.78, 0.81, 0.79];
        assert_eq!(verdict(Relation::Close { margin: 0.01 }, &edge, &b), Verdict::Inconclusive);
    }

    #[test]
    fn a_claim_holds_exactly_when_its_p_is_below_the_one_sided_level() {
        let b = [0.80; 6];
        let cases: [&[f64]; 5] = [
            &[0.801, 0.799, 0.802, 0.800, 0.798, 0.801],
            &[0.79, 0.80, 0.78, 0.81, 0.79, 0.80],
            &[0.81, 0.812, 0.809, 0.811, 0.810, 0.813],
            &[0.70, 0.71, 0.69, 0.70, 0.70, 0.72],
            &[0.805, 0.795, 0.812, 0.79, 0.80, 0.808],
        ];
        let relations = [
            Relation::Greater,
            Relation::Less,
            Relation::NotWorse { margin: 0.01 },
            Relation::Close { margin: 0.01 },
            Relation::Close { margin: 0.005 },
        ];
        for a in cases {
            for r in relations {
                let i = paired(a, &b);
                let p = p_holds(r, i.as_ref()).unwrap();
                assert_eq!(judge(r, i.as_ref()) == Verdict::Holds, p < crate::stats::one_sided_level(), "{r:?} {a:?}");
            }
        }
        assert_eq!(p_holds(Relation::Greater, paired(&[1.0; 4], &[0.0; 4]).as_ref()), None);
    }

    #[test]
    fn accuracy_margins_are_shown_in_the_points_the_differences_are_shown_in() {
        let claim = |metric, relation| Claim { text: "t", quote: "", metric, a: "a", b: "b", relation };
        let dense = claim(Metric::FinalAccuracy, Relation::NotWorse { margin: 0.02 });
        assert_eq!(dense.relation_text(), "≥ (at most 2 points below)");
        let close = claim(Metric::FinalAccuracy, Relation::Close { margin: 0.01 });
        assert_eq!(close.relation_text(), "≈ (within ±1 point)");
        let delay = claim(Metric::AvgDelay, Relation::Close { margin: 0.5 });
        assert_eq!(delay.relation_text(), "≈ (within ±0.5)");
        assert_eq!(claim(Metric::MeanCovariance, Relation::Less).relation_text(), "<");
    }
}
