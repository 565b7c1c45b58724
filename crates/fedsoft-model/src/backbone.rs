//! The frozen encoder: embeddings and transformer blocks as plain (untracked) tensors, with LoRA adapters
//! applied on the fly to the configured linear layers. One backbone serves every client.
//!
//! Weights follow burn's `x.matmul(w)` convention, `w: [in, out]`; checkpoints store `[out, in]` and are
//! transposed once, at load time (see [`crate::load`]).

use crate::adapters::{AdapterPlan, Adapters};
use crate::kernels::{self, gelu};
use crate::posembed::{Scale, bicubic};
use crate::spec::{EncoderSpec, Family};
use burn::tensor::{Device, Int, Tensor, TensorData};
use fedsoft_core::lora::Target;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;

/// A frozen linear layer: `y = x w + b`, `w: [in, out]`.
#[derive(Debug, Clone)]
pub struct FrozenLinear {
    pub w: Tensor<2>,
    pub b: Tensor<1>,
}

/// A frozen LayerNorm.
#[derive(Debug, Clone)]
pub struct Norm {
    pub g: Tensor<1>,
    pub b: Tensor<1>,
}

/// One transformer block. BERT-style blocks are post-LN (`ln1` after attention, `ln2` after the MLP);
/// ViT-style blocks are pre-LN, DINOv2 adds LayerScale (`ls1`, `ls2`).
#[derive(Debug, Clone)]
pub struct Block {
    pub query: FrozenLinear,
    pub key: FrozenLinear,
    pub value: FrozenLinear,
    pub output: FrozenLinear,
    pub mlp_in: FrozenLinear,
    pub mlp_out: FrozenLinear,
    pub ln1: Norm,
    pub ln2: Norm,
    pub ls1: Option<Tensor<1>>,
    pub ls2: Option<Tensor<1>>,
}

/// Input embeddings. Built once per backbone, so the variants' size difference costs nothing.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Embeddings {
    Text {
        word: Tensor<2>,
        position: Tensor<2>,
        token_type: Option<Tensor<2>>,
        norm: Norm,
    },
    Patches {
        /// The patch convolution as a matrix `[channels * patch * patch, hidden]`.
        projection: FrozenLinear,
        cls: Tensor<1>,
        /// The trained position table, host side, to interpolate: CLS row then `grid x grid` rows.
        positions: Vec<f32>,
        /// Position tables already resized, by patch-grid side.
        resized: Mutex<HashMap<usize, Tensor<2>>>,
    },
}

/// How the sequence is reduced to one vector for the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// The first token (`[CLS]`).
    #[default]
    Cls,
    /// The mean over the (unmasked) tokens.
    Mean,
}

/// A batch of model inputs (tensor handles: moving one is cheap whatever the variant).
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum Batch {
    /// Token ids `[B, T]`, attention mask `[B, T]` (1 keep, 0 pad), token types `[B, T]`.
    Tokens { ids: Tensor<2, Int>, mask: Tensor<2>, types: Tensor<2, Int> },
    /// Normalised images `[B, C, S, S]`.
    Images(Tensor<4>),
}

