//! The paper's claims, figure by figure, as `fedsoft reproduce` runs and judges them.
//!
//! Each claim carries the sentence of the paper (arXiv 2505.00333, section V) it comes from, word for word;
//! `[…]` marks a symbol or number that the paper's text leaves out. The results page's main tables judge
//! exactly these claims; anything else the runs allow to compare goes to `beyond`, shown apart and labelled
//! as not the paper's. Margins of "close to" claims are fixed here, before any run.

use crate::claims::{Claim, Metric, Relation};

/// Margin of "close to" / "nearly identical" accuracy claims: one percentage point.
pub const CLOSE_ACCURACY: f64 = 0.01;
/// How far SOFT may sit below the unsparsified ILoRA and still count as "comparable": two points.
pub const COMPARABLE_TO_DENSE: f64 = 0.02;

/// One setting of a figure: overrides applied to the preset.
#[derive(Debug, Clone, PartialEq)]
pub struct VariantSpec {
    pub label: &'static str,
    pub overrides: &'static [&'static str],
}

/// One CPU-sized figure of the paper.
#[derive(Debug, Clone, PartialEq)]
pub struct FigureSpec {
    pub id: &'static str,
    pub title: &'static str,
    pub preset: &'static str,
    /// Applied to the preset before each variant's overrides.
    pub base: &'static [&'static str],
    /// What the variants are, in a sentence (the setting itself is read from the resolved configs).
    pub about: &'static str,
    pub variants: Vec<VariantSpec>,
    pub claims: Vec<Claim>,
    /// Comparisons the paper does not make.
    pub beyond: Vec<Claim>,
    /// The figure runs FedLoDrop, whose paper form keeps `(1 − ρ) r` whole rank components: `reproduce`
    /// refuses a ratio for which that is not an integer.
    pub whole_components: bool,
    /// Set for a power sweep: an entry that judges no claim and instead measures, per candidate setting, how
    /// far the methods stand apart against their seed-to-seed spread.
    pub sweep: Option<Sweep>,
}

/// A sweep over CPU settings for one figure, so that its setting is chosen by statistical power (how many
/// seed-to-seed spreads separate the unsparsified method from the weakest sparsified one) and never by which
/// method wins: SOFT is not even run in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sweep {
    /// The figure whose preset the sweep chooses.
    pub for_figure: &'static str,
    pub dense: &'static str,
    /// The sparsified methods measured against `dense`; the weakest of them (largest gap) sets a setting's power.
    pub sparse: &'static [&'static str],
    /// Setting labels: each variant is `<setting>-<method>`, its overrides the setting's and then the method's.
    pub settings: &'static [&'static str],
}

impl FigureSpec {
    pub fn variant(&self, label: &str) -> Option<&VariantSpec> {
        self.variants.iter().find(|v| v.label == label)
    }
}

const SOFT_ABOVE_FLASC: &str = "Notably, SOFT consistently maintains higher accuracy compared to the other schemes. \
                                […] FLASC exhibits lower performance in this context.";
const HETLORA_UNDER: &str = "Similarly, HetLoRA, which transmits only the elements associated with the lower rank \
                             indices throughout training, underperforms SOFT.";
const RANDOM_UNSUITED: &str = "Furthermore, RLoRA and FedLoDrop are not well suited for LoRA-based fine-tuning.";
const COMPARABLE: &str = "The results demonstrate that our approach achieves comparable or superior performance to \
                          the existing methods while significantly reducing communication overhead.";
const OSFA_LOW: &str = "When OSFA with […], […] or […], the model suffers from insufficient capacity, despite \
                        benefiting from lower sparsification ratios compared to TSFA.";
const OSFA_HIGH: &str = "Conversely, when OSFA employs higher values such as […], […], or […], the increased model \
                         capacity requires a corresponding increase in the sparsification ratio to satisfy \
                         communication constraints. This, in turn, results in excessive sparsification, which \
                         limits the transmission of critical parameter updates and adversely affects learning.";
const DIAGONAL: &str = "After training with the proposed loss function as shown in Fig. 4(b), the product becomes \
                        approximately diagonal, demonstrating the successful enforcement of nearly orthogonal \
                        properties.";
