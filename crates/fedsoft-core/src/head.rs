//! The classification head as plain values. It travels with every upload and is averaged by the server like
//! the LoRA factors, so it lives here, apart from the tensor backend: the server's half of a round (and the
//! Python package) handle it without the model crate.

use serde::{Deserialize, Serialize};

/// The head's values: `[hidden x classes]` row-major weight and `[classes]` bias.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Head {
    pub hidden: usize,
    pub classes: usize,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

impl Head {
    /// A fresh head: weights uniform in `±1/sqrt(hidden)` drawn from the run seed's initialisation stream,
    /// zero bias.
    pub fn init(hidden: usize, classes: usize, seed: u64) -> Self {
        use rand::RngExt;
        let mut rng = crate::rng::stream(seed, crate::rng::Purpose::Init, &[u64::MAX - 1]);
        let bound = 1.0 / (hidden as f32).sqrt();
        Head {
            hidden,
            classes,
            weight: (0..hidden * classes).map(|_| rng.random_range(-bound..bound)).collect(),
            bias: vec![0.0; classes],
        }
    }

    /// Dense values with no row structure of their own (a front door's extra arrays beside the factors, such
    /// as a PEFT classifier's weight and bias end to end), held as the bias of a head without weight rows: the
    /// server averages them element-wise like any head, and the average does not depend on the layout.
    pub fn flat(values: Vec<f32>) -> Self {
        Head { hidden: 0, classes: values.len(), weight: Vec::new(), bias: values }
    }

    pub fn numel(&self) -> usize {
        self.weight.len() + self.bias.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_head_is_fixed_by_the_seed_bounded_and_unbiased() {
        let a = Head::init(384, 10, 7);
        assert_eq!(a, Head::init(384, 10, 7));
        assert_ne!(a.weight, Head::init(384, 10, 8).weight);
        assert_eq!((a.weight.len(), a.bias.len(), a.numel()), (3840, 10, 3850));
        let bound = 1.0 / 384f32.sqrt();
        assert!(a.weight.iter().all(|w| w.abs() < bound) && a.bias.iter().all(|&b| b == 0.0));
        // Not all on one side: the draws span the interval.
        assert!(a.weight.iter().any(|&w| w > bound / 2.0) && a.weight.iter().any(|&w| w < -bound / 2.0));
    }
}
