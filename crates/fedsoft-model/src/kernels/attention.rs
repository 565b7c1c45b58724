//! Multi-head scaled dot-product attention, `softmax(q·kᵀ / sqrt(d) + bias)·v` per head, as one custom
//! operation on the flex backend.
//!
//! burn composes it from a head split (reshape and axis swap) of each input, a batched product, the
//! softmax, a second batched product and a head merge: the swapped views are copied to fresh buffers
//! before the products, and each step is an autodiff node with buffers of its own. Here each head is read
//! where it lies in the `[batch, tokens, heads x width]` inputs through strided views, its products run on
//! [`super::product`]'s kernels, and the backward pass forms the three input gradients from the saved
//! attention weights. A call's samples run one after another on the calling thread: its callers (clients,
//! test batches, differentiation chunks) already fill the cores, and spreading the samples too measured
//! no faster. Measured against burn's composition, interleaved: default round training 3.76-3.85 s vs
//! 3.93-3.94 s; lone steps 2-6 % faster on MiniLM, DINOv2 and ViT-B/16 on a quiet host, within the noise
//! on a busy one (README, "Speed on CPU").

use super::product::{View, multiply_single};
use super::{contiguous, from_vec, rows};
use burn::tensor::activation::softmax;
use burn::tensor::{DType, Tensor};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops};
use burn_flex::{Flex, FlexTensor};

/// Attention of `queries` `[b, tq, heads x d]` over `keys` and `values` `[b, t, heads x d]`, each head
/// scaled by `1 / sqrt(d)`, with `bias` (`[b, t]`, a constant: 0 to keep a token, -1e9 to mask padding)
/// added to every head's scores. Returns the heads' contexts side by side, `[b, tq, heads x d]`.
pub fn attention(
    queries: Tensor<3>,
    keys: Tensor<3>,
    values: Tensor<3>,
    heads: usize,
    bias: Option<&Tensor<2>>,
) -> Tensor<3> {
    fused(&queries, &keys, &values, heads, bias).unwrap_or_else(|| composed([queries, keys, values], heads, bias))
}

/// The custom operation, or `None` where it does not apply (another backend or type, shapes that do not
/// fit), and burn's composed operations run instead. Apart so that the tests can tell which ran.
fn fused(
    queries: &Tensor<3>,
    keys: &Tensor<3>,
    values: &Tensor<3>,
    heads: usize,
    bias: Option<&Tensor<2>>,
) -> Option<Tensor<3>> {
    let ([b, tq, h], [bk, t, hk]) = (queries.dims(), keys.dims());
    let fits = [b, tq, t, h, heads].iter().all(|&n| n > 0)
        && h % heads == 0
        && (bk, hk) == (b, h)
        && values.dims() == [b, t, h]
        && bias.is_none_or(|m| m.dims() == [b, t]);
    let bias = match bias {
        _ if !fits => return None,
        None => None,
        Some(m) => Some(m.clone().try_into_primitive::<Flex>().ok().filter(|m| m.dtype() == DType::F32)?),
    };
    let shape = Shape { heads, d: h / heads, tq, t };
    let step = AttentionBackward { shape };
    super::custom_op_n([queries, keys, values], step, |[q, k, v]| {
        let (q, k, v) = (contiguous(q), contiguous(k), contiguous(v));
        let bias = bias.as_ref().map(contiguous);
        let (ctx, weights) = forward(&shape, &q, &k, &v, bias.as_ref());
        (ctx, Saved { q, k, v, weights })
    })
}

