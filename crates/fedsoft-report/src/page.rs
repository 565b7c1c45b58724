//! The results page (`docs/results.md` and its `results/` folder), written only from the stored figure
//! records: [`render`] is a pure function of them, [`write`] puts the page and its figures on disk, and
//! [`check`] re-derives both and names the first line (or figure) that differs.

use crate::claims::{Claim, FINAL_EVALUATIONS, Judged, Metric, Verdict, evaluate};
use crate::plot::{LineChart, Series, colour, line_chart_png_bytes};
use crate::record::{FigureRecord, RunRecord, Setting, read_all};
use crate::registry::{self, CLOSE_ACCURACY, COMPARABLE_TO_DENSE, FigureSpec};
use crate::stats::{CONFIDENCE, MIN_SEEDS, holm, mean_sd, one_sided_level};
use crate::{ReportError, write_atomic};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The page's first line, by which a file is known to be a results page that `fedsoft reproduce` may rewrite.
const TITLE: &str = "# Which of the paper's claims hold at CPU scale";

/// Refuses a `--page` path holding a file that is not a results page (`--page README.md`): writing the page would
/// replace it whole. A missing file is the page's to write.
pub fn claim(page: &Path) -> Result<(), ReportError> {
    match std::fs::read(page) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ReportError::output(page, e)),
        Ok(bytes) if bytes.starts_with(TITLE.as_bytes()) => Ok(()),
        Ok(_) => Err(ReportError::output(
            page,
            format!(
                "is not a results page (its first line is not {TITLE:?}), and writing one would replace it: give \
                 --page a new file or an earlier page"
            ),
        )),
    }
}

/// The page's figure folder: `<page dir>/results`.
pub fn results_dir(page: &Path) -> PathBuf {
    page.parent().unwrap_or(Path::new(".")).join("results")
}

fn open_marker(id: &str) -> String {
    format!("<!-- reproduce:{id} -->")
}
fn close_marker(id: &str) -> String {
    format!("<!-- /reproduce:{id} -->")
}

/// The command line that reproduces a record.
pub fn command(rec: &FigureRecord) -> String {
    let extra: String = rec.overrides.iter().map(|o| format!(" --set '{o}'")).collect();
    format!("fedsoft reproduce {} --seeds {}{extra}", rec.figure, rec.seeds.len())
}

pub(crate) fn pct(x: f64) -> String {
    format!("{:+.2}", 100.0 * x)
}

/// Each seed's difference, in the unit of [`effect`]: `+0.13, -1.07 points` for accuracies.
fn per_seed(metric: Metric, j: &Judged) -> String {
    let d = j.a.iter().zip(&j.b).map(|(x, y)| x - y);
    if metric == Metric::FinalAccuracy {
        format!("{} points", d.map(pct).collect::<Vec<_>>().join(", "))
    } else {
        d.map(|d| format!("{d:+.4}")).collect::<Vec<_>>().join(", ")
    }
}

/// `+1.23 [+0.40, +2.06]` in points for accuracies, plain otherwise.
fn effect(metric: Metric, j: &Judged) -> String {
    let Some(i) = j.interval else { return "–".into() };
    if metric == Metric::FinalAccuracy {
        format!("{} [{}, {}] points", pct(i.mean), pct(i.lo), pct(i.hi))
    } else {
        format!("{:+.4} [{:+.4}, {:+.4}]", i.mean, i.lo, i.hi)
    }
}

pub(crate) fn runs<'a>(rec: &'a FigureRecord, label: &str) -> Result<&'a [RunRecord], ReportError> {
    rec.variant(label).map(|v| v.runs.as_slice()).ok_or_else(|| ReportError::Input {
        path: format!("results/{}.json", rec.figure),
        detail: format!("no variant {label:?}, which the registry's claims compare: run `{}` again", command(rec)),
    })
}

fn judged(rec: &FigureRecord, claim: &Claim) -> Result<Judged, ReportError> {
    judged_on_first(rec, claim, rec.seeds.len())
}

/// A claim judged on the record's first `n` seeds (every variant's runs are in the figure's seed order).
fn judged_on_first(rec: &FigureRecord, claim: &Claim, n: usize) -> Result<Judged, ReportError> {
    let (a, b) = (runs(rec, claim.a)?, runs(rec, claim.b)?);
    evaluate(claim, &a[..n.min(a.len())], &b[..n.min(b.len())])
        .map_err(|detail| ReportError::Input { path: format!("results/{}.json", rec.figure), detail })
}

