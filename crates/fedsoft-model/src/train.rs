//! Local training and evaluation.

use crate::adapters::{AdapterPlan, Adapters};
use crate::backbone::{Backbone, Batch, Pooling};
use crate::error::ModelError;
use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Bytes, Device, Int, Tensor, TensorData};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Optimiser and loss settings of local training.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrainSettings {
    pub lr: f64,
    pub weight_decay: f64,
    /// AdamW epsilon; set explicitly because burn's default (1e-5) is not PyTorch's (1e-8).
    pub epsilon: f64,
    /// `lambda`, the orthogonality regulariser's weight (0 = off).
    pub orthogonality: f64,
    pub pooling: Pooling,
}

impl Default for TrainSettings {
    fn default() -> Self {
        TrainSettings { lr: 1e-3, weight_decay: 1e-2, epsilon: 1e-8, orthogonality: 0.0, pooling: Pooling::Cls }
    }
}

/// Mean cross-entropy of `logits` against integer `labels`.
pub fn cross_entropy(logits: Tensor<2>, labels: &[u32]) -> Tensor<1> {
    let [b, _] = logits.dims();
    let device = logits.device();
    let idx = Tensor::<2, Int>::from_data(
        TensorData::new(labels.iter().map(|&l| l as i64).collect::<Vec<_>>(), [b, 1]),
        &device,
    );
    log_softmax(logits, 1).gather(1, idx).mean().neg()
}

/// The loss of Eq. (7): cross-entropy plus `lambda` times the orthogonality regulariser. Returns the total
/// and the task loss alone.
pub fn loss(
    backbone: &Backbone,
    ad: &Adapters,
    plan: &AdapterPlan,
    batch: &Batch,
    labels: &[u32],
    s: &TrainSettings,
) -> Result<(Tensor<1>, Tensor<1>), ModelError> {
    let logits = backbone.logits(batch, ad, plan, s.pooling)?;
    let task = cross_entropy(logits, labels);
    Ok((regularised(task.clone(), ad, s.orthogonality), task))
}

/// `task + lambda` times the orthogonality regulariser of `ad` (`task` itself when `lambda` is 0).
fn regularised(task: Tensor<1>, ad: &Adapters, lambda: f64) -> Tensor<1> {
    match (lambda > 0.0).then(|| ad.orthogonality()).flatten() {
        Some(orth) => task + orth.mul_scalar(lambda),
        None => task,
    }
}

/// A client's AdamW moments and step counts between rounds, in burn's optimiser-record format (burnpack).
/// Empty means "no state yet": the first step starts the moments from zero.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct OptimizerState(pub Vec<u8>);

impl std::fmt::Debug for OptimizerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OptimizerState({} bytes)", self.0.len())
    }
}