/// The same attention from burn's own operations (queries, keys, values), for tensors of other backends
/// (CUDA) or types.
fn composed([queries, keys, values]: [Tensor<3>; 3], heads: usize, bias: Option<&Tensor<2>>) -> Tensor<3> {
    let [b, tq, h] = queries.dims();
    let (t, d) = (keys.dims()[1], h / heads);
    let split = |y: Tensor<3>, n: usize| y.reshape([b, n, heads, d]).swap_dims(1, 2);
    let (q, k, v) = (split(queries, tq), split(keys, t), split(values, t));
    let mut scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(1.0 / (d as f32).sqrt());
    if let Some(bias) = bias {
        scores = scores + bias.clone().reshape([b, 1, 1, t]);
    }
    softmax(scores, 3).matmul(v).swap_dims(1, 2).reshape([b, tq, h])
}

/// Heads, head width, query tokens and key tokens of one call.
#[derive(Debug, Clone, Copy)]
struct Shape {
    heads: usize,
    d: usize,
    tq: usize,
    t: usize,
}

impl Shape {
    fn width(&self) -> usize {
        self.heads * self.d
    }

    fn scale(&self) -> f32 {
        1.0 / (self.d as f32).sqrt()
    }
}

fn f32s(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("contiguous f32")
}

/// Contexts `[b, tq, h]` and attention weights `[b, heads, tq, t]`.
fn forward(
    s: &Shape,
    q: &FlexTensor,
    k: &FlexTensor,
    v: &FlexTensor,
    bias: Option<&FlexTensor>,
) -> (FlexTensor, FlexTensor) {
    let b = q.layout().shape()[0];
    let (q, k, v, bias) = (f32s(q), f32s(k), f32s(v), bias.map(f32s));
    let (h, tq, t) = (s.width(), s.tq, s.t);
    let mut ctx = vec![0.0f32; b * tq * h];
    let mut weights = vec![0.0f32; b * s.heads * tq * t];
    let inputs = q.chunks(tq * h).zip(k.chunks(t * h)).zip(v.chunks(t * h));
    let outputs = ctx.chunks_mut(tq * h).zip(weights.chunks_mut(s.heads * tq * t));
    for (i, (((q, k), v), (ctx, weights))) in inputs.zip(outputs).enumerate() {
        let bias = bias.map(|m| &m[i * t..(i + 1) * t]);
        forward_sample(s, (q, k, v), bias, ctx, weights);
    }
    (from_vec(ctx, [b, tq, h].into()), from_vec(weights, [b, s.heads, tq, t].into()))
}

/// Rows of `cols` elements, `stride` apart.
fn rows_of(data: &[f32], rows: usize, cols: usize, stride: usize) -> View<'_> {
    View { data, rows, cols, row_stride: stride, col_stride: 1 }
}

/// One sample, every head: scores into scratch, weights by the row softmax, contexts into the head's
/// columns of `ctx`.
fn forward_sample(
    s: &Shape,
    (q, k, v): (&[f32], &[f32], &[f32]),
    bias: Option<&[f32]>,
    ctx: &mut [f32],
    weights: &mut [f32],
) {
    let (h, d, tq, t) = (s.width(), s.d, s.tq, s.t);
    let mut scores = vec![0.0f32; tq * t];
    for (head, w) in weights.chunks_mut(tq * t).enumerate() {
        let at = head * d;
        multiply_single(&mut scores, t, rows_of(&q[at..], tq, d, h), rows_of(&k[at..], t, d, h).transposed());
        rows::softmax(&scores, bias, s.scale(), t, w);
        multiply_single(&mut ctx[at..], h, rows_of(w, tq, t, t), rows_of(&v[at..], t, d, h));
    }
}