pub(crate) fn describe(s: &Setting) -> String {
    let input = match (s.image_size, s.max_len) {
        (Some(px), _) => format!("at {px} px"),
        (None, Some(t)) => format!("at {t} tokens"),
        (None, None) => String::new(),
    };
    let layers = if s.layers.is_empty() {
        "every layer".to_string()
    } else {
        format!("layers {}", s.layers.iter().map(usize::to_string).collect::<Vec<_>>().join(", "))
    };
    let per_client = s.samples_per_client.map_or("all their".into(), |n| n.to_string());
    let test = s.test_samples.map_or("the whole test split".into(), |n| format!("{n} test samples"));
    format!(
        "{} on {} {input}; LoRA on {} of {layers}; {} clients, {} per round, {per_client} training samples each, {} \
         partition; {} rounds, evaluated every {} on {test}; {} local epoch(s) of batch {}, lr {}; uplink {} MHz, \
         mean SNR {} dB.",
        s.arch,
        s.dataset,
        s.targets.join(", "),
        s.clients,
        s.per_round,
        s.partition,
        s.rounds,
        s.eval_every,
        s.local_epochs,
        s.batch_size,
        s.lr,
        s.bandwidth_hz / 1e6,
        s.mean_snr_db,
    )
}

const INTRO: &str = "Every line of this page is written by `fedsoft reproduce` from the stored runs in `results/*.json` \
(per run: seed, config digest, per-round test metrics, summary); `fedsoft reproduce --check` re-derives every table, \
verdict and figure from those files and fails if the page differs, or if any stored run was made under another \
config than its figure's preset resolves to now (so the page never describes a setting the presets no longer run).";

fn method_text() -> String {
    format!(
        "Each figure runs its variants on the same seeds; a seed fixes the data split, the test set, the scheduled \
         clients and the channels, so the runs of one seed are paired. A claim compares one metric between two \
         variants through the per-seed differences A − B: their mean with a {}% Student t interval over seeds \
         (n − 1 degrees of freedom). A claim **holds** when the whole interval lies on the claimed side (of 0, or of \
         the stated margin), **does not hold** when it lies wholly on the other side, and is **inconclusive** \
         otherwise; with fewer than {MIN_SEEDS} seeds it is **not judged**. Final accuracy is the mean of a run's \
         last {FINAL_EVALUATIONS} evaluations. Margins were fixed in the claim registry before any run: \"nearly \
         identical\" is within ±{}, \"comparable to ILoRA\" at most {} below it. The main table judges the \
         paper's claims and no others; comparisons the paper does not make are listed apart. A figure run on more \
         than {MIN_SEEDS} seeds also shows its claims on the first {MIN_SEEDS} alone: seeds added after an \
         inconclusive verdict are sequential testing, which makes the nominal {}% error rate somewhat optimistic, \
         so a reader can see what the added seeds changed.",
        (100.0 * CONFIDENCE).round(),
        Metric::FinalAccuracy.margin_text(CLOSE_ACCURACY),
        Metric::FinalAccuracy.margin_text(COMPARABLE_TO_DENSE),
        (100.0 * (1.0 - CONFIDENCE)).round(),
    )
}

/// The paper's judged claims taken together: each one's p-value and whether its "holds" survives Holm's
/// correction over all of them.
struct Family {
    /// `(figure, claim text, p, kept)`, in page order.
    members: Vec<(&'static str, &'static str, f64, bool)>,
    /// How many of them hold on their own.
    holding: usize,
}

impl Family {
    fn of(figs: &[FigureSpec], records: &[FigureRecord]) -> Result<Self, ReportError> {
        let (mut members, mut holding) = (Vec::new(), 0);
        for f in figs {
            let Some(rec) = records.iter().find(|r| r.figure == f.id) else { continue };
            for c in &f.claims {
                let j = judged(rec, c)?;
                holding += usize::from(j.verdict == Verdict::Holds);
                if let Some(p) = j.p {
                    members.push((f.id, c.text, p, false));
                }
            }
        }
        let p: Vec<f64> = members.iter().map(|m| m.2).collect();
        for (m, kept) in members.iter_mut().zip(holm(&p, one_sided_level())) {
            m.3 = kept;
        }
        Ok(Family { members, holding })
    }

    fn get(&self, fig: &str, claim: &str) -> Option<(f64, bool)> {
        self.members.iter().find(|m| m.0 == fig && m.1 == claim).map(|m| (m.2, m.3))
    }