impl OptimizerState {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Runs AdamW over `batches` and returns the trained adapters and the mean task loss.
///
/// Without `carried` the optimiser starts fresh, as the paper does each round. With it, the moments are
/// read from it first (when it holds any) and written back after the last step, so a client can keep its
/// optimiser across the rounds it is scheduled in; [`Adapters`]' position-based parameter ids make the
/// saved state match the next round's newly built parameters.
pub fn train_steps<'a>(
    backbone: &Backbone,
    mut ad: Adapters,
    plan: &AdapterPlan,
    batches: impl IntoIterator<Item = (Batch, &'a [u32])>,
    s: &TrainSettings,
    mut carried: Option<&mut OptimizerState>,
) -> Result<(Adapters, f64), ModelError> {
    let _flush = crate::subnormals::Scoped::new();
    let mut opt = adamw(s).init();
    if let Some(state) = carried.as_deref_mut().filter(|st| !st.is_empty()) {
        // Taken, not copied: the state is written back after the last step.
        opt = opt
            .from_bytes(Bytes::from_bytes_vec(std::mem::take(&mut state.0)))
            .map_err(|e| ModelError::invalid("optimizer state", e.to_string()))?;
    }
    let (mut sum, mut n) = (0.0f64, 0usize);
    for (batch, labels) in batches {
        let (grads, task) = gradients(backbone, &ad, plan, &batch, labels, s)?;
        sum += task;
        n += 1;
        ad = opt.step(s.lr, ad, grads);
    }
    if let Some(state) = carried {
        let bytes = opt.into_bytes().map_err(|e| ModelError::invalid("optimizer state", e.to_string()))?;
        state.0 = bytes.to_vec();
    }
    Ok((ad, if n == 0 { 0.0 } else { sum / n as f64 }))
}

/// Rows (samples x tokens) a chunk of a step's batch holds at least: matrix products of 256 rows and more
/// run at the kernels' full rate. A batch of fewer rows is not split at all (the embedded default's
/// 17-token batches of 8 are differentiated whole).
const MIN_CHUNK_ROWS: usize = 256;
/// ... and at most, once a batch is large enough to fill four chunks of that size.
const MAX_CHUNK_ROWS: usize = 1024;
/// Chunks a batch is cut into when their size allows: enough for two to four cores to share a lone step.
const CHUNKS: usize = 4;

/// The samples of each chunk a batch of `samples` x `tokens` is differentiated in: a function of the shape
/// alone, never of the thread count, so that every result is the same however many threads there are.
/// Measured with the step bench on two cores: DINOv2 at 112 px (520 rows) 0.29 s in chunks of 128 rows,
/// 0.27 s of 256, 0.34 s whole; DistilBERT (2,048 rows) 2.15 s / 2.05 s / 1.95 s / 1.94 s in chunks of
/// 128 / 256 / 512 / 1,024 rows.
fn chunks(samples: usize, tokens: usize) -> Vec<std::ops::Range<usize>> {
    let tokens = tokens.max(1);
    let rows = (samples * tokens / CHUNKS).clamp(MIN_CHUNK_ROWS, MAX_CHUNK_ROWS);
    let per_chunk = rows.div_ceil(tokens).max(1);
    (0..samples).step_by(per_chunk).map(|start| start..(start + per_chunk).min(samples)).collect()
}

/// The gradient of the loss of Eq. (7) on one batch, and the batch's mean task loss.
///
/// A batch of more than `MIN_CHUNK_ROWS` (256) rows is cut into chunks of whole samples, each differentiated
/// on its own copy of the adapters ([`Adapters::fork`]), side by side when the current rayon pool has threads
/// to spare; chunk `c` contributes `n_c / n` times its mean cross-entropy, the first chunk adds the
/// regulariser, and the gradients are summed in chunk order. That is the whole batch's gradient up to
/// float rounding, and it lets a lone client's step use every core for all of its work: the matrix
/// products alone scale over threads, burn's element-wise kernels do not.
pub fn gradients(
    backbone: &Backbone,
    ad: &Adapters,
    plan: &AdapterPlan,
    batch: &Batch,
    labels: &[u32],
    s: &TrainSettings,
) -> Result<(GradientsParams, f64), ModelError> {
    let _flush = crate::subnormals::Scoped::new();
    let n = batch.len();
    if labels.len() != n {
        return Err(ModelError::invalid("labels", format!("{} labels for a batch of {n} samples", labels.len())));
    }
    // On a GPU the whole batch is one better-filled launch: only the CPU backend is chunked.
    let on_cpu = backbone.device == Device::flex();
    let parts = chunks(n, backbone.tokens_per_sample(batch));
    if parts.len() <= 1 || !on_cpu {
        let (total, task) = loss(backbone, ad, plan, batch, labels, s)?;
        return Ok((GradientsParams::from_grads(total.backward(), ad), task.into_scalar::<f32>() as f64));
    }
    let forks: Vec<Adapters> = parts.iter().map(|_| ad.fork()).collect();
    let results: Vec<Result<(GradientsParams, f64), ModelError>> = parts
        .into_par_iter()
        .zip(forks)
        .enumerate()
        .map(|(c, (range, fork))| {
            let part = batch.narrow(range.start, range.len());
            let logits = backbone.logits(&part, &fork, plan, s.pooling)?;
            let task = cross_entropy(logits, &labels[range.clone()]).mul_scalar(range.len() as f64 / n as f64);
            let total = if c == 0 { regularised(task.clone(), &fork, s.orthogonality) } else { task.clone() };
            Ok((GradientsParams::from_grads(total.backward(), &fork), task.into_scalar::<f32>() as f64))
        })
        .collect();
    let mut sum = GradientsParams::new();
    let mut task = 0.0;
    for r in results {
        let (g, t) = r?;
        ad.add_gradients(&mut sum, g);
        task += t;
    }
    Ok((sum, task))
}

/// One client's share of a batched training pass: its adapters, its batches in order, and the optimiser
/// state it carries in (`None`: a fresh AdamW whose state is not kept).
pub struct GroupJob<'a> {
    pub adapters: Adapters,
    pub batches: Vec<(Batch, &'a [u32])>,
    pub carried: Option<OptimizerState>,
}

/// A client's result of [`train_grouped`]: trained adapters, mean task loss, the optimiser state it keeps.
pub struct GroupResult {
    pub adapters: Adapters,
    pub loss: f64,
    pub carried: Option<OptimizerState>,
}

fn adamw(s: &TrainSettings) -> AdamWConfig {
    AdamWConfig::new().with_epsilon(s.epsilon as f32).with_weight_decay(s.weight_decay as f32)
}

/// [`train_steps`] for many clients at once: step `k` is one forward and one backward pass of the frozen
/// backbone over the `k`-th batch of every client that has one (clients with fewer batches drop out), each
/// sample through its own client's LoRA factors and head. The clients' losses are summed; since no client's
/// parameters touch another's samples, each client's gradient is exactly its own loss's gradient, and each
/// client has its own AdamW. The larger matrix products make better use of the hardware than one small
/// batch at a time; results equal the per-client path up to float rounding (row blocking in the products).
pub fn train_grouped(
    backbone: &Backbone,
    jobs: Vec<GroupJob<'_>>,
    plan: &AdapterPlan,
    s: &TrainSettings,
) -> Result<Vec<GroupResult>, ModelError> {
    let _flush = crate::subnormals::Scoped::new();
    let n = jobs.len();
    let steps = jobs.iter().map(|j| j.batches.len()).max().unwrap_or(0);
    let mut adapters = Vec::with_capacity(n);
    let mut batches = Vec::with_capacity(n);
    let mut carried = Vec::with_capacity(n);
    let mut optimisers = Vec::with_capacity(n);
    for job in jobs {
        let mut opt = adamw(s).init();
        let mut state = job.carried;
        if let Some(st) = state.as_mut().filter(|st| !st.is_empty()) {
            opt = opt
                .from_bytes(Bytes::from_bytes_vec(std::mem::take(&mut st.0)))
                .map_err(|e| ModelError::invalid("optimizer state", e.to_string()))?;
        }
        adapters.push(Some(job.adapters));
        batches.push(job.batches.into_iter());
        carried.push(state);
        optimisers.push(opt);
    }
    let mut sums = vec![(0.0f64, 0usize); n];
    for _ in 0..steps {
        let mut active = Vec::new();
        let mut parts = Vec::new();
        let mut labels = Vec::new();
        for (c, it) in batches.iter_mut().enumerate() {
            if let Some((b, l)) = it.next() {
                active.push(c);
                parts.push(b);
                labels.push(l);
            }
        }
        let sizes: Vec<usize> = parts.iter().map(Batch::len).collect();
        let joined = Batch::cat(parts)?;
        let (total, tasks) = {
            let groups: Vec<(&Adapters, usize)> = active
                .iter()
                .zip(&sizes)
                .map(|(&c, &len)| (adapters[c].as_ref().expect("adapters are put back after every step"), len))
                .collect();
            let logits = backbone.grouped_logits(&joined, &groups, plan, s.pooling)?;
            let mut total: Option<Tensor<1>> = None;
            let mut tasks = Vec::with_capacity(active.len());
            for ((lg, l), (ad, _)) in logits.into_iter().zip(&labels).zip(&groups) {
                let task = cross_entropy(lg, l);
                let term = regularised(task.clone(), ad, s.orthogonality);
                tasks.push(task);
                total = Some(match total {
                    Some(t) => t + term,
                    None => term,
                });
            }
            (total, tasks)
        };
        let Some(total) = total else { break };
        let mut grads = total.backward();
        for (&c, task) in active.iter().zip(tasks) {
            let ad = adapters[c].take().expect("adapters are put back after every step");
            let g = GradientsParams::from_module(&mut grads, &ad);
            sums[c].0 += task.into_scalar::<f32>() as f64;
            sums[c].1 += 1;
            adapters[c] = Some(optimisers[c].step(s.lr, ad, g));
        }
    }
    let mut out = Vec::with_capacity(n);
    for ((ad, opt), (state, (sum, k))) in adapters.into_iter().zip(optimisers).zip(carried.into_iter().zip(sums)) {
        let carried = match state {
            Some(_) => Some(OptimizerState(
                opt.into_bytes().map_err(|e| ModelError::invalid("optimizer state", e.to_string()))?.to_vec(),
            )),
            None => None,
        };
        out.push(GroupResult {
            adapters: ad.expect("adapters are put back after every step"),
            loss: if k == 0 { 0.0 } else { sum / k as f64 },
            carried,
        });
    }
    Ok(out)
}

/// One evaluation batch's tally: correct predictions, samples and the summed cross-entropy.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BatchScore {
    pub correct: usize,
    pub samples: usize,
    pub loss_sum: f64,
}