/// The input gradients of one sample, every head, from the output gradient `dctx` and the saved weights.
fn backward_sample(
    s: &Shape,
    (q, k, v, weights): (&[f32], &[f32], &[f32], &[f32]),
    dctx: &[f32],
    (dq, dk, dv): (&mut [f32], &mut [f32], &mut [f32]),
) {
    let (h, d, tq, t) = (s.width(), s.d, s.tq, s.t);
    let (mut dw, mut ds) = (vec![0.0f32; tq * t], vec![0.0f32; tq * t]);
    for (head, w) in weights.chunks(tq * t).enumerate() {
        let at = head * d;
        let dc = rows_of(&dctx[at..], tq, d, h);
        // dv = wᵀ·dctx
        multiply_single(&mut dv[at..], h, rows_of(w, tq, t, t).transposed(), dc);
        // dw = dctx·vᵀ, then the softmax's backward step to the scores
        multiply_single(&mut dw, t, dc, rows_of(&v[at..], t, d, h).transposed());
        rows::softmax_backward(w, &dw, s.scale(), t, &mut ds);
        // dq = ds·k, dk = dsᵀ·q
        multiply_single(&mut dq[at..], h, rows_of(&ds, tq, t, t), rows_of(&k[at..], t, d, h));
        multiply_single(&mut dk[at..], h, rows_of(&ds, tq, t, t).transposed(), rows_of(&q[at..], tq, d, h));
    }
}

/// What the backward step reads: the inputs (shared handles) and the attention weights.
#[derive(Debug, Clone)]
struct Saved {
    q: FlexTensor,
    k: FlexTensor,
    v: FlexTensor,
    weights: FlexTensor,
}

#[derive(Debug)]
struct AttentionBackward {
    shape: Shape,
}