impl Batch {
    /// Token batch from row-major `u32` buffers of `n` rows.
    pub fn tokens(ids: &[u32], mask: &[u32], types: &[u32], n: usize, device: &Device) -> Batch {
        let t = ids.len() / n.max(1);
        let int = |v: &[u32]| {
            Tensor::<2, Int>::from_data(
                TensorData::new(v.iter().map(|&x| x as i64).collect::<Vec<_>>(), [n, t]),
                device,
            )
        };
        Batch::Tokens {
            ids: int(ids),
            mask: Tensor::from_data(
                TensorData::new(mask.iter().map(|&x| x as f32).collect::<Vec<_>>(), [n, t]),
                device,
            ),
            types: int(types),
        }
    }
    /// Image batch from `n x 3 x s x s` values.
    pub fn images(x: &[f32], n: usize, channels: usize, size: usize, device: &Device) -> Batch {
        Batch::Images(Tensor::from_data(TensorData::new(x.to_vec(), [n, channels, size, size]), device))
    }
    /// The batches one after another (all of one kind; token batches of one sequence length).
    pub fn cat(batches: Vec<Batch>) -> Result<Batch, crate::ModelError> {
        let mixed = || crate::ModelError::invalid("batch", "cannot join text and image batches");
        match batches.first() {
            None => Err(crate::ModelError::invalid("batch", "no batches to join")),
            Some(Batch::Images(_)) => {
                let x = batches.into_iter().map(|b| if let Batch::Images(x) = b { Ok(x) } else { Err(mixed()) });
                Ok(Batch::Images(Tensor::cat(x.collect::<Result<_, _>>()?, 0)))
            }
            Some(Batch::Tokens { ids, .. }) => {
                let t = ids.dims()[1];
                let (mut all_ids, mut masks, mut all_types) = (Vec::new(), Vec::new(), Vec::new());
                for b in batches {
                    let Batch::Tokens { ids, mask, types } = b else { return Err(mixed()) };
                    if ids.dims()[1] != t {
                        return Err(crate::ModelError::invalid("batch", "token batches of different lengths"));
                    }
                    all_ids.push(ids);
                    masks.push(mask);
                    all_types.push(types);
                }
                Ok(Batch::Tokens {
                    ids: Tensor::cat(all_ids, 0),
                    mask: Tensor::cat(masks, 0),
                    types: Tensor::cat(all_types, 0),
                })
            }
        }
    }
    /// Samples `start..start + len`, sharing the batch's memory.
    pub fn narrow(&self, start: usize, len: usize) -> Batch {
        match self {
            Batch::Tokens { ids, mask, types } => Batch::Tokens {
                ids: ids.clone().narrow(0, start, len),
                mask: mask.clone().narrow(0, start, len),
                types: types.clone().narrow(0, start, len),
            },
            Batch::Images(x) => Batch::Images(x.clone().narrow(0, start, len)),
        }
    }
    pub fn len(&self) -> usize {
        match self {
            Batch::Tokens { ids, .. } => ids.dims()[0],
            Batch::Images(x) => x.dims()[0],
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whose LoRA factors a forward pass applies: one set to the whole batch, or one set per consecutive group
/// of samples (a round's clients batched through one pass of the frozen backbone).
#[derive(Clone, Copy)]
pub enum Lora<'a> {
    One(&'a Adapters),
    /// `(adapters, samples)` per group, in batch order; the samples add up to the batch size.
    Grouped(&'a [(&'a Adapters, usize)]),
}

/// The frozen encoder.
#[derive(Debug)]
pub struct Backbone {
    pub spec: EncoderSpec,
    pub embeddings: Embeddings,
    pub blocks: Vec<Block>,
    pub final_norm: Option<Norm>,
    /// Where the frozen weights live: the training device without autodiff (see [`crate::load::build`]).
    pub device: Device,
}

fn layer_norm(x: Tensor<3>, n: &Norm, eps: f64) -> Tensor<3> {
    kernels::layer_norm(x, &n.g, &n.b, eps)
}

impl Backbone {
    /// The linear layer `lin` of block `layer`, plus its adapter if the plan puts one there.
    fn linear(
        &self,
        x: Tensor<3>,
        lin: &FrozenLinear,
        lora: Lora<'_>,
        plan: &AdapterPlan,
        slot: (usize, Target),
    ) -> Tensor<3> {
        let [b, t, k] = x.dims();
        let x2 = x.reshape([b * t, k]);
        let mut y = kernels::frozen_linear(x2.clone(), &lin.w, &lin.b);
        if let Some(i) = plan.slot(slot.0, slot.1) {
            let low_rank =
                |x: Tensor<2>, ad: &Adapters| x.matmul(ad.a[i].val().transpose()).matmul(ad.b[i].val().transpose());
            let update = match lora {
                Lora::One(ad) => low_rank(x2, ad),
                Lora::Grouped(groups) => {
                    let mut start = 0;
                    let parts = groups
                        .iter()
                        .map(|&(ad, samples)| {
                            let part = low_rank(x2.clone().narrow(0, start, samples * t), ad);
                            start += samples * t;
                            part
                        })
                        .collect();
                    Tensor::cat(parts, 0)
                }
            };
            y = y + update.mul_scalar(plan.scale);
        }
        let d = y.dims()[1];
        y.reshape([b, t, d])
    }

