//! LayerNorm with a frozen scale and shift as one custom operation on the flex backend. burn composes it
//! from a variance-and-mean reduction, a subtraction, a square root, a division, a multiplication and an
//! addition, each a pass with its own buffer and autodiff node, all on one thread; the backward pass
//! retraces all of them. Here each direction is one sweep per row, vectorised and spread over threads (see
//! [`super::rows`]); only the input's gradient is formed, since the backbone's norms are never trained.

use super::rows;
use burn::tensor::Tensor;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, unary};
use burn_flex::{Flex, FlexTensor};
use std::sync::Arc;

/// `(x - mean) / sqrt(var + eps) * g + b` over the last axis (biased variance, as PyTorch), with `g` and `b`
/// constants.
pub fn layer_norm<const D: usize>(x: Tensor<D>, g: &Tensor<1>, b: &Tensor<1>, eps: f64) -> Tensor<D> {
    let width = x.dims()[D - 1];
    let flex = |t: &Tensor<1>| (t.dims() == [width]).then(|| t.clone().try_into_primitive::<Flex>().ok()).flatten();
    if let Some((g, b)) = flex(g).zip(flex(b)) {
        let (g, b) = (super::contiguous(&g), super::contiguous(&b));
        let op = super::custom_op(&x, LayerNormBackward, |x| {
            let x = super::contiguous(x);
            let mut out = super::zeros(x.layout().shape());
            let stats = rows::layer_norm(slice(&x), slice(&g), slice(&b), eps as f32, out.storage_mut::<f32>());
            (out, Saved { x, g, stats: Arc::new(stats) })
        });
        if let Some(y) = op {
            return y;
        }
    }
    let (var, mean) = x.clone().var_mean_bias(D - 1);
    let xhat = (x - mean) / (var + eps).sqrt();
    xhat * g.clone().unsqueeze::<D>() + b.clone().unsqueeze::<D>()
}

fn slice(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("contiguous f32")
}

/// What the backward step reads: the input (a shared handle), the frozen scale, and each row's mean and
/// reciprocal standard deviation from the forward pass.
#[derive(Debug, Clone)]
struct Saved {
    x: FlexTensor,
    g: FlexTensor,
    stats: Arc<Vec<(f32, f32)>>,
}

#[derive(Debug)]
struct LayerNormBackward;

impl Backward<Flex, 1> for LayerNormBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let Saved { x, g, stats } = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |dy| {
            let dy = super::contiguous(&dy);
            let mut dx = super::zeros(x.layout().shape());
            rows::layer_norm_backward(slice(&x), slice(&dy), slice(&g), &stats, dx.storage_mut::<f32>());
            dx
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_support::{assert_absolute, assert_relative, values};
    use burn::tensor::{Device, TensorData};

    fn frozen(width: usize) -> (Tensor<1>, Tensor<1>) {
        let device = Device::flex();
        let g: Vec<f32> = (0..width).map(|i| 0.5 + (i % 5) as f32 * 0.3).collect();
        let b: Vec<f32> = (0..width).map(|i| (i % 3) as f32 * 0.1 - 0.1).collect();
        (
            Tensor::from_data(TensorData::new(g, [width]), &device),
            Tensor::from_data(TensorData::new(b, [width]), &device),
        )
    }

    fn input(device: &Device) -> Tensor<3> {
        // Rows with a large common offset: a one-pass variance would lose digits here.
        let v: Vec<f32> = (0..3 * 4 * 19).map(|i| 100.0 + ((i * 29 % 41) as f32 - 20.0) * 0.13).collect();
        Tensor::from_data(TensorData::new(v, [3, 4, 19]), device)
    }

    fn burns(x: Tensor<3>, g: &Tensor<1>, b: &Tensor<1>) -> Tensor<3> {
        let (var, mean) = x.clone().var_mean_bias(2);
        (x - mean) / (var + 1e-6).sqrt() * g.clone().unsqueeze::<3>() + b.clone().unsqueeze::<3>()
    }

    #[test]
    fn forward_matches_burn_with_and_without_autodiff() {
        let (g, b) = frozen(19);
        for device in [Device::flex(), Device::flex().autodiff()] {
            let ours = values(layer_norm(input(&device), &g, &b, 1e-6));
            let reference = values(burns(input(&device), &g, &b));
            assert_absolute(&ours, &reference, 2e-5, "forward");
        }
    }

    #[test]
    fn input_gradient_matches_burn_through_a_strided_input() {
        let device = Device::flex().autodiff();
        let (g, b) = frozen(19);
        let weights: Vec<f32> = (0..3 * 4 * 19).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.2).collect();
        let grad_of = |ours: bool| {
            let x = input(&device).swap_dims(0, 1).require_grad();
            let w = Tensor::<3>::from_data(TensorData::new(weights.clone(), [3, 4, 19]), &device);
            let v = x.clone().swap_dims(0, 1);
            let y = if ours { layer_norm(v, &g, &b, 1e-6) } else { burns(v, &g, &b) };
            let grads = (y * w).sum().backward();
            values(x.grad(&grads).unwrap())
        };
        let (ours, reference) = (grad_of(true), grad_of(false));
        assert!(ours.iter().any(|v| v.abs() > 1e-2));
        assert_relative(&ours, &reference, 5e-4, "input gradient");
        // The input gradient of a LayerNorm sums to zero over each row (a shift of the row changes nothing).
        for row in ours.chunks(19) {
            assert!(row.iter().sum::<f32>().abs() < 1e-3, "{row:?}");
        }
    }
}
