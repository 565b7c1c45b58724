//! The trainable part of a model: LoRA factors of the adapted layers and the classification head.
//!
//! Kept apart from the frozen backbone, so a hundred clients share one backbone in memory and each round
//! only these small tensors are created, trained and read back into a [`LoraState`].

use crate::error::ModelError;
use burn::module::{Module, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};
use fedsoft_core::lora::{LoraState, ModuleFactors, ModuleShape, Target};
use std::collections::HashMap;

/// LoRA factors in the paper's layout (`B`: `[d, r]`, `A`: `[r, k]`) and a linear head `[hidden, classes]`.
#[derive(Module, Debug)]
pub struct Adapters {
    pub a: Vec<Param<Tensor<2>>>,
    pub b: Vec<Param<Tensor<2>>>,
    pub head_w: Param<Tensor<2>>,
    pub head_b: Param<Tensor<1>>,
}

/// Where adapters sit: module `i` of the [`LoraState`] adapts `(layer, target)`.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterPlan {
    pub shapes: Vec<ModuleShape>,
    pub slots: HashMap<(usize, Target), usize>,
    /// `alpha / r`.
    pub scale: f32,
}

impl AdapterPlan {
    pub fn slot(&self, layer: usize, target: Target) -> Option<usize> {
        self.slots.get(&(layer, target)).copied()
    }
    pub fn rank(&self) -> usize {
        self.shapes.first().map_or(0, |s| s.r)
    }
}

/// The head's values live in the backend-free core, where the server averages them; here they become
/// trainable tensors.
pub use fedsoft_core::head::Head;

fn tensor2(v: &[f32], rows: usize, cols: usize, device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(v.to_vec(), [rows, cols]), device)
}

/// A trainable parameter whose id is its position in [`Adapters`] (`A_i` = 2i, `B_i` = 2i + 1, then the
/// head's weight and bias) rather than a fresh random id, so optimiser state saved after one round finds the
/// same parameters when the next round builds the adapters anew.
fn param<const D: usize>(position: usize, t: Tensor<D>) -> Param<Tensor<D>> {
    Param::initialized(ParamId::from(position as u64), t.require_grad())
}

/// Moves parameter `id`'s gradient from `more` into `into`, adding it to the one already there.
fn add<const D: usize>(into: &mut GradientsParams, more: &mut GradientsParams, id: ParamId) {
    let Some(g) = more.remove::<D>(id) else { return };
    let sum = match into.remove::<D>(id) {
        Some(acc) => acc + g,
        None => g,
    };
    into.register(id, sum);
}

fn values(t: Tensor<2>) -> Vec<f32> {
    t.into_data().try_into_vec::<f32>().expect("f32 tensor")
}

impl Adapters {
    /// Trainable parameters from a LoRA state and a head.
    pub fn from_state(state: &LoraState, head: &Head, device: &Device) -> Result<Self, ModelError> {
        if head.weight.len() != head.hidden * head.classes || head.bias.len() != head.classes {
            return Err(ModelError::invalid("head", "weight and bias sizes do not match hidden x classes"));
        }
        let mut a = Vec::new();
        let mut b = Vec::new();
        for (i, (s, f)) in state.shapes.iter().zip(&state.modules).enumerate() {
            a.push(param(2 * i, tensor2(&f.a, s.r, s.k, device)));
            b.push(param(2 * i + 1, tensor2(&f.b, s.d, s.r, device)));
        }
        let n = 2 * state.modules.len();
        Ok(Adapters {
            a,
            b,
            head_w: param(n, tensor2(&head.weight, head.hidden, head.classes, device)),
            head_b: param(n + 1, Tensor::from_data(TensorData::new(head.bias.clone(), [head.classes]), device)),
        })
    }

    /// The same values as new leaves of the autodiff graph, under the same parameter ids: a copy whose
    /// gradients can be taken on another thread, independently of any other copy's (no data is copied).
    pub fn fork(&self) -> Adapters {
        fn leaf<const D: usize>(p: &Param<Tensor<D>>) -> Param<Tensor<D>> {
            Param::initialized(p.id, p.val().detach().require_grad())
        }
        Adapters {
            a: self.a.iter().map(leaf).collect(),
            b: self.b.iter().map(leaf).collect(),
            head_w: leaf(&self.head_w),
            head_b: leaf(&self.head_b),
        }
    }

    /// Adds `more` into `into`, parameter by parameter (both from [`GradientsParams::from_grads`] on forks
    /// of these adapters).
    pub fn add_gradients(&self, into: &mut GradientsParams, mut more: GradientsParams) {
        for p in self.a.iter().chain(&self.b).chain([&self.head_w]) {
            add::<2>(into, &mut more, p.id);
        }
        add::<1>(into, &mut more, self.head_b.id);
    }

    /// Reads the factors back into the flat per-module layout.
    pub fn to_state(&self, shapes: &[ModuleShape]) -> Result<LoraState, ModelError> {
        let modules =
            self.a.iter().zip(&self.b).map(|(a, b)| ModuleFactors { b: values(b.val()), a: values(a.val()) }).collect();
        Ok(LoraState::from_parts(shapes.to_vec(), modules)?)
    }

    pub fn head(&self) -> Head {
        let dims = self.head_w.val().dims();
        Head {
            hidden: dims[0],
            classes: dims[1],
            weight: values(self.head_w.val()),
            bias: self.head_b.val().into_data().try_into_vec::<f32>().expect("f32 tensor"),
        }
    }

    /// The orthogonality regulariser of Eq. (7): squared off-diagonal energy of `B^T B` and `A A^T`, summed
    /// over modules, as a differentiable scalar.
    pub fn orthogonality(&self) -> Option<Tensor<1>> {
        let mut total: Option<Tensor<1>> = None;
        for (a, b) in self.a.iter().zip(&self.b) {
            let (a, b) = (a.val(), b.val());
            let r = a.dims()[0];
            let off = Tensor::<2>::ones([r, r], &a.device()) - Tensor::<2>::eye(r, &a.device());
            let gb = b.clone().transpose().matmul(b);
            let ga = a.clone().matmul(a.transpose());
            let term = (gb * off.clone()).square().sum() + (ga * off).square().sum();
            total = Some(match total {
                Some(t) => t + term,
                None => term,
            });
        }
        total
    }
}
