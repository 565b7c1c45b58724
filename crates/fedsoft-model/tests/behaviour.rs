//! Model behaviour on tiny checkpoints written here in the exact HF naming and layout.

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::Device;
use fedsoft_core::lora::{LoraState, Target, off_diagonal_fraction};
use fedsoft_model::adapters::{Adapters, Head};
use fedsoft_model::backbone::{Batch, Pooling};
use fedsoft_model::load::{adapter_plan, build, load_hf_dir, random_checkpoint};
use fedsoft_model::spec::{EncoderSpec, Family};
use fedsoft_model::train::{TrainSettings, evaluate, gradients, loss, train_steps};
use fedsoft_model::weights::TensorMap;
use safetensors::{Dtype, tensor::TensorView};
use std::path::Path;

fn tiny(family: Family) -> EncoderSpec {
    let text = matches!(family, Family::Bert | Family::DistilBert);
    EncoderSpec {
        family,
        hidden: 16,
        layers: 2,
        heads: 2,
        intermediate: 32,
        eps: 1e-12,
        vocab: if text { 50 } else { 0 },
        max_positions: if text { 12 } else { 0 },
        type_vocab: if family == Family::Bert { 2 } else { 0 },
        patch: if text { 0 } else { 4 },
        pos_grid: if text { 0 } else { 2 },
        channels: if text { 0 } else { 3 },
    }
}

fn config_json(spec: &EncoderSpec) -> String {
    match spec.family {
        Family::Bert => format!(
            r#"{{"model_type":"bert","hidden_size":{},"num_hidden_layers":{},"num_attention_heads":{},"intermediate_size":{},"vocab_size":{},"max_position_embeddings":{},"type_vocab_size":2,"layer_norm_eps":1e-12}}"#,
            spec.hidden, spec.layers, spec.heads, spec.intermediate, spec.vocab, spec.max_positions
        ),
        Family::DistilBert => format!(
            r#"{{"model_type":"distilbert","dim":{},"n_layers":{},"n_heads":{},"hidden_dim":{},"vocab_size":{},"max_position_embeddings":{}}}"#,
            spec.hidden, spec.layers, spec.heads, spec.intermediate, spec.vocab, spec.max_positions
        ),
        Family::Vit => format!(
            r#"{{"model_type":"vit","hidden_size":{},"num_hidden_layers":{},"num_attention_heads":{},"intermediate_size":{},"image_size":8,"patch_size":4,"num_channels":3,"layer_norm_eps":1e-12}}"#,
            spec.hidden, spec.layers, spec.heads, spec.intermediate
        ),
        Family::Dinov2 => unreachable!(),
    }
}

/// Writes `map` as HF would: optional model prefix, chosen dtype.
fn write_checkpoint(dir: &Path, spec: &EncoderSpec, map: &TensorMap, prefix: &str, dtype: Dtype) {
    std::fs::write(dir.join("config.json"), config_json(spec)).unwrap();
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = map
        .tensors
        .iter()
        .map(|(k, (shape, v))| {
            let b: Vec<u8> = match dtype {
                Dtype::F16 => v.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect(),
                _ => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            };
            (format!("{prefix}{k}"), shape.clone(), b)
        })
        .collect();
    let views: Vec<(String, TensorView)> =
        bytes.iter().map(|(k, s, b)| (k.clone(), TensorView::new(dtype, s.clone(), b).unwrap())).collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
}

fn text_batch(n: usize, t: usize, seed: u64, device: &Device) -> (Batch, Vec<u32>) {
    use rand::RngExt;
    let mut rng = fedsoft_core::rng::stream(seed, fedsoft_core::rng::Purpose::Batches, &[]);
    let mut ids = Vec::new();
    let mut labels = Vec::new();
    for _ in 0..n {
        // Learnable task: is token 7 in the sequence?
        let label = rng.random_range(0..2u32);
        let mut row: Vec<u32> = (0..t).map(|_| rng.random_range(10..50)).collect();
        row[0] = 1;
        if label == 1 {
            row[rng.random_range(1..t)] = 7;
        }
        ids.extend(row);
        labels.push(label);
    }
    let mask = vec![1u32; n * t];
    let types = vec![0u32; n * t];
    (Batch::tokens(&ids, &mask, &types, n, device), labels)
}