    /// What the correction changes, in a paragraph under the table.
    fn paragraph(&self) -> String {
        let kept = self.members.iter().filter(|m| m.3).count();
        let dropped: Vec<String> = self
            .members
            .iter()
            .filter(|m| !m.3 && m.2 < one_sided_level())
            .map(|m| format!("{} {} (p = {})", m.0, m.1, p_text(m.2)))
            .collect();
        let level = format!("{:.1}", 100.0 * one_sided_level());
        let mut text = format!(
            "Taken together: each verdict allows a {level}% chance of a wrong **holds** (one-sided), so among {n} \
             claims some could hold by chance. Holm's step-down correction over all {n} judged claims of the paper \
             (one family, because \"the paper's claims hold\" is one statement about all of them; the strictest \
             usual choice), which holds the chance of even one wrong **holds** among them to {level}% whatever \
             their dependence, keeps {kept} of the {holding} that hold (last column).",
            n = self.members.len(),
            holding = self.holding
        );
        if !dropped.is_empty() {
            let _ = write!(text, " Not kept: {}.", dropped.join("; "));
        }
        text
    }
}

/// A verdict once Holm's correction has been applied: a **holds** it keeps, one it does not, or nothing to keep.
pub(crate) fn after_correction(verdict: Verdict, kept: bool) -> &'static str {
    match (verdict, kept) {
        (Verdict::Holds, true) => "**holds**",
        (Verdict::Holds, false) => "not kept",
        _ => "–",
    }
}

/// `0.0123`, or `< 0.0001`.
pub(crate) fn p_text(p: f64) -> String {
    if p < 1e-4 { "< 0.0001".into() } else { format!("{p:.4}") }
}

/// The rows of one figure in a summary table; with a family, its p-value and Holm columns too.
fn summary_rows(
    md: &mut String,
    fig: &FigureSpec,
    rec: Option<&FigureRecord>,
    claims: &[Claim],
    family: Option<&Family>,
) -> Result<(), ReportError> {
    let Some(rec) = rec else {
        let n = claims.len();
        let what = if n == 1 { "1 claim".to_string() } else { format!("{n} claims") };
        let blank = if family.is_some() { " | | | | | | |" } else { " | | | | |" };
        let _ = writeln!(md, "| {} | {what}, not run yet (`fedsoft reproduce {}`){blank}", fig.id, fig.id);
        return Ok(());
    };
    for c in claims {
        let j = judged(rec, c)?;
        let corrected = match family.map(|f| (f.get(fig.id, c.text), j.verdict)) {
            None => String::new(),
            Some((Some((p, kept)), verdict)) => {
                format!(" {} | {} |", p_text(p), after_correction(verdict, kept))
            }
            Some((None, _)) => " – | – |".into(),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} {} | {} | {} | **{}** |{corrected}",
            fig.id,
            c.text,
            c.metric.name(),
            c.relation_text(),
            effect(c.metric, &j),
            rec.seeds.len(),
            j.verdict.word()
        );
    }
    Ok(())
}

fn claims_table(md: &mut String, rec: &FigureRecord, claims: &[Claim], quote: bool) -> Result<(), ReportError> {
    let words = if quote { " paper's words |" } else { "" };
    let rule = if quote { "---|" } else { "" };
    let _ = writeln!(
        md,
        "| claim |{words} metric | A | B | A mean ± sd | B mean ± sd | per-seed A − B | mean A − B [95 % CI] | verdict |\n|---|{rule}---|---|---|---|---|---|---|---|"
    );
    for c in claims {
        let j = judged(rec, c)?;
        let ((am, asd), (bm, bsd)) = (mean_sd(&j.a), mean_sd(&j.b));
        let q = if quote { format!(" “{}” |", c.quote) } else { String::new() };
        let _ = writeln!(
            md,
            "| {} |{q} {} {} | {} | {} | {am:.4} ± {asd:.4} | {bm:.4} ± {bsd:.4} | {} | {} | **{}** |",
            c.text,
            c.metric.name(),
            c.relation_text(),
            c.a,
            c.b,
            per_seed(c.metric, &j),
            effect(c.metric, &j),
            j.verdict.word()
        );
    }
    Ok(())
}

/// The paper's claims judged on a figure's first `n` seeds alone, beside the full verdicts above them.
fn first_seeds_table(md: &mut String, rec: &FigureRecord, n: usize, claims: &[Claim]) -> Result<(), ReportError> {
    let seeds: Vec<String> = rec.seeds.iter().take(n).map(u64::to_string).collect();
    let _ = writeln!(
        md,
        "\nThe paper's claims on seeds {} alone, to show what the later seeds changed:\n\n| claim | mean A − B [95 % CI] | \
         verdict |\n|---|---|---|",
        seeds.join(", ")
    );
    for c in claims {
        let j = judged_on_first(rec, c, n)?;
        let _ = writeln!(md, "| {} | {} | **{}** |", c.text, effect(c.metric, &j), j.verdict.word());
    }
    Ok(())
}

