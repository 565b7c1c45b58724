//! Attention's `softmax(scale * scores + bias)` over the keys as one custom operation on the flex backend.
//! burn builds it from a scale, an add, a max, a subtraction, `exp` (one libm call per element), a sum and a
//! division: seven passes over the scores, each with its own buffer and autodiff node, all on one thread.
//! Here the forward pass is one sweep per row and the backward pass another (`dx = scale * y * (dy -
//! <dy, y>)`, from the saved output), vectorised and spread over threads (see [`super::rows`]).

use super::rows;
use burn::tensor::Tensor;
use burn::tensor::activation::softmax;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, unary};
use burn_flex::{Flex, FlexTensor};

/// Attention weights from raw scores `[batch, heads, queries, keys]`: `softmax(scale * scores + bias)`
/// over the last axis, where `bias` (`[batch, keys]`, not differentiated) masks padding. The scores'
/// gradient flows; `bias` is a constant.
pub fn attention_softmax(scores: Tensor<4>, scale: f32, bias: Option<&Tensor<2>>) -> Tensor<4> {
    let [b, _, _, k] = scores.dims();
    let bias_fits = bias.is_none_or(|t| t.dims() == [b, k]);
    let flex_bias = match bias {
        None => Some(None),
        Some(t) => t.clone().try_into_primitive::<Flex>().ok().map(Some),
    };
    if let Some(bias) = flex_bias.filter(|_| bias_fits) {
        let op = super::custom_op(&scores, SoftmaxBackward { scale }, |x| {
            let out = forward(x, bias.as_ref(), scale);
            (out.clone(), out)
        });
        if let Some(weights) = op {
            return weights;
        }
    }
    let mut s = scores.mul_scalar(scale);
    if let Some(bias) = bias {
        s = s + bias.clone().reshape([b, 1, 1, k]);
    }
    softmax(s, 3)
}

fn forward(x: &FlexTensor, bias: Option<&FlexTensor>, scale: f32) -> FlexTensor {
    let x = super::contiguous(x);
    let shape = x.layout().shape().clone();
    let (heads, queries, keys) = (shape[1], shape[2], shape[3]);
    let bias = bias.map(super::contiguous);
    let mut out = super::zeros(&shape);
    rows::softmax(
        x.as_slice::<f32>().expect("contiguous f32"),
        bias.as_ref().map(|b| b.as_slice::<f32>().expect("contiguous f32")),
        heads * queries,
        scale,
        keys,
        out.storage_mut::<f32>(),
    );
    out
}

/// Keeps the output (a shared handle) and the scale.
#[derive(Debug)]
struct SoftmaxBackward {
    scale: f32,
}

impl Backward<Flex, 1> for SoftmaxBackward {
    type State = FlexTensor;

    fn backward(self, ops: Ops<FlexTensor, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let y = ops.state;
        let scale = self.scale;
        unary::<Flex, _>(ops.parents, ops.node, grads, |dy| {
            let dy = super::contiguous(&dy);
            let keys = y.layout().shape()[3];
            let mut dx = super::zeros(y.layout().shape());
            rows::softmax_backward(
                y.as_slice::<f32>().expect("contiguous f32"),
                dy.as_slice::<f32>().expect("contiguous f32"),
                scale,
                keys,
                dx.storage_mut::<f32>(),
            );
            dx
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_support::{assert_absolute, assert_relative, values};
    use burn::tensor::{Device, TensorData};

    /// Scores `[2, 3, 5, 7]` with a wide spread, and a padding bias that masks the last two keys of batch 1.
    fn inputs(device: &Device) -> (Tensor<4>, Tensor<2>) {
        let v: Vec<f32> = (0..2 * 3 * 5 * 7).map(|i| ((i * 53 % 97) as f32 - 48.0) * 0.21).collect();
        let mut bias = vec![0.0f32; 2 * 7];
        bias[12] = -1e9;
        bias[13] = -1e9;
        (
            Tensor::from_data(TensorData::new(v, [2, 3, 5, 7]), device),
            Tensor::from_data(TensorData::new(bias, [2, 7]), &Device::flex()),
        )
    }

    fn burns(scores: Tensor<4>, scale: f32, bias: &Tensor<2>) -> Tensor<4> {
        softmax(scores.mul_scalar(scale) + bias.clone().reshape([2, 1, 1, 7]), 3)
    }

    #[test]
    fn forward_matches_burn_and_masks_padding() {
        for device in [Device::flex(), Device::flex().autodiff()] {
            let (x, bias) = inputs(&device);
            let ours = values(attention_softmax(x.clone(), 0.37, Some(&bias)));
            let reference = values(burns(x, 0.37, &bias));
            assert_absolute(&ours, &reference, 1e-6, "forward");
            // Batch 1's rows give the two padded keys no weight at all, and every row sums to one.
            for (r, row) in ours.chunks(7).enumerate() {
                assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
                if r >= 15 {
                    assert!(row[5] < 1e-30 && row[6] < 1e-30, "{row:?}");
                }
            }
        }
    }

    #[test]
    fn gradient_matches_burn_through_a_strided_input() {
        let device = Device::flex().autodiff();
        let (x0, bias) = inputs(&device);
        let weights: Vec<f32> = (0..2 * 3 * 5 * 7).map(|i| (i % 7) as f32 - 2.5).collect();
        let grad_of = |ours: bool| {
            // The scores arrive transposed in the middle axes, as a view.
            let x = x0.clone().swap_dims(1, 2).require_grad();
            let w = Tensor::<4>::from_data(TensorData::new(weights.clone(), [2, 5, 3, 7]), &device).swap_dims(1, 2);
            let input = x.clone().swap_dims(1, 2);
            let y = if ours { attention_softmax(input, 0.37, Some(&bias)) } else { burns(input, 0.37, &bias) };
            let grads = (y * w).sum().backward();
            values(x.grad(&grads).unwrap())
        };
        let (ours, reference) = (grad_of(true), grad_of(false));
        assert!(ours.iter().any(|g| g.abs() > 1e-3));
        assert_relative(&ours, &reference, 2e-6, "gradient");
    }
}