fn image_batch(n: usize, device: &Device) -> Batch {
    let x: Vec<f32> = (0..n * 3 * 8 * 8).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
    Batch::images(&x, n, 3, 8, device)
}

fn logits_of(
    b: &fedsoft_model::backbone::Backbone,
    ad: &Adapters,
    plan: &fedsoft_model::adapters::AdapterPlan,
    batch: &Batch,
) -> Vec<f32> {
    b.logits(batch, ad, plan, Pooling::Cls).unwrap().into_data().try_into_vec::<f32>().unwrap()
}

#[test]
fn hf_checkpoints_of_every_family_load_in_f32_and_f16() {
    let device = Device::flex().autodiff();
    for (family, prefix) in [(Family::Bert, "bert."), (Family::DistilBert, "distilbert."), (Family::Vit, "vit.")] {
        let spec = tiny(family);
        let map = random_checkpoint(&spec, 1);
        let reference = build(&spec, map.clone(), &device).unwrap();
        let plan = adapter_plan(&spec, 2, 4.0, &[Target::Query, Target::Value], None).unwrap();
        let ad =
            Adapters::from_state(&LoraState::zeros(&plan.shapes).unwrap(), &Head::init(16, 3, 0), &device).unwrap();
        let batch = if family == Family::Vit { image_batch(2, &device) } else { text_batch(2, 6, 0, &device).0 };
        let want = logits_of(&reference, &ad, &plan, &batch);
        for dtype in [Dtype::F32, Dtype::F16] {
            let dir = tempfile::tempdir().unwrap();
            write_checkpoint(dir.path(), &spec, &map, prefix, dtype);
            let loaded = load_hf_dir(dir.path(), &device).unwrap();
            assert_eq!(loaded.spec, spec);
            let got = logits_of(&loaded, &ad, &plan, &batch);
            let tol = if dtype == Dtype::F32 { 1e-6 } else { 5e-2 };
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() <= tol, "{family:?} {dtype:?}: {a} vs {b}");
            }
        }
    }
}