/// The standard error of one accuracy `p` measured on `n` test samples.
fn test_error(p: f64, n: usize) -> f64 {
    (p * (1.0 - p) / n as f64).sqrt()
}

fn section(md: &mut String, fig: &FigureSpec, rec: &FigureRecord) -> Result<(), ReportError> {
    let _ = writeln!(md, "{}", open_marker(fig.id));
    let _ = writeln!(md, "## {}\n", fig.title);
    let seeds: Vec<String> = rec.seeds.iter().map(u64::to_string).collect();
    let _ = writeln!(md, "{}\n", fig.about);
    let _ = writeln!(md, "Setting (from the resolved configs): {}\n", describe(&rec.setting));
    let overrides = if rec.overrides.is_empty() {
        String::new()
    } else {
        format!(" with `--set` {}", rec.overrides.iter().map(|o| format!("`{o}`")).collect::<Vec<_>>().join(", "))
    };
    let _ = writeln!(
        md,
        "Preset `{}`{overrides}; seeds {} ({} paired runs per variant).\n",
        rec.preset,
        seeds.join(", "),
        rec.seeds.len()
    );
    let acc: Vec<f64> =
        rec.variants.iter().flat_map(|v| v.runs.iter().filter_map(|r| Metric::FinalAccuracy.of(r))).collect();
    if let (Some(n), false) = (rec.setting.test_samples, acc.is_empty()) {
        let p = mean_sd(&acc).0;
        let _ = writeln!(
            md,
            "Test set: {n} samples per seed (the same for every variant of a seed); one accuracy near {p:.3} \
             measured on it has a standard error of {:.2} points.\n",
            100.0 * test_error(p, n)
        );
    }
    if let Some(first) = rec.variants.first().and_then(|v| v.runs.first()) {
        let acc = first.accuracy();
        let last: Vec<String> =
            acc[acc.len().saturating_sub(FINAL_EVALUATIONS)..].iter().map(|p| format!("{}", p.0)).collect();
        let _ = writeln!(md, "Final accuracy: the mean of the evaluations at rounds {}.\n", last.join(", "));
    }
    let _ = writeln!(md, "Produced by:\n\n```bash\n{}\n```\n", command(rec));
    let _ = writeln!(
        md,
        "| variant | method | controller | rank | ρ | final accuracy (mean ± sd) | average delay [s] | budget τ̄ [s] | uplink Mbit | wall time per run |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    for v in &rec.variants {
        let acc: Vec<f64> = v.runs.iter().filter_map(|r| Metric::FinalAccuracy.of(r)).collect();
        let delay: Vec<f64> = v.runs.iter().map(|r| r.summary.avg_delay_s).collect();
        let bits: Vec<f64> = v.runs.iter().map(|r| r.summary.uplink_bits_paper as f64 / 1e6).collect();
        let wall: Vec<f64> = v.runs.iter().map(|r| r.summary.wall_s).collect();
        let budget = v.runs.first().map_or(0.0, |r| r.summary.latency_budget_s);
        let ((am, asd), (dm, dsd), (bm, _), (wm, _)) = (mean_sd(&acc), mean_sd(&delay), mean_sd(&bits), mean_sd(&wall));
        let s = &v.setting;
        let rho = s.rho.map_or("online".into(), |r| format!("{r}"));
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {rho} | {am:.4} ± {asd:.4} | {dm:.3} ± {dsd:.3} | {budget:.3} | {bm:.1} | {:.1} min |",
            v.label,
            s.method,
            s.controller,
            s.rank,
            wm / 60.0
        );
    }
    let _ = writeln!(md, "\nThe paper's claims:\n");
    claims_table(md, rec, &fig.claims, true)?;
    if !fig.beyond.is_empty() {
        let _ = writeln!(md, "\nBeyond the paper (comparisons it does not make):\n");
        claims_table(md, rec, &fig.beyond, false)?;
    }
    if rec.seeds.len() > MIN_SEEDS {
        first_seeds_table(md, rec, MIN_SEEDS, &fig.claims)?;
    }
    let _ = writeln!(md, "\n![{}](results/{}.png)", fig.title, fig.id);
    let _ = writeln!(md, "{}", close_marker(fig.id));
    Ok(())
}

