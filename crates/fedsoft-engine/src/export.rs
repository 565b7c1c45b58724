//! The global adapter as a PEFT directory, so a Python user can load it onto the same base model with
//! `PeftModel.from_pretrained(AutoModel.from_pretrained(base), dir)`:
//! - `adapter_model.safetensors`: `base_model.model.<module>.lora_A.weight` (`[r, in]`) and `.lora_B.weight`
//!   (`[out, r]`) for every adapted module, under the module paths of the transformers major version the
//!   export targets (`[export] transformers`, 5 by default: ViT and DINOv2 renamed their attention modules);
//! - `adapter_config.json`: `peft_type = "LORA"`, the base model's hub id, `r`, `lora_alpha`, the exact module
//!   paths as `target_modules` (in the order of the run's modules), `init_lora_weights = "gaussian"`;
//! - `head.safetensors` (`weight: [classes, hidden]`, `bias`) and `head.json` (pooling, class names): the
//!   classification head, which PEFT does not know about;
//! - `probe.safetensors`: the first test samples as the model takes them (`pixel_values`, or `input_ids`,
//!   `attention_mask`, `token_type_ids`) and fedsoft's logits for them, so a loader can check that the base
//!   model + adapter + head it built reproduces fedsoft's outputs (`scripts/check-peft` does, with PEFT).

use crate::checkpoint::write_atomic;
use crate::error::EngineError;
use fedsoft_core::le::f32_to_le as bytes;
use fedsoft_core::lora::{LoraState, ModuleFactors, ModuleShape};
use fedsoft_model::adapters::Head;
use fedsoft_model::backbone::Pooling;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use std::path::Path;

fn key(module: &str, factor: &str) -> String {
    format!("base_model.model.{module}.lora_{factor}.weight")
}

/// Everything the export needs.
pub struct ExportInfo<'a> {
    pub base_model: &'a str,
    /// The PEFT module path of each of the state's modules, in order.
    pub modules: &'a [String],
    pub alpha: f64,
    pub pooling: Pooling,
    pub classes: &'a [String],
}

/// Writes the PEFT directory `dir`.
pub fn export_peft(dir: &Path, state: &LoraState, head: &Head, info: &ExportInfo<'_>) -> Result<(), EngineError> {
    std::fs::create_dir_all(dir).map_err(|e| EngineError::io("create", dir, e))?;
    if info.modules.len() != state.shapes.len() {
        return Err(EngineError::file(
            dir,
            format!("{} module names for {} modules", info.modules.len(), state.shapes.len()),
        ));
    }
    let mut owned = Vec::new();
    for ((s, f), name) in state.shapes.iter().zip(&state.modules).zip(info.modules) {
        owned.push((key(name, "A"), vec![s.r, s.k], bytes(&f.a)));
        owned.push((key(name, "B"), vec![s.d, s.r], bytes(&f.b)));
    }
    let write = |name: &str, owned: &[(String, Vec<usize>, Vec<u8>)]| -> Result<(), EngineError> {
        let views: Vec<(String, TensorView)> = owned
            .iter()
            .map(|(n, s, b)| (n.clone(), TensorView::new(Dtype::F32, s.clone(), b).expect("sizes")))
            .collect();
        let data = safetensors::serialize(views, None).map_err(|e| EngineError::file(dir, e))?;
        write_atomic(&dir.join(name), &data)
    };
    write("adapter_model.safetensors", &owned)?;
    let r = state.shapes.first().map_or(0, |s| s.r);
    let config = serde_json::json!({
        "peft_type": "LORA",
        "base_model_name_or_path": info.base_model,
        "r": r,
        "lora_alpha": info.alpha,
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": false,
        "init_lora_weights": "gaussian",
        "target_modules": info.modules,
        "task_type": null,
    });
    write_atomic(&dir.join("adapter_config.json"), serde_json::to_string_pretty(&config).expect("json").as_bytes())?;
    // torch Linear layout: [classes, hidden].
    let mut w = vec![0.0f32; head.weight.len()];
    for i in 0..head.hidden {
        for c in 0..head.classes {
            w[c * head.hidden + i] = head.weight[i * head.classes + c];
        }
    }
    write(
        "head.safetensors",
        &[
            ("weight".into(), vec![head.classes, head.hidden], bytes(&w)),
            ("bias".into(), vec![head.classes], bytes(&head.bias)),
        ],
    )?;
    let meta = serde_json::json!({"pooling": info.pooling, "classes": info.classes, "hidden": head.hidden});
    write_atomic(&dir.join("head.json"), serde_json::to_string_pretty(&meta).expect("json").as_bytes())
}