/// Scores one batch with `frozen` adapters (from `AutodiffModule::valid`): with the frozen
/// backbone also outside autodiff, no graph node is created.
pub fn score_batch(
    backbone: &Backbone,
    frozen: &Adapters,
    plan: &AdapterPlan,
    batch: &Batch,
    labels: &[u32],
    pooling: Pooling,
) -> Result<BatchScore, ModelError> {
    let _flush = crate::subnormals::Scoped::new();
    let logits = backbone.logits(batch, frozen, plan, pooling)?;
    let pred: Vec<i64> = logits.clone().argmax(1).into_data().iter::<i64>().collect();
    Ok(BatchScore {
        correct: pred.iter().zip(labels).filter(|(p, l)| **p == **l as i64).count(),
        samples: labels.len(),
        loss_sum: cross_entropy(logits, labels).into_scalar::<f32>() as f64 * labels.len() as f64,
    })
}

/// Accuracy and mean loss from batch tallies, summed in batch order (so the same batches give the same
/// bits however they were spread over threads).
pub fn accuracy_and_loss(scores: &[BatchScore]) -> Result<(f64, f64), ModelError> {
    let (mut correct, mut total, mut loss_sum) = (0usize, 0usize, 0.0f64);
    for s in scores {
        correct += s.correct;
        total += s.samples;
        loss_sum += s.loss_sum;
    }
    if total == 0 {
        return Err(ModelError::invalid("evaluation", "no test samples"));
    }
    Ok((correct as f64 / total as f64, loss_sum / total as f64))
}

/// Accuracy and mean loss over batches, without building an autodiff graph.
pub fn evaluate<'a>(
    backbone: &Backbone,
    ad: &Adapters,
    plan: &AdapterPlan,
    batches: impl IntoIterator<Item = (Batch, &'a [u32])>,
    pooling: Pooling,
) -> Result<(f64, f64), ModelError> {
    let frozen = ad.valid();
    let scores = batches
        .into_iter()
        .map(|(batch, labels)| score_batch(backbone, &frozen, plan, &batch, labels, pooling))
        .collect::<Result<Vec<_>, _>>()?;
    accuracy_and_loss(&scores)
}