const NEARLY_IDENTICAL: &str = "Adding the orthogonal loss results in negligible performance degradation and yields \
                                accuracy nearly identical to that of the task-loss-only baseline.";
const COVARIANCE_FALLS: &str = "This results in a lower covariance magnitude, as evidenced by the decreasing trend in \
                                Fig. 5.";
const ACCURACY_RISES: &str = "The results in Fig. 6 confirm this relationship, scenarios with lower covariance \
                              consistently achieve higher test accuracy, highlighting the pivotal role that \
                              covariance plays in model convergence and generalization under non-IID conditions.";
const TEXT_TASK: &str = "As shown in Fig. 7, our method consistently outperforms baseline schemes on this NLP task, \
                         demonstrating that the proposed technique is modality-agnostic and remains effective beyond \
                         image data.";

fn claim(
    text: &'static str,
    quote: &'static str,
    metric: Metric,
    a: &'static str,
    rel: Relation,
    b: &'static str,
) -> Claim {
    Claim { text, quote, metric, a, b, relation: rel }
}

fn greater(text: &'static str, quote: &'static str, a: &'static str, b: &'static str) -> Claim {
    claim(text, quote, Metric::FinalAccuracy, a, Relation::Greater, b)
}

/// Fig. 3's candidate CPU settings, each variant `<setting>-<method>`. Every variant names every swept key, so
/// the sweep's runs stay the same whatever the preset is later set to; setting `a` is the preset as first
/// written.
macro_rules! sweep_variant {
    ($setting:literal, $method:literal, [$($o:literal),*]) => {
        VariantSpec { label: concat!($setting, "-", $method), overrides: &[$($o,)* concat!("method.name=\"", $method, "\"")] }
    };
}

/// One candidate setting of the Fig. 3 sweep: its overrides with each method the sweep compares.
macro_rules! sweep_setting {
    ($setting:literal, $overrides:tt) => {
        [
            sweep_variant!($setting, "ilora", $overrides),
            sweep_variant!($setting, "rlora", $overrides),
            sweep_variant!($setting, "fedlodrop", $overrides),
        ]
    };
}

fn fig3_power_variants() -> Vec<VariantSpec> {
    [
        sweep_setting!("a", ["rounds.total=30", "data.samples_per_client=48", "partition.kind=\"iid\""]),
        sweep_setting!("b", ["rounds.total=20", "data.samples_per_client=96", "partition.kind=\"iid\""]),
        sweep_setting!(
            "c",
            [
                "rounds.total=30",
                "data.samples_per_client=48",
                "partition.kind=\"dirichlet\"",
                "partition.alpha=0.5",
                "partition.min_size=8"
            ]
        ),
    ]
    .concat()
}

const METHODS: [VariantSpec; 6] = [
    VariantSpec { label: "soft", overrides: &["method.name=\"soft\""] },
    VariantSpec { label: "flasc", overrides: &["method.name=\"flasc\""] },
    VariantSpec { label: "rlora", overrides: &["method.name=\"rlora\""] },
    VariantSpec { label: "hetlora", overrides: &["method.name=\"hetlora\""] },
    VariantSpec { label: "fedlodrop", overrides: &["method.name=\"fedlodrop\""] },
    VariantSpec { label: "ilora", overrides: &["method.name=\"ilora\""] },
];

/// Fig. 3(a)/(b)'s claims: SOFT above each baseline, and comparable to the unsparsified ILoRA.
fn fig3_claims() -> Vec<Claim> {
    vec![
        greater("SOFT above FLASC", SOFT_ABOVE_FLASC, "soft", "flasc"),
        greater("SOFT above RLoRA", RANDOM_UNSUITED, "soft", "rlora"),
        greater("SOFT above HetLoRA", HETLORA_UNDER, "soft", "hetlora"),
        greater("SOFT above FedLoDrop", RANDOM_UNSUITED, "soft", "fedlodrop"),
        claim(
            "SOFT comparable to ILoRA (no sparsification)",
            COMPARABLE,
            Metric::FinalAccuracy,
            "soft",
            Relation::NotWorse { margin: COMPARABLE_TO_DENSE },
            "ilora",
        ),
    ]
}

