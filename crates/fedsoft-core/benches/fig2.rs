//! Fig. 2 of the paper: the cost of SOFT's importance estimate against forming `BA` and taking its SVD.
//!
//! `cargo bench -p fedsoft-core --bench fig2` sweeps (a) `d = k = 768`, `r = 1..256` and (b) `r = 8`,
//! `d = k = 256..4096`, timing four things per module:
//! - `soft_score`: the per-rank scores `||b_j|| ||a_j||` alone;
//! - `soft_select`: scores + budget allocation + per-rank top-k at rho = 0.75 (what a SOFT client runs);
//! - `svd_factored`: exact scores via thin QR of both factors and an `r x r` SVD;
//! - `svd_dense`: the paper's baseline, the `d x k` product and its SVD.
//!
//! A custom harness (not criterion) because one dense SVD at 4096 takes tens of seconds: each case is
//! repeated until 0.3 s have passed (at least once) and the median is reported. Results go to stdout and to
//! `target/fig2.csv`. Pass `--quick` to stop panel (b) at 2048.

use fedsoft_core::budget::DropRatio;
use fedsoft_core::lora::{LoraState, ModuleShape};
use fedsoft_core::sparsify::svd::{exact_rank_scores, exact_rank_scores_dense};
use fedsoft_core::sparsify::{MethodKind, SelectInput, SparsifierOptions, UploadKey, build};
use std::hint::black_box;
use std::io::Write;
use std::time::{Duration, Instant};

fn median_time(mut f: impl FnMut()) -> f64 {
    let mut times = Vec::new();
    let start = Instant::now();
    while times.is_empty() || (start.elapsed() < Duration::from_millis(300) && times.len() < 200) {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

struct Row {
    panel: &'static str,
    d: usize,
    r: usize,
    soft_score: f64,
    soft_select: f64,
    svd_factored: f64,
    svd_dense: f64,
}

fn measure(panel: &'static str, d: usize, r: usize) -> Row {
    let shapes = vec![ModuleShape::new("m", d, d, r)];
    let st = LoraState::random(&shapes, 1, 0.1).unwrap();
    let soft = build(MethodKind::Soft, SparsifierOptions::default());
    let input = SelectInput {
        update: &st,
        local: &st,
        key: UploadKey { rho: DropRatio::new(0.75).unwrap(), seed: 0, round: 0, client: 0 },
    };
    Row {
        panel,
        d,
        r,
        soft_score: median_time(|| {
            black_box(st.rank_scores(0));
        }),
        soft_select: median_time(|| {
            black_box(soft.select(&input).unwrap());
        }),
        svd_factored: median_time(|| {
            black_box(exact_rank_scores(&shapes[0], &st.modules[0]).unwrap());
        }),
        svd_dense: median_time(|| {
            black_box(exact_rank_scores_dense(&shapes[0], &st.modules[0]).unwrap());
        }),
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let mut rows = Vec::new();
    println!(
        "{:>5} {:>5} {:>4} | {:>11} {:>11} {:>11} {:>11} | {:>12} {:>12} {:>12}",
        "panel",
        "d=k",
        "r",
        "score [s]",
        "select [s]",
        "factored[s]",
        "dense [s]",
        "dense/score",
        "dense/select",
        "fact/score"
    );
    let cases: Vec<(&'static str, usize, usize)> = [1, 2, 4, 8, 16, 32, 64, 128, 256]
        .into_iter()
        .map(|r| ("a", 768, r))
        .chain([256, 512, 1024, 2048, 4096].into_iter().filter(|&d| !quick || d <= 2048).map(|d| ("b", d, 8)))
        .collect();
    for (panel, d, r) in cases {
        let row = measure(panel, d, r);
        println!(
            "{:>5} {:>5} {:>4} | {:>11.3e} {:>11.3e} {:>11.3e} {:>11.3e} | {:>12.0} {:>12.0} {:>12.1}",
            row.panel,
            row.d,
            row.r,
            row.soft_score,
            row.soft_select,
            row.svd_factored,
            row.svd_dense,
            row.svd_dense / row.soft_score,
            row.svd_dense / row.soft_select,
            row.svd_factored / row.soft_score
        );
        rows.push(row);
    }
    let dir = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../target").into());
    let path = std::path::Path::new(&dir).join("fig2.csv");
    if let Ok(mut f) = std::fs::File::create(&path) {
        let _ = writeln!(f, "panel,d,k,r,soft_score_s,soft_select_s,svd_factored_s,svd_dense_s");
        for r in &rows {
            let _ = writeln!(
                f,
                "{},{},{},{},{:e},{:e},{:e},{:e}",
                r.panel, r.d, r.d, r.r, r.soft_score, r.soft_select, r.svd_factored, r.svd_dense
            );
        }
        println!("wrote {}", path.display());
    }
}