/// The whole page from the stored records (registry order; figures without a record are listed as not run).
pub fn render(records: &[FigureRecord]) -> Result<String, ReportError> {
    let figs = registry::figures();
    let find = |id: &str| records.iter().find(|r| r.figure == id);
    let mut md = String::new();
    let _ = writeln!(md, "{TITLE}\n");
    let _ = writeln!(md, "{INTRO}\n");
    let _ = writeln!(md, "{}\n", method_text());
    let _ = writeln!(md, "## The paper's claims\n");
    let family = Family::of(&figs, records)?;
    let _ = writeln!(
        md,
        "| figure | claim | metric | mean A − B [95 % CI] | seeds | verdict | p (one-sided) | with all claims \
         corrected (Holm) |\n|---|---|---|---|---|---|---|---|"
    );
    for f in figs.iter().filter(|f| !f.claims.is_empty()) {
        summary_rows(&mut md, f, find(f.id), &f.claims, Some(&family))?;
    }
    if !family.members.is_empty() {
        let _ = writeln!(md, "\n{}", family.paragraph());
    }
    let _ = writeln!(md, "\n## Beyond the paper\n\nComparisons the paper does not make, judged by the same rule.\n");
    let _ = writeln!(
        md,
        "| figure | comparison | metric | mean A − B [95 % CI] | seeds | verdict |\n|---|---|---|---|---|---|"
    );
    for f in figs.iter().filter(|f| !f.beyond.is_empty()) {
        summary_rows(&mut md, f, find(f.id), &f.beyond, None)?;
    }
    for f in &figs {
        if let Some(rec) = find(f.id) {
            md.push('\n');
            match &f.sweep {
                Some(sweep) => crate::sweep::section(&mut md, f, sweep, rec, find(sweep.for_figure))?,
                None => section(&mut md, f, rec)?,
            }
        }
    }
    Ok(md)
}

/// The figure of a record: each variant's test accuracy, mean ± one standard deviation over seeds.
pub fn chart(fig: &FigureSpec, rec: &FigureRecord) -> LineChart {
    let variants: Vec<(&str, &[RunRecord])> = rec.variants.iter().map(|v| (v.label.as_str(), &v.runs[..])).collect();
    accuracy_over_seeds(format!("{}: test accuracy, mean ± sd over {} seeds", fig.id, rec.seeds.len()), &variants)
}

/// Test accuracy per round of each variant, its mean over the variant's runs with a band of one standard
/// deviation, over the rounds every run evaluated.
pub(crate) fn accuracy_over_seeds(title: String, variants: &[(&str, &[RunRecord])]) -> LineChart {
    let series = variants
        .iter()
        .enumerate()
        .map(|(i, (label, runs))| {
            let curves: Vec<Vec<(f64, f64)>> = runs.iter().map(RunRecord::accuracy).collect();
            let points = curves.iter().map(Vec::len).min().unwrap_or(0);
            let (mut mean, mut band) = (Vec::new(), Vec::new());
            for k in 0..points {
                let ys: Vec<f64> = curves.iter().map(|c| c[k].1).collect();
                let (m, s) = mean_sd(&ys);
                let x = curves[0][k].0;
                mean.push((x, m));
                band.push((x, m - s, m + s));
            }
            Series { label: label.to_string(), points: mean, colour: colour(i), faint: false, dashed: false, band }
        })
        .collect();
    LineChart {
        title,
        x_label: "round".into(),
        y_label: "test accuracy".into(),
        series,
        references: Vec::new(),
        unit_interval: false,
        y_max: None,
        integer_x: true,
    }
}

/// Figures in `dir` of registry figures that no record backs.
fn stale_figures(dir: &Path, records: &[FigureRecord]) -> Vec<PathBuf> {
    registry::figures()
        .iter()
        .filter(|f| !records.iter().any(|r| r.figure == f.id))
        .map(|f| dir.join(format!("{}.png", f.id)))
        .filter(|p| p.is_file())
        .collect()
}

/// Renders the page and every figure from the records in `<page dir>/results/` and writes them atomically.
/// [`crate::register_font`] must have been called.
pub fn write(page: &Path) -> Result<(), ReportError> {
    claim(page)?;
    let dir = results_dir(page);
    let records = read_all(&dir)?;
    let md = render(&records)?;
    for rec in &records {
        let fig = registry::figure(&rec.figure).expect("read_all keeps registry figures only");
        let png = line_chart_png_bytes(&chart(&fig, rec)).map_err(|e| ReportError::output(&dir, e))?;
        write_atomic(&dir.join(format!("{}.png", rec.figure)), &png)?;
    }
    // A figure of a section that no record backs any more would be left behind for no page to show.
    for stale in stale_figures(&dir, &records) {
        std::fs::remove_file(&stale).map_err(|e| ReportError::output(&stale, e))?;
    }
    if let Some(parent) = page.parent() {
        std::fs::create_dir_all(parent).map_err(|e| ReportError::output(parent, e))?;
    }
    write_atomic(page, md.as_bytes())
}

