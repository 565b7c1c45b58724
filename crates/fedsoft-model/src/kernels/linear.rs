//! A frozen linear layer, `x·W + b`, as one custom operation on the flex backend.
//!
//! Through burn every such layer is a matrix product and a broadcast addition: two output buffers, each
//! zero-filled and then copied once more by burn-flex's allocator (it aligns a byte vector by copying it),
//! and a second sweep over the product for the bias (together about 6 % of an evaluation's profile, which is
//! almost nothing but these layers). Here the output is one vector, filled with the bias rows and then
//! accumulated into by the product of [`super::product`]; the backward pass (the input's gradient only: the
//! backbone is frozen) writes `dy·Wᵀ` into one vector, reading `W` through transposed strides.

use super::product::{View, multiply_into};
use super::{contiguous, from_vec};
use burn::tensor::{DType, Tensor};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, unary};
use burn_flex::{Flex, FlexTensor};

/// `x·w + b` for `x` `[m, k]`, `w` `[k, n]` and `b` `[n]`, with `w` and `b` constants.
pub fn frozen_linear(x: Tensor<2>, w: &Tensor<2>, b: &Tensor<1>) -> Tensor<2> {
    let [_, k] = x.dims();
    let [kw, n] = w.dims();
    if k == kw && b.dims() == [n] {
        let w_flex = w.clone().try_into_primitive::<Flex>().ok();
        let b_flex = b.clone().try_into_primitive::<Flex>().ok();
        if let Some((w, b)) = w_flex.zip(b_flex).filter(|(w, b)| w.dtype() == DType::F32 && b.dtype() == DType::F32) {
            let b = contiguous(&b);
            if let Some(y) = super::custom_op(&x, LinearBackward, |x| (forward(x, &w, &b), w.clone())) {
                return y;
            }
        }
    }
    x.matmul(w.clone()) + b.clone().unsqueeze::<2>()
}

fn forward(x: &FlexTensor, w: &FlexTensor, b: &FlexTensor) -> FlexTensor {
    let (x, w) = (Matrix::of(x), Matrix::of(w));
    let (x, w) = (x.view(), w.view());
    let bias = b.as_slice::<f32>().expect("contiguous f32");
    let mut out = Vec::with_capacity(x.rows * w.cols);
    for _ in 0..x.rows {
        out.extend_from_slice(bias);
    }
    multiply_into(&mut out, true, x, w);
    from_vec(out, [x.rows, w.cols].into())
}

/// `dy·Wᵀ`, the input's gradient.
fn backward(dy: &FlexTensor, w: &FlexTensor) -> FlexTensor {
    let (dy, w) = (Matrix::of(dy), Matrix::of(w));
    let (dy, wt) = (dy.view(), w.view().transposed());
    let mut dx = vec![0.0; dy.rows * wt.cols];
    multiply_into(&mut dx, false, dy, wt);
    from_vec(dx, [dy.rows, wt.cols].into())
}

/// A 2-D tensor held as its storage with non-negative strides (a row-major copy when it had negative ones).
struct Matrix(FlexTensor);

impl Matrix {
    fn of(t: &FlexTensor) -> Matrix {
        Matrix(if t.layout().has_positive_strides() { t.clone() } else { t.to_contiguous() })
    }

    fn view(&self) -> View<'_> {
        let layout = self.0.layout();
        let (shape, strides) = (layout.shape(), layout.strides());
        assert_eq!(shape.num_dims(), 2, "a linear layer multiplies matrices");
        let stride = |s: isize| usize::try_from(s).expect("non-negative strides");
        View {
            data: &self.0.storage::<f32>()[layout.start_offset()..],
            rows: shape[0],
            cols: shape[1],
            row_stride: stride(strides[0]),
            col_stride: stride(strides[1]),
        }
    }
}

/// The backward step keeps the frozen weight (a shared handle).
#[derive(Debug)]
struct LinearBackward;

impl Backward<Flex, 1> for LinearBackward {
    type State = FlexTensor;

    fn backward(self, ops: Ops<FlexTensor, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let w = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |dy| backward(&dy, &w));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_support::{assert_relative, in_pool, values};
    use burn::tensor::{Device, TensorData};

    fn matrix(rows: usize, cols: usize, seed: usize, device: &Device) -> Tensor<2> {
        let v: Vec<f32> = (0..rows * cols).map(|i| (((i * 37 + seed * 11) % 23) as f32 - 11.0) * 0.043).collect();
        Tensor::from_data(TensorData::new(v, [rows, cols]), device)
    }

    #[test]
    fn forward_matches_burn_for_plain_and_transposed_weights() {
        let frozen = Device::flex();
        // Large enough for the threaded product, with a weight stored transposed (as loaded checkpoints are).
        let (m, k, n) = (300, 96, 250);
        let b = Tensor::<1>::from_data(
            TensorData::new((0..n).map(|i| i as f32 * 0.01 - 1.0).collect::<Vec<f32>>(), [n]),
            &frozen,
        );
        for w in [matrix(k, n, 1, &frozen), matrix(n, k, 2, &frozen).transpose()] {
            for device in [Device::flex(), Device::flex().autodiff()] {
                let x = matrix(m, k, 3, &device);
                let ours = values(frozen_linear(x.clone(), &w, &b));
                let burns = values(x.matmul(w.clone()) + b.clone().unsqueeze::<2>());
                assert_relative(&ours, &burns, 1e-5, "forward");
            }
        }
    }

    #[test]
    fn input_gradient_matches_burn_through_a_strided_input() {
        let (frozen, device) = (Device::flex(), Device::flex().autodiff());
        let (m, k, n) = (40, 24, 33);
        let w = matrix(n, k, 4, &frozen).transpose();
        let b = Tensor::<1>::from_data(TensorData::new(vec![0.5f32; n], [n]), &frozen);
        let upstream = matrix(m, n, 5, &device);
        let grad_of = |f: &dyn Fn(Tensor<2>) -> Tensor<2>| {
            let x = matrix(k, m, 6, &device).require_grad();
            let y = f(x.clone().transpose()) * upstream.clone();
            let grads = y.sum().backward();
            values(x.grad(&grads).unwrap())
        };
        let ours = grad_of(&|x| frozen_linear(x, &w, &b));
        let burns = grad_of(&|x| x.matmul(w.clone()) + b.clone().unsqueeze::<2>());
        assert!(ours.iter().any(|g| *g != 0.0));
        assert_relative(&ours, &burns, 1e-5, "input gradient");
    }

    #[test]
    fn bits_do_not_depend_on_the_thread_count() {
        let frozen = Device::flex();
        let (m, k, n) = (520, 200, 450);
        let w = matrix(k, n, 7, &frozen);
        let b = Tensor::<1>::from_data(TensorData::new(vec![0.25f32; n], [n]), &frozen);
        let run = || {
            let device = Device::flex().autodiff();
            let x = matrix(m, k, 8, &device).require_grad();
            let y = frozen_linear(x.clone(), &w, &b);
            let grads = (y.clone() * y.clone()).sum().backward();
            (values(y), values(x.grad(&grads).unwrap()))
        };
        assert_eq!(in_pool(1, run), in_pool(3, run));
    }
}
