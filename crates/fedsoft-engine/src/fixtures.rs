//! A tiny, learnable experiment written to disk in the real formats: a 2-layer BERT (width 16) checkpoint in HF
//! layout with a WordPiece vocabulary, and a 4-class CSV text task whose class is the group of words a
//! sentence is made of. Tests across the workspace (engine, CLI, networked server) and smoke tests of a new
//! installation run whole experiments on it in seconds.

use fedsoft_model::load::random_checkpoint;
use fedsoft_model::spec::{EncoderSpec, Family};
use safetensors::Dtype;
use safetensors::tensor::TensorView;
use std::path::{Path, PathBuf};

const WORDS: [&str; 16] = [
    "alpha", "beta", "gamma", "delta", "red", "green", "blue", "black", "one", "two", "three", "four", "sun", "moon",
    "star", "sky",
];

/// A 2-layer BERT (hidden 16) in HF layout with a WordPiece vocabulary, and a 4-class text task whose class
/// is the group of words a sentence is made of.
pub fn tiny_text_task(dir: &Path) -> (PathBuf, PathBuf) {
    let model = dir.join("tiny-bert");
    std::fs::create_dir_all(&model).expect("writing the tiny fixture");
    let mut vocab: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].iter().map(|s| s.to_string()).collect();
    vocab.extend(WORDS.iter().map(|s| s.to_string()));
    std::fs::write(model.join("vocab.txt"), vocab.join("\n")).expect("writing the tiny fixture");
    let spec = EncoderSpec {
        family: Family::Bert,
        hidden: 16,
        layers: 2,
        heads: 2,
        intermediate: 32,
        eps: 1e-12,
        vocab: vocab.len(),
        max_positions: 16,
        type_vocab: 2,
        patch: 0,
        pos_grid: 0,
        channels: 0,
    };
    std::fs::write(
        model.join("config.json"),
        format!(
            r#"{{"model_type":"bert","hidden_size":16,"num_hidden_layers":2,"num_attention_heads":2,"intermediate_size":32,"vocab_size":{},"max_position_embeddings":16,"type_vocab_size":2}}"#,
            vocab.len()
        ),
    )
    .expect("writing the tiny fixture");
    let map = random_checkpoint(&spec, 7);
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> =
        map.tensors.iter().map(|(k, (s, v))| (k.clone(), s.clone(), fedsoft_core::le::f32_to_le(v))).collect();
    let views: Vec<(String, TensorView)> = bytes
        .iter()
        .map(|(k, s, b)| (k.clone(), TensorView::new(Dtype::F32, s.clone(), b).expect("writing the tiny fixture")))
        .collect();
    safetensors::serialize_to_file(views, None, &model.join("model.safetensors")).expect("writing the tiny fixture");

    let data = dir.join("task.csv");
    let mut csv = String::from("label,text\n");
    for i in 0..240usize {
        let class = i % 4;
        let words: Vec<&str> = (0..5).map(|j| WORDS[class * 4 + (i * 7 + j * 3) % 4]).collect();
        csv += &format!("c{class},{}\n", words.join(" "));
    }
    std::fs::write(&data, csv).expect("writing the tiny fixture");
    (model, data)
}

/// An experiment on [`tiny_text_task`]'s files: 8 clients, 3 per round, 4 rounds, rank 2; `extra` are
/// `--set` overrides.
pub fn tiny_config(model: &Path, data: &Path, extra: &[&str]) -> crate::ExperimentConfig {
    let text = format!(
        r#"
name = "tiny"
seed = 3
[model]
arch = "custom"
hidden = 16
layers = 2
intermediate = 32
path = "{}"
[lora]
rank = 2
targets = ["query", "value"]
[clients]
total = 8
per_round = 3
[data]
dataset = "csv-text"
path = "{}"
max_len = 8
test_fraction = 0.25
[training]
batch_size = 8
lr = 5e-3
[rounds]
total = 4
eval_every = 2
checkpoint_every = 2
[tsfa]
candidate_ranks = [1, 2, 4]
latency_budget = {{ rank = 2, rho = 0.75 }}
[tsfa.bound]
max_rank = 8
"#,
        model.display(),
        data.display()
    );
    let o: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    crate::ExperimentConfig::from_toml(&text, "tiny.toml", &o).expect("the tiny config is valid")
}