/// Checks the section markers of a page: each figure's pair once, opened before closed, not nested.
pub fn check_markers(page: &Path, text: &str) -> Result<(), ReportError> {
    let mut open: Option<(String, usize)> = None;
    let mut seen = std::collections::BTreeSet::new();
    let bad = |line: usize, detail: String| ReportError::input(page, format!("line {line}: {detail}"));
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let t = line.trim();
        if let Some(id) = t.strip_prefix("<!-- /reproduce:").and_then(|r| r.strip_suffix(" -->")) {
            match open.take() {
                Some((o, _)) if o == id => {}
                Some((o, at)) => {
                    return Err(bad(n, format!("closes {id:?} while {o:?} (opened on line {at}) is open")));
                }
                None => return Err(bad(n, format!("closes {id:?}, which is not open"))),
            }
        } else if let Some(id) = t.strip_prefix("<!-- reproduce:").and_then(|r| r.strip_suffix(" -->")) {
            if let Some((o, at)) = &open {
                return Err(bad(n, format!("opens {id:?} inside {o:?} (opened on line {at})")));
            }
            if !seen.insert(id.to_string()) {
                return Err(bad(n, format!("a second section {id:?}")));
            }
            open = Some((id.to_string(), n));
        } else if t.contains("reproduce:") && t.starts_with("<!--") {
            return Err(bad(n, format!("a damaged section marker: {t:?}")));
        }
    }
    match open {
        Some((o, at)) => Err(bad(at, format!("section {o:?} is never closed"))),
        None => Ok(()),
    }
}