#[test]
fn wrong_shapes_and_missing_tensors_are_named() {
    let device = Device::flex().autodiff();
    let spec = tiny(Family::Bert);
    let mut map = random_checkpoint(&spec, 1);
    map.tensors.get_mut("encoder.layer.1.attention.self.value.weight").unwrap().0 = vec![16, 15];
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(
        dir.path(),
        &spec,
        &{
            let mut m = map.clone();
            let (_, v) = m.tensors.get_mut("encoder.layer.1.attention.self.value.weight").unwrap();
            v.truncate(16 * 15);
            m
        },
        "",
        Dtype::F32,
    );
    let err = load_hf_dir(dir.path(), &device).unwrap_err().to_string();
    assert!(
        err.contains("encoder.layer.1.attention.self.value.weight")
            && err.contains("[16, 15]")
            && err.contains("[16, 16]"),
        "{err}"
    );
    // A NaN weight (a damaged or tampered file) is refused, naming the tensor.
    let mut poisoned = map.clone();
    poisoned.tensors.get_mut("encoder.layer.1.attention.self.key.weight").unwrap().1[5] = f32::NAN;
    let err = build(&spec, poisoned, &device).unwrap_err().to_string();
    assert!(err.contains("encoder.layer.1.attention.self.key.weight") && err.contains("non-finite"), "{err}");
    map.tensors.remove("encoder.layer.0.output.dense.bias");
    let err = build(&spec, map, &device).unwrap_err().to_string();
    assert!(err.contains("encoder.layer.0.output.dense.bias") && err.contains("missing"), "{err}");
    std::fs::write(dir.path().join("config.json"), r#"{"model_type":"gpt2"}"#).unwrap();
    let err = load_hf_dir(dir.path(), &device).unwrap_err().to_string();
    assert!(err.contains("config.json") && err.contains("gpt2"), "{err}");
}

#[test]
fn zero_b_gives_the_frozen_model_exactly() {
    let device = Device::flex().autodiff();
    let spec = tiny(Family::Vit);
    let backbone = build(&spec, random_checkpoint(&spec, 2), &device).unwrap();
    let plan = adapter_plan(&spec, 3, 16.0, &[Target::Query, Target::Value, Target::MlpIn], None).unwrap();
    let head = Head::init(16, 3, 0);
    let zero = LoraState::init_gaussian(&plan.shapes, 5).unwrap(); // B = 0, A random
    let frozen_plan = fedsoft_model::adapters::AdapterPlan { shapes: vec![], slots: Default::default(), scale: 1.0 };
    let ad = Adapters::from_state(&zero, &head, &device).unwrap();
    let none = Adapters::from_state(&LoraState::zeros(&[]).unwrap(), &head, &device).unwrap();
    let batch = image_batch(3, &device);
    // Inference (adapters outside autodiff, as evaluation runs them) is the frozen model bit for bit.
    let frozen = logits_of(&backbone, &none.valid(), &frozen_plan, &batch);
    assert_eq!(logits_of(&backbone, &ad.valid(), &plan, &batch), frozen);
    // The training forward takes autodiff's decomposed softmax instead of the fused inference kernel once the
    // activations are tracked, which rounds differently in the last bits only.
    let tracked = logits_of(&backbone, &ad, &plan, &batch);
    for (t, f) in tracked.iter().zip(&frozen) {
        assert!((t - f).abs() <= 1e-5 * f.abs().max(1.0), "{t} vs {f}");
    }
    // And a non-zero B changes it.
    let moved = LoraState::random(&plan.shapes, 6, 0.5).unwrap();
    let ad = Adapters::from_state(&moved, &head, &device).unwrap();
    assert_ne!(logits_of(&backbone, &ad, &plan, &batch), logits_of(&backbone, &none, &frozen_plan, &batch));
}

#[test]
fn the_task_loss_reaches_every_adapter_factor() {
    let device = Device::flex().autodiff();
    for family in [Family::Bert, Family::Vit, Family::DistilBert] {
        let spec = tiny(family);
        let backbone = build(&spec, random_checkpoint(&spec, 3), &device).unwrap();
        let targets = [Target::Query, Target::Key, Target::Value, Target::Output, Target::MlpIn, Target::MlpOut];
        let plan = adapter_plan(&spec, 2, 4.0, &targets, None).unwrap();
        let state = LoraState::random(&plan.shapes, 4, 0.3).unwrap();
        let ad = Adapters::from_state(&state, &Head::init(16, 2, 1), &device).unwrap();
        let (batch, labels) = if family == Family::Vit {
            (image_batch(4, &device), vec![0, 1, 0, 1])
        } else {
            text_batch(4, 6, 1, &device)
        };
        let s = TrainSettings { orthogonality: 0.0, ..Default::default() };
        let (total, _) = loss(&backbone, &ad, &plan, &batch, &labels, &s).unwrap();
        let grads = total.backward();
        let nonzero = |p: &burn::module::Param<burn::tensor::Tensor<2>>| {
            p.val().grad(&grads).map(|g| g.abs().sum().into_scalar::<f32>() > 0.0).unwrap_or(false)
        };
        let reached = ad.a.iter().chain(&ad.b).filter(|p| nonzero(p)).count();
        assert_eq!(
            reached,
            2 * plan.shapes.len(),
            "{family:?}: {reached} of {} factors got a gradient",
            2 * plan.shapes.len()
        );
    }
}

#[test]
fn adapters_round_trip_through_lora_state() {
    let device = Device::flex().autodiff();
    let spec = tiny(Family::Bert);
    let plan = adapter_plan(&spec, 3, 6.0, &[Target::Query, Target::Value], Some(&[1])).unwrap();
    assert_eq!(
        plan.shapes.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["encoder.layer.1.attention.self.query", "encoder.layer.1.attention.self.value"]
    );
    assert_eq!(plan.scale, 2.0);
    let state = LoraState::random(&plan.shapes, 9, 1.0).unwrap();
    let head = Head::init(16, 4, 3);
    let ad = Adapters::from_state(&state, &head, &device).unwrap();
    assert_eq!(ad.to_state(&plan.shapes).unwrap(), state);
    assert_eq!(ad.head(), head);
    assert!(adapter_plan(&spec, 17, 1.0, &[Target::Query], None).unwrap_err().to_string().contains("lora.rank"));
    assert!(adapter_plan(&spec, 2, 1.0, &[Target::Query], Some(&[2])).unwrap_err().to_string().contains("lora.layers"));
}

/// A few hundred AdamW steps on a small learnable task: the loss falls, accuracy rises, and with the
/// regulariser the Gram matrices become near-diagonal.
#[test]
fn local_training_learns_and_the_regulariser_orthogonalises() {
    let device = Device::flex().autodiff();
    let spec = tiny(Family::Bert);
    let backbone = build(&spec, random_checkpoint(&spec, 11), &device).unwrap();
    let plan = adapter_plan(&spec, 4, 8.0, &[Target::Query, Target::Value], None).unwrap();
    let mut fractions = Vec::new();
    for lambda in [0.0, 1.0] {
        let state = LoraState::init_gaussian(&plan.shapes, 1).unwrap();
        let ad = Adapters::from_state(&state, &Head::init(16, 2, 2), &device).unwrap();
        let test: Vec<(Batch, Vec<u32>)> = (0..4).map(|i| text_batch(32, 8, 100 + i, &device)).collect();
        let (acc0, loss0) =
            evaluate(&backbone, &ad, &plan, test.iter().map(|(b, l)| (b.clone(), l.as_slice())), Pooling::Cls).unwrap();
        let train: Vec<(Batch, Vec<u32>)> = (0..300).map(|i| text_batch(8, 8, i, &device)).collect();
        let s = TrainSettings { lr: 5e-3, orthogonality: lambda, ..Default::default() };
        let (ad, _) =
            train_steps(&backbone, ad, &plan, train.iter().map(|(b, l)| (b.clone(), l.as_slice())), &s, None).unwrap();
        let (acc1, loss1) =
            evaluate(&backbone, &ad, &plan, test.iter().map(|(b, l)| (b.clone(), l.as_slice())), Pooling::Cls).unwrap();
        eprintln!("lambda {lambda}: accuracy {acc0:.3} -> {acc1:.3}, loss {loss0:.3} -> {loss1:.3}");
        assert!(
            loss1 < loss0 && acc1 > acc0 + 0.2 && acc1 > 0.8,
            "lambda {lambda}: acc {acc0}->{acc1}, loss {loss0}->{loss1}"
        );
        let st = ad.to_state(&plan.shapes).unwrap();
        let frac: f64 = (0..st.shapes.len())
            .map(|m| off_diagonal_fraction(&st.gram_b(m)) + off_diagonal_fraction(&st.gram_a(m)))
            .sum::<f64>()
            / (2 * st.shapes.len()) as f64;
        eprintln!("lambda {lambda}: mean off-diagonal energy fraction of the Gram matrices {frac:.4}");
        fractions.push(frac);
    }
    assert!(fractions[1] < 0.05 && fractions[1] < fractions[0] / 3.0, "{fractions:?}");
}

/// Carrying the optimiser state across calls is the same as one uninterrupted run: 6 steps in one call
/// equal 3 + 3 steps with the adapters rebuilt in between from their flat values (as a client does between
/// rounds), bit for bit; starting the second half fresh instead gives a different model.
#[test]
fn carried_optimizer_state_continues_the_run_exactly() {
    use fedsoft_model::train::OptimizerState;
    let device = Device::flex().autodiff();
    let spec = tiny(Family::Bert);
    let backbone = build(&spec, random_checkpoint(&spec, 5), &device).unwrap();
    let plan = adapter_plan(&spec, 2, 4.0, &[Target::Query, Target::Value], None).unwrap();
    let state = LoraState::random(&plan.shapes, 6, 0.2).unwrap();
    let head = Head::init(16, 2, 7);
    let data: Vec<(Batch, Vec<u32>)> = (0..6).map(|i| text_batch(4, 6, 40 + i, &device)).collect();
    let steps = |range: std::ops::Range<usize>| data[range].iter().map(|(b, l)| (b.clone(), l.as_slice()));
    let s = TrainSettings { lr: 1e-2, orthogonality: 0.1, ..Default::default() };

    let ad = Adapters::from_state(&state, &head, &device).unwrap();
    let mut whole_state = OptimizerState::default();
    let (whole, _) = train_steps(&backbone, ad, &plan, steps(0..6), &s, Some(&mut whole_state)).unwrap();

    let ad = Adapters::from_state(&state, &head, &device).unwrap();
    let mut carried = OptimizerState::default();
    let (half, _) = train_steps(&backbone, ad, &plan, steps(0..3), &s, Some(&mut carried)).unwrap();
    assert!(!carried.is_empty(), "the optimiser state was not written back");
    let (mid_state, mid_head) = (half.to_state(&plan.shapes).unwrap(), half.head());
    let rebuilt = Adapters::from_state(&mid_state, &mid_head, &device).unwrap();
    let (split, _) = train_steps(&backbone, rebuilt, &plan, steps(3..6), &s, Some(&mut carried)).unwrap();
    assert_eq!(split.to_state(&plan.shapes).unwrap(), whole.to_state(&plan.shapes).unwrap());
    assert_eq!(split.head(), whole.head());
    // (The serialised bytes are not compared: burn lists the parameters in hash-map order.)
    assert!(!whole_state.is_empty());

    let rebuilt = Adapters::from_state(&mid_state, &mid_head, &device).unwrap();
    let (fresh, _) = train_steps(&backbone, rebuilt, &plan, steps(3..6), &s, None).unwrap();
    assert_ne!(fresh.to_state(&plan.shapes).unwrap(), whole.to_state(&plan.shapes).unwrap());

    let garbage = &mut OptimizerState(vec![1, 2, 3]);
    let ad = Adapters::from_state(&state, &head, &device).unwrap();
    let err = train_steps(&backbone, ad, &plan, steps(0..1), &s, Some(garbage)).unwrap_err().to_string();
    assert!(err.contains("optimizer state"), "{err}");
}

/// A batch of more rows than one chunk holds (40 sequences of 12 tokens: chunks of 22 and 18 samples) is
/// differentiated in pieces: the summed gradient equals the whole batch's up to float rounding, and a
/// training step gives the same bits on one thread as on two.
#[test]
fn chunked_steps_match_the_whole_batch_and_ignore_the_thread_count() {
    let device = Device::flex().autodiff();
    let spec = tiny(Family::Bert);
    let backbone = build(&spec, random_checkpoint(&spec, 5), &device).unwrap();
    let plan = adapter_plan(&spec, 2, 4.0, &[Target::Query, Target::Value], None).unwrap();
    let state = LoraState::random(&plan.shapes, 6, 0.3).unwrap();
    let head = Head::init(16, 2, 2);
    let fresh = || Adapters::from_state(&state, &head, &device).unwrap();
    let (batch, labels) = text_batch(40, 12, 3, &device);
    let s = TrainSettings { orthogonality: 0.05, ..Default::default() };

    let ad = fresh();
    let (chunked, task) = gradients(&backbone, &ad, &plan, &batch, &labels, &s).unwrap();
    let (total, whole_task) = loss(&backbone, &ad, &plan, &batch, &labels, &s).unwrap();
    assert!((task - whole_task.into_scalar::<f32>() as f64).abs() < 1e-6, "{task}");
    let whole = GradientsParams::from_grads(total.backward(), &ad);
    let close = |a: Vec<f32>, b: Vec<f32>, what: &str| {
        let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(scale > 0.0, "{what}: no gradient");
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-5 * scale, "{what}: {x} vs {y}");
        }
    };
    let v2 = |g: &GradientsParams, p: &burn::module::Param<burn::tensor::Tensor<2>>| {
        g.get::<2>(p.id).unwrap().into_data().try_into_vec::<f32>().unwrap()
    };
    for (i, p) in ad.a.iter().chain(&ad.b).chain([&ad.head_w]).enumerate() {
        close(v2(&chunked, p), v2(&whole, p), &format!("parameter {i}"));
    }
    let bias = |g: &GradientsParams| g.get::<1>(ad.head_b.id).unwrap().into_data().try_into_vec::<f32>().unwrap();
    close(bias(&chunked), bias(&whole), "head bias");

    let train = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let steps = (0..3).map(|_| (batch.clone(), labels.as_slice()));
            let (ad, loss) = train_steps(&backbone, fresh(), &plan, steps, &s, None).unwrap();
            (ad.to_state(&plan.shapes).unwrap(), ad.head(), loss.to_bits())
        })
    };
    let one = train(1);
    assert_ne!(one.0, state, "training changed nothing");
    assert_eq!(one, train(2));
}