    /// Self-attention of block `layer`: the tokens `queries` (all of `x`, or its first token alone) attend
    /// over every token of `x`.
    fn attention(
        &self,
        queries: Tensor<3>,
        x: Tensor<3>,
        layer: usize,
        ad: Lora<'_>,
        plan: &AdapterPlan,
        bias: Option<&Tensor<2>>,
    ) -> Tensor<3> {
        let blk = &self.blocks[layer];
        let q = self.linear(queries, &blk.query, ad, plan, (layer, Target::Query));
        let k = self.linear(x.clone(), &blk.key, ad, plan, (layer, Target::Key));
        let v = self.linear(x, &blk.value, ad, plan, (layer, Target::Value));
        let ctx = kernels::attention(q, k, v, self.spec.heads, bias);
        self.linear(ctx, &blk.output, ad, plan, (layer, Target::Output))
    }

    /// Block `l` on `x`; with `first_only`, only the first token's output is formed (`[B, 1, H]`): its
    /// query, attention over all tokens, projection and MLP, but no other token's.
    fn block(
        &self,
        x: Tensor<3>,
        l: usize,
        ad: Lora<'_>,
        plan: &AdapterPlan,
        bias: Option<&Tensor<2>>,
        first_only: bool,
    ) -> Tensor<3> {
        let blk = &self.blocks[l];
        let eps = self.spec.eps;
        let first = |t: &Tensor<3>| if first_only { t.clone().narrow(1, 0, 1) } else { t.clone() };
        if matches!(self.spec.family, Family::Vit | Family::Dinov2) {
            let normed = layer_norm(x.clone(), &blk.ln1, eps);
            let mut a = self.attention(first(&normed), normed, l, ad, plan, bias);
            if let Some(ls) = &blk.ls1 {
                a = a * ls.clone().unsqueeze::<3>();
            }
            let x = first(&x) + a;
            let mut m = self.mlp(layer_norm(x.clone(), &blk.ln2, eps), l, ad, plan);
            if let Some(ls) = &blk.ls2 {
                m = m * ls.clone().unsqueeze::<3>();
            }
            x + m
        } else {
            let a = self.attention(first(&x), x.clone(), l, ad, plan, bias);
            let x = layer_norm(first(&x) + a, &blk.ln1, eps);
            let m = self.mlp(x.clone(), l, ad, plan);
            layer_norm(x + m, &blk.ln2, eps)
        }
    }

    fn mlp(&self, x: Tensor<3>, layer: usize, ad: Lora<'_>, plan: &AdapterPlan) -> Tensor<3> {
        let blk = &self.blocks[layer];
        let hdn = gelu(self.linear(x, &blk.mlp_in, ad, plan, (layer, Target::MlpIn)));
        self.linear(hdn, &blk.mlp_out, ad, plan, (layer, Target::MlpOut))
    }

    /// The position table for a `grid x grid` patch grid, interpolated once per size.
    fn positions(&self, grid: usize) -> Tensor<2> {
        let Embeddings::Patches { positions, resized, .. } = &self.embeddings else { unreachable!("vision only") };
        let mut cache = resized.lock().expect("position cache");
        cache
            .entry(grid)
            .or_insert_with(|| {
                let h = self.spec.hidden;
                let src_grid = self.spec.pos_grid;
                let mut table = positions[..h].to_vec();
                if grid == src_grid {
                    table.extend_from_slice(&positions[h..]);
                } else {
                    // Size-based, as the packaged DINOv2 graph's Resize node (and current HF) do.
                    table.extend(bicubic(&positions[h..], src_grid, src_grid, h, grid, grid, Scale::Sizes));
                }
                Tensor::from_data(TensorData::new(table, [1 + grid * grid, h]), &self.device)
            })
            .clone()
    }