fn fig3_beyond() -> Vec<Claim> {
    vec![
        greater("FLASC above RLoRA", "", "flasc", "rlora"),
        greater("FLASC above HetLoRA", "", "flasc", "hetlora"),
        greater("HetLoRA above RLoRA", "", "hetlora", "rlora"),
    ]
}

/// Every figure `fedsoft reproduce` knows, in page order.
pub fn figures() -> Vec<FigureSpec> {
    vec![
        FigureSpec {
            id: "fig3-power",
            title: "Choosing Fig. 3's CPU setting: a power sweep",
            preset: "configs/cpu-fig3-dinov2.toml",
            base: &[],
            about: "Before Fig. 3 is judged, its CPU setting is chosen by how well the runs can tell methods apart, \
                    not by which method wins (SOFT is not run here). Per candidate setting, ILoRA (no \
                    sparsification) against the two random sparsifiers the paper calls unsuited, RLoRA and \
                    FedLoDrop, at ρ = 0.75 on paired seeds: the gap is ILoRA's final accuracy minus the weaker \
                    one's, the spread the standard deviation of that paired gap over seeds, and the power their \
                    ratio. Every candidate was sized to take under 5 minutes per run on two idle cores (the table's \
                    minutes are as measured, whatever else the machine was running); the setting with the largest \
                    power is the one Fig. 3's preset should use.",
            variants: fig3_power_variants(),
            claims: Vec::new(),
            beyond: Vec::new(),
            whole_components: true,
            sweep: Some(Sweep {
                for_figure: "fig3",
                dense: "ilora",
                sparse: &["rlora", "fedlodrop"],
                settings: &["a", "b", "c"],
            }),
        },
        FigureSpec {
            id: "fig3",
            title: "Fig. 3(a)/(b): SOFT against the baselines at one budget (ρ = 0.75)",
            preset: "configs/cpu-fig3-dinov2.toml",
            base: &[],
            about: "Every method at the same fixed drop ratio ρ = 0.75: at r = 8, (1 − ρ) r = 2 whole rank \
                    components, so FedLoDrop is the paper's method (whole random components).",
            variants: METHODS.to_vec(),
            claims: fig3_claims(),
            beyond: fig3_beyond(),
            whole_components: true,
            sweep: None,
        },
        FigureSpec {
            id: "fig3-harsh",
            title: "Fig. 3(a)/(b) at a harsher budget (ρ = 0.875)",
            preset: "configs/cpu-fig3-dinov2.toml",
            base: &["controller.rho=0.875"],
            about: "As Fig. 3 at ρ = 0.875: (1 − ρ) r = 1 whole rank component at r = 8.",
            variants: METHODS.to_vec(),
            claims: fig3_claims(),
            beyond: fig3_beyond(),
            whole_components: true,
            sweep: None,
        },
        FigureSpec {
            id: "fig3c",
            title: "Fig. 3(c): TSFA's rank against OSFA's low and high ranks",
            preset: "configs/cpu-fig3c-dinov2.toml",
            base: &[],
            about: "SOFT under the online Lyapunov ratio and one latency budget: TSFA at the offline stage's rank \
                    r*, OSFA at fixed low ranks 1, 2, 4 and high ranks 16, 32, 64.",
            variants: vec![
                VariantSpec { label: "tsfa", overrides: &[] },
                VariantSpec { label: "osfa-r1", overrides: &["controller.kind=\"osfa\"", "lora.rank=1"] },
                VariantSpec { label: "osfa-r2", overrides: &["controller.kind=\"osfa\"", "lora.rank=2"] },
                VariantSpec { label: "osfa-r4", overrides: &["controller.kind=\"osfa\"", "lora.rank=4"] },
                VariantSpec { label: "osfa-r16", overrides: &["controller.kind=\"osfa\"", "lora.rank=16"] },
                VariantSpec { label: "osfa-r32", overrides: &["controller.kind=\"osfa\"", "lora.rank=32"] },
                VariantSpec { label: "osfa-r64", overrides: &["controller.kind=\"osfa\"", "lora.rank=64"] },
            ],
            claims: vec![
                greater("TSFA above OSFA at r = 1", OSFA_LOW, "tsfa", "osfa-r1"),
                greater("TSFA above OSFA at r = 2", OSFA_LOW, "tsfa", "osfa-r2"),
                greater("TSFA above OSFA at r = 4", OSFA_LOW, "tsfa", "osfa-r4"),
                greater("TSFA above OSFA at r = 16", OSFA_HIGH, "tsfa", "osfa-r16"),
                greater("TSFA above OSFA at r = 32", OSFA_HIGH, "tsfa", "osfa-r32"),
                greater("TSFA above OSFA at r = 64", OSFA_HIGH, "tsfa", "osfa-r64"),
            ],
            beyond: vec![claim(
                "TSFA's average delay below OSFA's at r = 64",
                "",
                Metric::AvgDelay,
                "tsfa",
                Relation::Less,
                "osfa-r64",
            )],
            whole_components: false,
            sweep: None,
        },
        FigureSpec {
            id: "fig4",
            title: "Fig. 4: the orthogonality regulariser",
            preset: "configs/cpu-fig4-dinov2.toml",
            base: &[],
            about: "ILoRA (no sparsification) with the orthogonality weight λ = 0.01 and without it; the Gram \
                    matrices are those of the final global adapter's first module. The paper says the product \
                    becomes approximately diagonal; what is judged is whether the regulariser brings it nearer the \
                    diagonal, and the off-diagonal shares themselves are in the claims table.",
            variants: vec![
                VariantSpec { label: "with", overrides: &[] },
                VariantSpec { label: "without", overrides: &["training.orthogonality=0"] },
            ],
            claims: vec![
                claim(
                    "BᵀB and AAᵀ nearer diagonal with the regulariser than without",
                    DIAGONAL,
                    Metric::OffDiagonal,
                    "with",
                    Relation::Less,
                    "without",
                ),
                claim(
                    "accuracy nearly identical with and without it",
                    NEARLY_IDENTICAL,
                    Metric::FinalAccuracy,
                    "with",
                    Relation::Close { margin: CLOSE_ACCURACY },
                    "without",
                ),
            ],
            beyond: Vec::new(),
            whole_components: false,
            sweep: None,
        },
        FigureSpec {
            id: "fig5-6",
            title: "Figs. 5 and 6: covariance and accuracy as partitions get more IID",
            preset: "configs/cpu-fig5-6-dinov2-shards.toml",
            base: &[],
            about: "ILoRA without a communication constraint under label-sorted shards, m shards per client \
                    (more shards, closer to IID).",
            variants: vec![
                VariantSpec { label: "m1", overrides: &["partition.shards_per_client=1"] },
                VariantSpec { label: "m2", overrides: &["partition.shards_per_client=2"] },
                VariantSpec { label: "m4", overrides: &["partition.shards_per_client=4"] },
                VariantSpec { label: "m8", overrides: &["partition.shards_per_client=8"] },
            ],
            claims: vec![
                claim(
                    "covariance lower at m = 2 than m = 1",
                    COVARIANCE_FALLS,
                    Metric::MeanCovariance,
                    "m2",
                    Relation::Less,
                    "m1",
                ),
                claim(
                    "covariance lower at m = 4 than m = 2",
                    COVARIANCE_FALLS,
                    Metric::MeanCovariance,
                    "m4",
                    Relation::Less,
                    "m2",
                ),
                claim(
                    "covariance lower at m = 8 than m = 4",
                    COVARIANCE_FALLS,
                    Metric::MeanCovariance,
                    "m8",
                    Relation::Less,
                    "m4",
                ),
                greater("accuracy higher at m = 2 than m = 1", ACCURACY_RISES, "m2", "m1"),
                greater("accuracy higher at m = 4 than m = 2", ACCURACY_RISES, "m4", "m2"),
                greater("accuracy higher at m = 8 than m = 4", ACCURACY_RISES, "m8", "m4"),
            ],
            beyond: Vec::new(),
            whole_components: false,
            sweep: None,
        },
        FigureSpec {
            id: "fig7",
            title: "Fig. 7: the text task",
            preset: "configs/cpu-fig7-minilm-brown.toml",
            base: &[],
            about: "SOFT against the sparsifying baselines at ρ = 0.75 ((1 − ρ) r = 2 whole components at r = 8).",
            variants: METHODS[..5].to_vec(),
            claims: vec![
                greater("SOFT above FLASC", TEXT_TASK, "soft", "flasc"),
                greater("SOFT above RLoRA", TEXT_TASK, "soft", "rlora"),
                greater("SOFT above HetLoRA", TEXT_TASK, "soft", "hetlora"),
                greater("SOFT above FedLoDrop", TEXT_TASK, "soft", "fedlodrop"),
            ],
            beyond: vec![greater("FLASC above RLoRA", "", "flasc", "rlora")],
            whole_components: true,
            sweep: None,
        },
    ]
}