impl Backward<Flex, 3> for AttentionBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let s = self.shape;
        let saved = ops.state;
        let dctx = contiguous(&grads.consume::<Flex>(&ops.node));
        let b = saved.q.layout().shape()[0];
        let (h, tq, t) = (s.width(), s.tq, s.t);
        let (q, k, v, w, dc) = (f32s(&saved.q), f32s(&saved.k), f32s(&saved.v), f32s(&saved.weights), f32s(&dctx));
        let (mut dq, mut dk, mut dv) = (vec![0.0f32; b * tq * h], vec![0.0f32; b * t * h], vec![0.0f32; b * t * h]);
        let inputs = q.chunks(tq * h).zip(k.chunks(t * h)).zip(v.chunks(t * h)).zip(w.chunks(s.heads * tq * t));
        let outputs = dq.chunks_mut(tq * h).zip(dk.chunks_mut(t * h)).zip(dv.chunks_mut(t * h));
        for ((((q, k), v), w), (((dq, dk), dv), dc)) in inputs.zip(outputs.zip(dc.chunks(tq * h))) {
            backward_sample(&s, (q, k, v, w), dc, (dq, dk, dv));
        }
        let [pq, pk, pv] = ops.parents;
        for (parent, grad, tokens) in [(pq, dq, tq), (pk, dk, t), (pv, dv, t)] {
            if let Some(node) = parent {
                grads.register::<Flex>(node.id, from_vec(grad, [b, tokens, h].into()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_support::{assert_relative, values};
    use burn::tensor::{Device, TensorData};

    fn tensor(dims: [usize; 3], seed: usize, device: &Device) -> Tensor<3> {
        let n = dims.iter().product::<usize>();
        let v: Vec<f32> = (0..n).map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 - 1001.0) / 700.0).collect();
        Tensor::from_data(TensorData::new(v, dims), device)
    }

    /// Padding on the last two keys of sample 1.
    fn padding(b: usize, t: usize) -> Tensor<2> {
        let mut m = vec![0.0f32; b * t];
        m[2 * t - 2..2 * t].fill(-1e9);
        Tensor::from_data(TensorData::new(m, [b, t]), &Device::flex())
    }

    /// Attention's output and the gradients of all three inputs under a fixed upstream gradient.
    fn run(ours: bool, (b, tq, t, heads, d): (usize, usize, usize, usize, usize), bias: bool) -> [Vec<f32>; 4] {
        let device = Device::flex().autodiff();
        let h = heads * d;
        let (q, k, v) = (
            tensor([b, tq, h], 1, &device).require_grad(),
            tensor([b, t, h], 2, &device).require_grad(),
            tensor([b, t, h], 3, &device).require_grad(),
        );
        let bias = bias.then(|| padding(b, t));
        let y = if ours {
            // The custom operation itself, never the fallback: were it to fall back, this would compare burn
            // with burn.
            fused(&q, &k, &v, heads, bias.as_ref()).expect("the custom attention applies to flex f32 tensors")
        } else {
            composed([q.clone(), k.clone(), v.clone()], heads, bias.as_ref())
        };
        let grads = (y.clone() * tensor([b, tq, h], 4, &device)).sum().backward();
        [values(y), values(q.grad(&grads).unwrap()), values(k.grad(&grads).unwrap()), values(v.grad(&grads).unwrap())]
    }

    #[test]
    fn output_and_input_gradients_match_burn() {
        // The default's shape (17 tokens, 6 heads of 64), the first query alone (the last block with [CLS]
        // pooling), ragged widths, and a text batch with padding.
        for (shape, bias) in [
            ((3, 17, 17, 6, 64), false),
            ((2, 1, 17, 6, 64), false),
            ((2, 9, 9, 3, 5), true),
            ((4, 33, 33, 2, 32), true),
        ] {
            let (ours, reference) = (run(true, shape, bias), run(false, shape, bias));
            for (what, (a, r)) in ["output", "dq", "dk", "dv"].iter().zip(ours.iter().zip(&reference)) {
                assert!(r.iter().any(|x| x.abs() > 1e-3), "{what} of {shape:?} is all but zero");
                assert_relative(a, r, 2e-5, &format!("{what} of {shape:?}"));
            }
        }
    }

    #[test]
    fn padded_keys_get_next_to_no_gradient() {
        let (b, t, heads, d) = (2, 6, 2, 4);
        let [y, _, dk, dv] = run(true, (b, t, t, heads, d), true);
        // Sample 1's padded keys (tokens 4 and 5) have weight exp(-1e9) (below 1e-30 after the polynomial exp),
        // so their keys and values receive next to no gradient.
        let h = heads * d;
        for token in [4, 5] {
            let at = (t + token) * h;
            let g: Vec<f32> = dk[at..at + h].iter().chain(&dv[at..at + h]).copied().collect();
            assert!(g.iter().all(|g| g.abs() < 1e-30), "token {token}: {g:?}");
        }
        assert!(y.iter().all(|v| v.is_finite()));
    }

    /// The public entry runs the custom operation where it applies (tracked and untracked flex f32), and
    /// falls back to burn's operations, with the same result, where it does not (mismatched bias shape).
    #[test]
    fn the_custom_operation_runs_wherever_it_applies() {
        let (b, t, heads, d) = (2, 5, 2, 4);
        for device in [Device::flex(), Device::flex().autodiff()] {
            let (q, k, v) = (
                tensor([b, t, heads * d], 1, &device),
                tensor([b, t, heads * d], 2, &device),
                tensor([b, t, heads * d], 3, &device),
            );
            assert!(fused(&q, &k, &v, heads, None).is_some(), "{device:?}");
            assert!(fused(&q, &k, &v, heads, Some(&padding(b, t))).is_some(), "{device:?}");
            let wrong_bias = Tensor::<2>::zeros([b, t + 1], &Device::flex());
            assert!(fused(&q, &k, &v, heads, Some(&wrong_bias)).is_none());
            assert!(fused(&q, &k, &v, 3, None).is_none(), "8 columns do not split into 3 heads");
        }
    }

    #[test]
    fn evaluation_without_autodiff_equals_the_tracked_output() {
        let device = Device::flex();
        let (b, t, heads, d) = (3, 17, 6, 64);
        let h = heads * d;
        let y = attention(
            tensor([b, t, h], 1, &device),
            tensor([b, t, h], 2, &device),
            tensor([b, t, h], 3, &device),
            heads,
            None,
        );
        assert_eq!(values(y), run(true, (b, t, t, heads, d), false)[0]);
    }
}