    /// The position table used for a `grid x grid` patch grid (CLS row first), e.g. to check it.
    pub fn position_table(&self, grid: usize) -> Option<Vec<f32>> {
        matches!(self.embeddings, Embeddings::Patches { .. })
            .then(|| self.positions(grid).into_data().try_into_vec::<f32>().expect("f32"))
    }

    fn embed(&self, batch: &Batch) -> Result<(Tensor<3>, Option<Tensor<2>>), crate::ModelError> {
        match (&self.embeddings, batch) {
            (Embeddings::Text { word, position, token_type, norm }, Batch::Tokens { ids, mask, types }) => {
                let [b, t] = ids.dims();
                if t > self.spec.max_positions {
                    return Err(crate::ModelError::invalid(
                        "data.max_len",
                        format!("{t} tokens exceed the model's {} positions", self.spec.max_positions),
                    ));
                }
                let h = self.spec.hidden;
                let mut x = word.clone().select(0, ids.clone().inner().reshape([b * t])).reshape([b, t, h]);
                x = x + position.clone().narrow(0, 0, t).unsqueeze::<3>();
                if let Some(tt) = token_type {
                    x = x + tt.clone().select(0, types.clone().inner().reshape([b * t])).reshape([b, t, h]);
                }
                Ok((layer_norm(x, norm, self.spec.eps), Some(mask.clone().inner())))
            }
            (Embeddings::Patches { projection, cls, .. }, Batch::Images(img)) => {
                let [b, c, s, s2] = img.dims();
                let p = self.spec.patch;
                if s != s2 || s % p != 0 || c != self.spec.channels {
                    return Err(crate::ModelError::invalid(
                        "data.image_size",
                        format!(
                            "images are {c}x{s}x{s2}; the model needs {} channels and a side divisible by {p}",
                            self.spec.channels
                        ),
                    ));
                }
                let g = self.patch_grid(s);
                let h = self.spec.hidden;
                // Stride-p convolution with a p x p kernel = matmul over non-overlapping patches.
                let patches = img
                    .clone()
                    .inner()
                    .reshape([b, c, g, p, g, p])
                    .permute([0, 2, 4, 1, 3, 5])
                    .reshape([b * g * g, c * p * p]);
                let x = kernels::frozen_linear(patches, &projection.w, &projection.b).reshape([b, g * g, h]);
                let cls = cls.clone().reshape([1, 1, h]).expand([b, 1, h]);
                let x = Tensor::cat(vec![cls, x], 1) + self.positions(g).unsqueeze::<3>();
                Ok((x, None))
            }
            _ => Err(crate::ModelError::invalid("data", "the batch kind (text or images) does not match the model")),
        }
    }

    /// Tokens per sample the encoder sees for `batch`: the sequence length, or the patches plus `[CLS]`.
    pub fn tokens_per_sample(&self, batch: &Batch) -> usize {
        match batch {
            Batch::Tokens { ids, .. } => ids.dims()[1],
            Batch::Images(x) => {
                let g = self.patch_grid(x.dims()[2]);
                g * g + 1
            }
        }
    }

    /// Patches along each side of a square image of `side` pixels (`embed` checks the side divides evenly).
    /// A text model has no patch size; `tokens_per_sample` may be asked about an image batch before `embed`
    /// rejects the mismatch, hence `max(1)` rather than a division by zero.
    fn patch_grid(&self, side: usize) -> usize {
        side / self.spec.patch.max(1)
    }

    /// Final hidden states `[B, T, H]` and the attention mask (text only).
    pub fn forward(
        &self,
        batch: &Batch,
        ad: &Adapters,
        plan: &AdapterPlan,
    ) -> Result<(Tensor<3>, Option<Tensor<2>>), crate::ModelError> {
        self.forward_with(batch, Lora::One(ad), plan)
    }