pub fn figure(id: &str) -> Option<FigureSpec> {
    figures().into_iter().find(|f| f.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_figure_of_the_paper_has_its_claims() {
        let ids: Vec<&str> = figures().iter().map(|f| f.id).collect();
        assert_eq!(ids, ["fig3-power", "fig3", "fig3-harsh", "fig3c", "fig4", "fig5-6", "fig7"]);
        for f in figures() {
            // A sweep judges nothing; every other entry judges at least one claim of the paper.
            assert_eq!(f.claims.is_empty(), f.sweep.is_some(), "{}", f.id);
            for c in f.claims.iter().chain(&f.beyond) {
                assert!(
                    f.variant(c.a).is_some() && f.variant(c.b).is_some(),
                    "{}: {} names a missing variant",
                    f.id,
                    c.text
                );
            }
            // The paper's claims quote the paper; the rest say they are not the paper's.
            assert!(f.claims.iter().all(|c| c.quote.ends_with('.') && c.quote.len() > 40), "{}", f.id);
            assert!(f.beyond.iter().all(|c| c.quote.is_empty()), "{}", f.id);
            let labels: std::collections::BTreeSet<&str> = f.variants.iter().map(|v| v.label).collect();
            assert_eq!(labels.len(), f.variants.len(), "{}: duplicate variant", f.id);
        }
    }

    #[test]
    fn the_power_sweep_runs_every_setting_for_every_method_and_never_soft() {
        let f = figure("fig3-power").unwrap();
        let sweep = f.sweep.clone().unwrap();
        assert!(figure(sweep.for_figure).is_some());
        assert_eq!(f.variants.len(), sweep.settings.len() * (1 + sweep.sparse.len()));
        for s in sweep.settings {
            let dense = f.variant(&format!("{s}-{}", sweep.dense)).unwrap();
            let (&method, setting) = dense.overrides.split_last().unwrap();
            assert_eq!(method, format!("method.name=\"{}\"", sweep.dense));
            for m in sweep.sparse {
                let v = f.variant(&format!("{s}-{m}")).unwrap();
                // Within a setting only the method differs.
                assert_eq!(&v.overrides[..v.overrides.len() - 1], setting, "{s}-{m}");
                assert_eq!(v.overrides.last().unwrap(), &format!("method.name=\"{m}\""));
            }
            // Each setting names every swept key, so changing the preset later does not change the sweep.
            for key in ["rounds.total=", "data.samples_per_client=", "partition.kind="] {
                assert!(setting.iter().any(|o| o.starts_with(key)), "{s} lacks {key}");
            }
        }
        assert!(f.variants.iter().all(|v| !v.label.ends_with("-soft")));
    }

    #[test]
    fn fig3_judges_soft_against_each_baseline_and_fig3c_every_osfa_rank() {
        for id in ["fig3", "fig3-harsh"] {
            let f = figure(id).unwrap();
            for b in ["flasc", "rlora", "hetlora", "fedlodrop"] {
                assert!(
                    f.claims.iter().any(|c| c.a == "soft" && c.b == b && c.relation == Relation::Greater),
                    "{id} {b}"
                );
            }
            assert!(f.claims.iter().any(|c| c.b == "ilora"));
            assert!(f.whole_components);
        }
        let c = figure("fig3c").unwrap();
        for r in [1, 2, 4, 16, 32, 64] {
            let label = format!("osfa-r{r}");
            assert!(c.claims.iter().any(|x| x.a == "tsfa" && x.b == label), "{label}");
        }
    }
}
