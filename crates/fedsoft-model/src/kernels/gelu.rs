//! The exact GELU, x·Φ(x), as one custom operation on the flex backend: the forward pass and the backward
//! pass each make one vectorised sweep over the data (see [`super::math`]). Tensors on any other backend,
//! or of another float type, go through burn's own `gelu`.

use super::contiguous;
use super::math;
use burn::tensor::{Tensor, activation};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, unary};
use burn_flex::{Flex, FlexTensor};

/// GELU with the vectorised kernels where the tensor lives on the CPU backend in f32.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    super::custom_op(&x, GeluBackward, forward).unwrap_or_else(|| activation::gelu(x))
}

/// The output, and the input (a shared handle) for the backward step.
fn forward(x: &FlexTensor) -> (FlexTensor, FlexTensor) {
    let x = contiguous(x);
    let mut out = super::zeros(x.layout().shape());
    math::gelu_forward(x.as_slice::<f32>().expect("contiguous f32"), out.storage_mut::<f32>());
    (out, x)
}

fn backward(x: &FlexTensor, grad: &FlexTensor) -> FlexTensor {
    let grad = contiguous(grad);
    let mut out = super::zeros(x.layout().shape());
    math::gelu_backward(
        x.as_slice::<f32>().expect("contiguous f32"),
        grad.as_slice::<f32>().expect("contiguous f32"),
        out.storage_mut::<f32>(),
    );
    out
}

/// The backward step keeps the (row-major) input and computes Φ(x) + x·φ(x) from it.
#[derive(Debug)]
struct GeluBackward;

impl Backward<Flex, 1> for GeluBackward {
    type State = FlexTensor;

    fn backward(self, ops: Ops<FlexTensor, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let x = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| backward(&x, &grad));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_support::{assert_relative, values};
    use burn::tensor::{Device, TensorData};

    fn input(device: &Device) -> Tensor<2> {
        let v: Vec<f32> = (0..6 * 37).map(|i| (i as f32 - 111.0) * 0.047).collect();
        Tensor::from_data(TensorData::new(v, [6, 37]), device)
    }

    #[test]
    fn forward_matches_burn_with_and_without_autodiff() {
        for device in [Device::flex(), Device::flex().autodiff()] {
            let x = input(&device);
            let ours = values(gelu(x.clone()));
            let burns = values(activation::gelu(x));
            assert_relative(&ours, &burns, 1e-6, "forward");
        }
    }

    #[test]
    fn gradient_matches_burn_and_reaches_the_input() {
        let device = Device::flex().autodiff();
        // A transposed (non-contiguous) input and a non-uniform upstream gradient.
        let grad_of = |f: fn(Tensor<2>) -> Tensor<2>| {
            let x = input(&device).require_grad();
            let w = Tensor::<2>::from_data(
                TensorData::new((0..37 * 6).map(|i| (i % 5) as f32 - 2.0).collect::<Vec<f32>>(), [37, 6]),
                &device,
            );
            let y = f(x.clone().transpose()) * w;
            let grads = y.sum().backward();
            values(x.grad(&grads).unwrap())
        };
        let ours = grad_of(gelu);
        let burns = grad_of(activation::gelu);
        assert!(ours.iter().any(|g| *g != 0.0));
        assert_relative(&ours, &burns, 2e-6, "input gradient");
    }
}