    /// [`Backbone::forward`] with each group of samples through its own adapters.
    pub fn forward_with(
        &self,
        batch: &Batch,
        ad: Lora<'_>,
        plan: &AdapterPlan,
    ) -> Result<(Tensor<3>, Option<Tensor<2>>), crate::ModelError> {
        self.encode(batch, ad, plan, false)
    }

    /// The encoder; with `first_only` the last block and the final norm form only the first token's
    /// state (`[B, 1, H]`), which is all that [`Pooling::Cls`] reads. Every other token's output in the last
    /// block would be computed and dropped: about five sixths of that block's arithmetic, forward and
    /// backward (a twelfth of DINOv2-S's whole step, a seventh of MiniLM's).
    fn encode(
        &self,
        batch: &Batch,
        ad: Lora<'_>,
        plan: &AdapterPlan,
        first_only: bool,
    ) -> Result<(Tensor<3>, Option<Tensor<2>>), crate::ModelError> {
        if let Lora::Grouped(groups) = ad {
            let samples: usize = groups.iter().map(|g| g.1).sum();
            if samples != batch.len() {
                return Err(crate::ModelError::invalid(
                    "batch",
                    format!("the groups hold {samples} samples but the batch has {}", batch.len()),
                ));
            }
        }
        let (mut x, mask) = self.embed(batch)?;
        // Added to the attention scores: 0 on kept tokens, -1e9 on padding.
        let bias = mask.as_ref().map(|m| (m.clone() - 1.0).mul_scalar(1e9));
        let last = self.blocks.len().saturating_sub(1);
        for l in 0..self.blocks.len() {
            x = self.block(x, l, ad, plan, bias.as_ref(), first_only && l == last);
        }
        if let Some(n) = &self.final_norm {
            x = layer_norm(x, n, self.spec.eps);
        }
        Ok((x, mask))
    }

    /// One vector per sample.
    pub fn pooled(
        &self,
        batch: &Batch,
        ad: Lora<'_>,
        plan: &AdapterPlan,
        pooling: Pooling,
    ) -> Result<Tensor<2>, crate::ModelError> {
        let (x, mask) = self.encode(batch, ad, plan, pooling == Pooling::Cls)?;
        let [b, t, h] = x.dims();
        Ok(match pooling {
            Pooling::Cls => x.slice([0..b, 0..1, 0..h]).reshape([b, h]),
            Pooling::Mean => match mask {
                Some(m) => {
                    let m3 = m.clone().reshape([b, t, 1]);
                    let count = m.sum_dim(1).clamp_min(1.0);
                    (x * m3).sum_dim(1).reshape([b, h]) / count
                }
                None => x.mean_dim(1).reshape([b, h]),
            },
        })
    }

    /// Class scores `[B, classes]`.
    pub fn logits(
        &self,
        batch: &Batch,
        ad: &Adapters,
        plan: &AdapterPlan,
        pooling: Pooling,
    ) -> Result<Tensor<2>, crate::ModelError> {
        let z = self.pooled(batch, Lora::One(ad), plan, pooling)?;
        Ok(z.matmul(ad.head_w.val()) + ad.head_b.val().unsqueeze::<2>())
    }

    /// Class scores of each group of samples, through the group's own adapters and head.
    pub fn grouped_logits(
        &self,
        batch: &Batch,
        groups: &[(&Adapters, usize)],
        plan: &AdapterPlan,
        pooling: Pooling,
    ) -> Result<Vec<Tensor<2>>, crate::ModelError> {
        let z = self.pooled(batch, Lora::Grouped(groups), plan, pooling)?;
        let mut start = 0;
        Ok(groups
            .iter()
            .map(|&(ad, samples)| {
                let zg = z.clone().narrow(0, start, samples);
                start += samples;
                zg.matmul(ad.head_w.val()) + ad.head_b.val().unsqueeze::<2>()
            })
            .collect())
    }
}