/// The first line where the page differs from what the records give, as an error naming it.
pub fn compare_lines(page: &Path, text: &str, expected: &str) -> Result<(), ReportError> {
    let (mut got, mut want) = (text.lines(), expected.lines());
    for n in 1.. {
        match (got.next(), want.next()) {
            (None, None) => break,
            (g, w) if g == w => {}
            (g, w) => {
                return Err(ReportError::input(
                    page,
                    format!(
                        "line {n} is not what the stored runs give (was it edited by hand?)\n  on the page: {}\n  \
                         from the runs: {}\nrun `fedsoft reproduce --page {} FIGURE` to rewrite it",
                        g.unwrap_or("(end of page)"),
                        w.unwrap_or("(end of page)"),
                        page.display()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Re-derives the page and its figures from the stored records; the error names the first line or figure
/// that differs.
pub fn check(page: &Path) -> Result<(), ReportError> {
    let text = std::fs::read_to_string(page).map_err(|e| ReportError::input(page, e))?;
    check_markers(page, &text)?;
    let dir = results_dir(page);
    let records = read_all(&dir)?;
    compare_lines(page, &text, &render(&records)?)?;
    if let Some(stale) = stale_figures(&dir, &records).first() {
        return Err(ReportError::input(stale, "has no record behind it: a figure the page does not compute"));
    }
    for rec in &records {
        let fig = registry::figure(&rec.figure).expect("registry figure");
        let png = dir.join(format!("{}.png", rec.figure));
        let want = line_chart_png_bytes(&chart(&fig, rec)).map_err(|e| ReportError::output(&png, e))?;
        let got = std::fs::read(&png).map_err(|e| ReportError::input(&png, e))?;
        if got != want {
            return Err(ReportError::input(&png, "is not the figure the stored runs give"));
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::record::{RoundPoint, VariantRecord, VariantSetting};
    use fedsoft_records::{ControllerKind, MethodKind, Summary};

    pub(crate) fn run(seed: u64, acc: f64, off: f64) -> RunRecord {
        let rounds = (1..=4)
            .map(|r| RoundPoint {
                round: r,
                rho: 0.0,
                delay_s: 1.0,
                avg_delay_s: 1.0,
                covariance: Some(0.01),
                test_accuracy: Some(acc - 0.01 * (4 - r) as f64),
            })
            .collect();
        let summary = Summary {
            name: "t".into(),
            method: MethodKind::Ilora,
            controller: ControllerKind::Fixed,
            rounds: 4,
            completed: true,
            num_classes: 10,
            rank: 8,
            orthogonality: Some(0.01),
            initial_test_accuracy: None,
            initial_test_loss: None,
            final_test_accuracy: Some(acc),
            final_test_loss: Some(1.0),
            avg_delay_s: 1.0,
            latency_budget_s: 1.1,
            online_rule: None,
            avg_rho: Some(0.0),
            offline_rho: None,
            uplink_bits_paper: 1_000_000,
            uplink_bits_encoded: 1_000_000,
            uploads: 40,
            wall_s: 60.0,
            out_dir: "x".into(),
        };
        RunRecord { seed, config_sha256: "0".repeat(64), rounds, summary, off_diagonal: Some(off) }
    }

    pub(crate) fn setting() -> Setting {
        Setting {
            arch: "dinov2-s14".into(),
            dataset: "fashion-mnist".into(),
            image_size: Some(56),
            max_len: None,
            targets: vec!["query".into(), "value".into()],
            layers: vec![0, 3],
            clients: 100,
            per_round: 10,
            samples_per_client: Some(48),
            test_samples: Some(2000),
            partition: "iid".into(),
            rounds: 4,
            eval_every: 1,
            local_epochs: 1,
            batch_size: 8,
            lr: 1e-3,
            bandwidth_hz: 1e6,
            mean_snr_db: "10".into(),
        }
    }

    fn fig4(seeds: u64) -> FigureRecord {
        let variant = |label: &str, shift: f64, off: f64| VariantRecord {
            label: label.into(),
            overrides: Vec::new(),
            setting: VariantSetting {
                method: "ilora".into(),
                controller: "fixed".into(),
                rank: 8,
                rho: Some(0.0),
                orthogonality: 0.01,
            },
            run_setting: None,
            runs: (1..=seeds).map(|s| run(s, 0.80 + 0.003 * s as f64 + shift, off + 0.001 * s as f64)).collect(),
        };
        FigureRecord {
            schema: crate::record::SCHEMA,
            figure: "fig4".into(),
            preset: "configs/cpu-fig4-dinov2.toml".into(),
            overrides: Vec::new(),
            seeds: (1..=seeds).collect(),
            setting: setting(),
            variants: vec![variant("with", 0.001, 0.10), variant("without", 0.0, 0.30)],
        }
    }

    #[test]
    fn the_page_judges_every_registry_claim_and_lists_unrun_figures() {
        let md = render(&[fig4(5)]).unwrap();
        for f in registry::figures().into_iter().filter(|f| !f.claims.is_empty()) {
            if f.id != "fig4" {
                assert!(md.contains(&format!("| {} | {} claims, not run yet", f.id, f.claims.len())), "{}", f.id);
            }
        }
        // Off-diagonal share 0.2 lower on every seed with no spread: holds; accuracy +0.1 point: close.
        assert!(md.contains("| fig4 | BᵀB and AAᵀ nearer diagonal with the regulariser than without | Gram off-diagonal share < | -0.2000 [-0.2000, -0.2000] | 5 | **holds** |"), "{md}");
        assert!(md.contains("| fig4 | accuracy nearly identical with and without it | final accuracy ≈ (within ±1 point) | +0.10 [+0.10, +0.10] points | 5 | **holds** |"), "{md}");
        // Per-seed accuracy differences in the points of the interval beside them.
        assert!(md.contains("| +0.10, +0.10, +0.10, +0.10, +0.10 points | +0.10 [+0.10, +0.10] points |"), "{md}");
        assert!(md.contains("2000 samples per seed"), "{md}");
        check_markers(Path::new("p.md"), &md).unwrap();
        compare_lines(Path::new("p.md"), &md, &render(&[fig4(5)]).unwrap()).unwrap();
    }

    #[test]
    fn a_claim_that_holds_alone_but_not_with_the_others_corrected_is_marked_not_kept() {
        let mut rec = fig4(5);
        // Off-diagonal share lower with the regulariser by 0.05-0.25 (t = 3.07 on 4 degrees of freedom: p = 0.0187, as SciPy gives it;
        // under the 0.025 one claim is allowed, over the 0.0125 Holm allows the smaller of two p-values).
        let gaps = [0.05, 0.2, 0.15, 0.02, 0.25];
        // Accuracy within ±2 points either way: the closeness claim is inconclusive, its p (the larger of two
        // one-sided tests, 0.1593 by SciPy) far above 0.025.
        let shifts = [0.02, -0.02, 0.015, -0.015, 0.0];
        for (s, run) in rec.variants[0].runs.iter_mut().enumerate() {
            run.off_diagonal = Some(0.30 - gaps[s]);
            for p in run.rounds.iter_mut() {
                p.test_accuracy = p.test_accuracy.map(|a| a + shifts[s]);
            }
        }
        for run in rec.variants[1].runs.iter_mut() {
            run.off_diagonal = Some(0.30);
        }
        let md = render(&[rec]).unwrap();
        let row = md.lines().find(|l| l.starts_with("| fig4 | BᵀB and AAᵀ")).unwrap();
        assert!(row.ends_with("| 5 | **holds** | 0.0187 | not kept |"), "{row}");
        let row = md.lines().find(|l| l.starts_with("| fig4 | accuracy nearly identical")).unwrap();
        assert!(row.ends_with("| **inconclusive** | 0.1593 | – |"), "{row}");
        assert!(md.contains("keeps 0 of the 1 that hold (last column). Not kept: fig4 BᵀB and AAᵀ nearer"), "{md}");
        // Where both claims are clear, both are kept and nothing is listed as dropped.
        let clear = render(&[fig4(5)]).unwrap();
        assert!(clear.contains("keeps 2 of the 2 that hold (last column).\n"), "{clear}");
        assert!(clear.contains("| 5 | **holds** | < 0.0001 | **holds** |"), "{clear}");
        // Too few seeds for a verdict: no p-values and no paragraph.
        let few = render(&[fig4(3)]).unwrap();
        assert!(few.contains("| 3 | **not judged** | – | – |") && !few.contains("Taken together"), "{few}");
    }

    #[test]
    fn a_figure_past_five_seeds_also_shows_its_claims_on_the_first_five() {
        let five = render(&[fig4(5)]).unwrap();
        assert!(!five.contains("alone, to show what the later seeds changed"), "{five}");
        let mut seven = fig4(7);
        // Seeds 6 and 7 reverse the accuracy gap, so the two tables must differ where they are judged apart.
        for (v, sign) in seven.variants.iter_mut().zip([1.0, -1.0]) {
            for r in v.runs.iter_mut().filter(|r| r.seed > 5) {
                for p in r.rounds.iter_mut() {
                    p.test_accuracy = p.test_accuracy.map(|a| a - sign * 0.02);
                }
            }
        }
        let md = render(&[seven.clone()]).unwrap();
        assert!(md.contains("The paper's claims on seeds 1, 2, 3, 4, 5 alone, to show what the later seeds changed:"));
        let mut first_five = seven.clone();
        first_five.seeds.truncate(5);
        first_five.variants.iter_mut().for_each(|v| v.runs.truncate(5));
        let on_five = render(&[first_five]).unwrap();
        let row = |page: &str| {
            let line = page.lines().find(|l| l.starts_with("| fig4 | accuracy nearly identical")).unwrap();
            line.split(" | ").nth(3).unwrap().to_string()
        };
        let first_five_row =
            md.lines().find(|l| l.starts_with("| accuracy nearly identical") && l.matches('|').count() == 4).unwrap();
        assert_eq!(first_five_row.split(" | ").nth(1).unwrap(), row(&on_five), "{md}");
        assert_ne!(row(&md), row(&on_five));
    }

    #[test]
    fn a_verdict_edited_by_hand_is_named_by_its_line() {
        let md = render(&[fig4(5)]).unwrap();
        let line = md.lines().position(|l| l.starts_with("| fig4 |") && l.contains("**holds**")).unwrap() + 1;
        let lines: Vec<String> = md
            .lines()
            .enumerate()
            .map(|(i, l)| if i + 1 == line { l.replace("**holds**", "**does not hold**") } else { l.to_string() })
            .collect();
        let edited = lines.join("\n");
        let err = compare_lines(Path::new("docs/results.md"), &edited, &md).unwrap_err().to_string();
        assert!(err.starts_with(&format!("docs/results.md: line {line} is not what the stored runs give")), "{err}");
        // Text appended after the generated page is caught too.
        let err = compare_lines(Path::new("p"), &format!("{md}note\n"), &md).unwrap_err().to_string();
        assert!(err.contains("on the page: note") && err.contains("from the runs: (end of page)"), "{err}");
    }

    #[test]
    fn few_seeds_are_not_judged() {
        let md = render(&[fig4(3)]).unwrap();
        let tables = &md[md.find("## The paper's claims").unwrap()..];
        assert_eq!(tables.matches("**not judged**").count(), 4, "{md}");
        assert!(!tables.contains("**holds**"));
    }

    #[test]
    fn damaged_markers_are_errors_naming_the_line() {
        let p = Path::new("r.md");
        let err = |t: &str| check_markers(p, t).unwrap_err().to_string();
        assert!(err("a\n<!-- reproduce:fig4 -->\nb\n").contains("line 2: section \"fig4\" is never closed"));
        assert!(err("<!-- /reproduce:fig4 -->\n").contains("line 1: closes \"fig4\", which is not open"));
        let twice = "<!-- reproduce:fig4 -->\n<!-- /reproduce:fig4 -->\n<!-- reproduce:fig4 -->\n";
        assert!(err(twice).contains("line 3: a second section \"fig4\""));
        let nested = "<!-- reproduce:fig3 -->\n<!-- reproduce:fig4 -->\n";
        assert!(err(nested).contains("line 2: opens \"fig4\" inside \"fig3\""));
        assert!(err("<!-- reproduce:fig4 ->\n").contains("line 1: a damaged section marker"));
    }
}