/// Reads a PEFT directory written by [`export_peft`] back for the modules `shapes`; the module paths come
/// from its `target_modules`, in order, whichever transformers version they were written for.
pub fn import_peft(dir: &Path, shapes: &[ModuleShape]) -> Result<(LoraState, Head), EngineError> {
    let read = |name: &str| std::fs::read(dir.join(name)).map_err(|e| EngineError::io("read", &dir.join(name), e));
    let config: serde_json::Value = serde_json::from_slice(&read("adapter_config.json")?)
        .map_err(|e| EngineError::file(&dir.join("adapter_config.json"), e))?;
    let names: Vec<String> = config["target_modules"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    if names.len() != shapes.len() {
        return Err(EngineError::file(
            &dir.join("adapter_config.json"),
            format!("target_modules names {} modules, the run has {}", names.len(), shapes.len()),
        ));
    }
    let adapter = read("adapter_model.safetensors")?;
    let st = SafeTensors::deserialize(&adapter).map_err(|e| EngineError::file(dir, e))?;
    let get = |st: &SafeTensors, name: &str, shape: &[usize]| -> Result<Vec<f32>, EngineError> {
        let t = st.tensor(name).map_err(|_| EngineError::file(dir, format!("missing tensor {name}")))?;
        if t.shape() != shape || t.dtype() != Dtype::F32 {
            return Err(EngineError::file(
                dir,
                format!("tensor {name} is {:?} {:?}, expected F32 {shape:?}", t.dtype(), t.shape()),
            ));
        }
        Ok(fedsoft_core::le::f32_from_le(t.data()))
    };
    let modules = shapes
        .iter()
        .zip(&names)
        .map(|(s, name)| {
            Ok(ModuleFactors { b: get(&st, &key(name, "B"), &[s.d, s.r])?, a: get(&st, &key(name, "A"), &[s.r, s.k])? })
        })
        .collect::<Result<Vec<_>, EngineError>>()?;
    let state = LoraState::from_parts(shapes.to_vec(), modules).map_err(|e| EngineError::file(dir, e))?;
    let head_bytes = read("head.safetensors")?;
    let hs = SafeTensors::deserialize(&head_bytes).map_err(|e| EngineError::file(dir, e))?;
    let shape =
        hs.tensor("weight").map_err(|_| EngineError::file(dir, "head.safetensors lacks weight"))?.shape().to_vec();
    let (classes, hidden) = (shape[0], shape[1]);
    let w = get(&hs, "weight", &[classes, hidden])?;
    let mut weight = vec![0.0f32; w.len()];
    for c in 0..classes {
        for i in 0..hidden {
            weight[i * classes + c] = w[c * hidden + i];
        }
    }
    Ok((state, Head { hidden, classes, weight, bias: get(&hs, "bias", &[classes])? }))
}

/// Test samples in the probe.
const PROBE_SAMPLES: usize = 4;

/// Writes `probe.safetensors` beside an exported adapter: inputs and the final model's logits, so a reader
/// of the export can check that it gives the logits fedsoft gave.
pub(crate) fn write_probe(
    exp: &crate::experiment::Experiment,
    dir: &Path,
    global: &LoraState,
    head: &Head,
) -> Result<(), EngineError> {
    use burn::module::Module;
    use fedsoft_model::backbone::Batch;
    let k = PROBE_SAMPLES.min(exp.task.test_labels.len());
    if k == 0 {
        return Ok(());
    }
    let idx: Vec<usize> = (0..k).collect();
    let batch = exp.task.test.batch(&idx, &exp.device, None);
    let frozen = fedsoft_model::adapters::Adapters::from_state(global, head, &exp.device)?.valid();
    let logits = exp.backbone.logits(&batch, &frozen, &exp.plan, exp.cfg.training.pooling)?;
    let f32s = |t: burn::tensor::TensorData| {
        t.convert::<f32>().try_into_vec::<f32>().map_err(|e| EngineError::file(dir, format!("{e:?}")))
    };
    let i64s = |t: burn::tensor::TensorData| {
        let v = t.convert::<i64>().try_into_vec::<i64>().map_err(|e| EngineError::file(dir, format!("{e:?}")))?;
        Ok::<_, EngineError>(v.into_iter().flat_map(i64::to_le_bytes).collect::<Vec<u8>>())
    };
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    match &batch {
        Batch::Images(x) => {
            let dims = x.dims().to_vec();
            tensors.push(("pixel_values".into(), Dtype::F32, dims, bytes(&f32s(x.clone().into_data())?)));
        }
        Batch::Tokens { ids, mask, types } => {
            let dims = ids.dims().to_vec();
            for (name, data) in [
                ("input_ids", ids.clone().into_data()),
                ("attention_mask", mask.clone().into_data()),
                ("token_type_ids", types.clone().into_data()),
            ] {
                tensors.push((name.into(), Dtype::I64, dims.clone(), i64s(data)?));
            }
        }
    }
    let dims = logits.dims().to_vec();
    tensors.push(("logits".into(), Dtype::F32, dims, bytes(&f32s(logits.into_data())?)));
    let views: Vec<(String, TensorView)> =
        tensors.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).expect("sizes"))).collect();
    let data = safetensors::serialize(views, None).map_err(|e| EngineError::file(dir, e))?;
    write_atomic(&dir.join("probe.safetensors"), &data)
}