/// With [CLS] pooling the last block forms only the first token's state; the class scores are those of
/// the full encoder's first token, for every family (pre- and post-LN, padded text included).
#[test]
fn cls_pooling_reads_the_full_encoders_first_token() {
    let device = Device::flex().autodiff();
    for family in [Family::Bert, Family::Vit, Family::DistilBert] {
        let spec = tiny(family);
        let backbone = build(&spec, random_checkpoint(&spec, 8), &device).unwrap();
        let targets = [Target::Query, Target::Value, Target::Output, Target::MlpIn];
        let plan = adapter_plan(&spec, 2, 4.0, &targets, None).unwrap();
        let state = LoraState::random(&plan.shapes, 2, 0.3).unwrap();
        let ad = Adapters::from_state(&state, &Head::init(16, 3, 4), &device).unwrap();
        let batch = if family == Family::Vit {
            image_batch(3, &device)
        } else {
            let (ids, _) = text_batch(3, 7, 5, &device);
            let Batch::Tokens { ids, types, .. } = ids else { unreachable!() };
            // The last sample is padded after four tokens.
            let mask: Vec<f32> = (0..21).map(|i| if i >= 18 { 0.0 } else { 1.0 }).collect();
            let mask = burn::tensor::Tensor::from_data(burn::tensor::TensorData::new(mask, [3, 7]), &device);
            Batch::Tokens { ids, mask, types }
        };
        let shortened = logits_of(&backbone, &ad, &plan, &batch);
        let (full, _) = backbone.forward(&batch, &ad, &plan).unwrap();
        let [b, _, h] = full.dims();
        let cls = full.narrow(1, 0, 1).reshape([b, h]);
        let reference = (cls.matmul(ad.head_w.val()) + ad.head_b.val().unsqueeze::<2>()).into_data();
        let reference = reference.try_into_vec::<f32>().unwrap();
        assert_eq!(shortened.len(), 9);
        for (x, y) in shortened.iter().zip(&reference) {
            assert!((x - y).abs() <= 1e-5 * y.abs().max(1.0), "{family:?}: {x} vs {y}");
        }
    }
}
