//! The floating-point operations of a local training step's matrix products, counted from the shapes: the
//! yardstick for how close training runs to the CPU's FMA peak (`benches/round.rs` reports the fraction).
//!
//! Counted, per sample (a multiply-add is 2 operations): the patch embedding (images); in every block the
//! four attention projections, the two MLP layers and the two attention products (scores and weighted values)
//! — in the last block, with `[CLS]` pooling, only what forms the first token's state; the LoRA products; the
//! head. Backward, from the top block down to the lowest adapted one: the input gradient of every frozen
//! product (as many operations as its forward), both products of attention twice over (each has two input
//! gradients), and the LoRA factors' input and weight gradients; the lowest adapted block's own input
//! gradient is not needed, so its query, key and value input gradients are left out. Element-wise work
//! (LayerNorm, GELU, softmax, AdamW) is not counted: it is not done by the product kernels.

use crate::spec::EncoderSpec;

/// One adapted linear layer: its block, output width `d` and input width `k`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdaptedLinear {
    pub block: usize,
    pub d: usize,
    pub k: usize,
}

/// The shapes a training step's products depend on.
#[derive(Debug, Clone)]
pub struct StepShape<'a> {
    pub spec: &'a EncoderSpec,
    /// Tokens per sample (images: 1 + patches).
    pub tokens: usize,
    /// Input pixels per patch times channels for images (`channels * patch^2`), 0 for text.
    pub patch_inputs: usize,
    pub adapted: &'a [AdaptedLinear],
    pub rank: usize,
    pub classes: usize,
    /// `[CLS]` pooling: the last block forms only the first token's state.
    pub first_token_only: bool,
}

/// Floating-point operations of the products of one sample's training step (forward and backward).
pub fn training_flops_per_sample(s: &StepShape<'_>) -> f64 {
    let (h, inner, t) = (s.spec.hidden as f64, s.spec.intermediate as f64, s.tokens as f64);
    let layers = s.spec.layers;
    let lowest = s.adapted.iter().map(|a| a.block).min();
    let mut macs = (t - 1.0).max(0.0) * s.patch_inputs as f64 * h;
    for block in 0..layers {
        // Rows that go through the block's query, output and MLP products, and through attention as queries.
        let rows = if block + 1 == layers && s.first_token_only { 1.0 } else { t };
        let qkv = (rows + 2.0 * t) * h * h;
        let attention = 2.0 * rows * t * h;
        let rest = rows * h * h + 2.0 * rows * h * inner;
        macs += qkv + attention + rest;
        match lowest {
            Some(lo) if block > lo => macs += qkv + 2.0 * attention + rest,
            Some(lo) if block == lo => macs += 2.0 * attention + rest,
            _ => {}
        }
    }
    for a in s.adapted {
        let rows = if a.block + 1 == layers && s.first_token_only { 1.0 } else { t };
        // Forward x·Aᵀ·Bᵀ; backward the input gradient through both factors and both weight gradients.
        macs += 3.0 * rows * (a.d + a.k) as f64 * s.rank as f64;
    }
    macs += 3.0 * h * s.classes as f64;
    2.0 * macs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Family;

    fn spec(layers: usize) -> EncoderSpec {
        EncoderSpec {
            family: Family::Vit,
            hidden: 4,
            layers,
            heads: 1,
            intermediate: 8,
            eps: 1e-6,
            vocab: 0,
            max_positions: 0,
            type_vocab: 0,
            patch: 2,
            pos_grid: 2,
            channels: 3,
        }
    }

    /// One block, one adapter, counted by hand: 3 tokens (CLS + 2 patches of 12 inputs), hidden 4, MLP 8.
    #[test]
    fn a_one_block_step_matches_a_count_by_hand() {
        let spec = spec(1);
        let adapted = [AdaptedLinear { block: 0, d: 4, k: 4 }];
        let shape = StepShape {
            spec: &spec,
            tokens: 3,
            patch_inputs: 12,
            adapted: &adapted,
            rank: 2,
            classes: 5,
            first_token_only: false,
        };
        let embed = 2.0 * 12.0 * 4.0;
        let forward = 3.0 * 3.0 * 16.0 + 2.0 * 9.0 * 4.0 + 3.0 * 16.0 + 2.0 * 3.0 * 4.0 * 8.0;
        // Backward of the lowest adapted block: no input gradient of q, k, v; attention twice; o and MLP.
        let backward = 2.0 * (2.0 * 9.0 * 4.0) + 3.0 * 16.0 + 2.0 * 3.0 * 4.0 * 8.0;
        let lora = 3.0 * 3.0 * 8.0 * 2.0;
        let head = 3.0 * 4.0 * 5.0;
        assert_eq!(training_flops_per_sample(&shape), 2.0 * (embed + forward + backward + lora + head));
    }

    /// Blocks below the lowest adapter cost only their forward pass, and `[CLS]` pooling saves work in the
    /// last block alone.
    #[test]
    fn backward_stops_at_the_lowest_adapter_and_pooling_trims_the_last_block() {
        let spec = spec(4);
        let count = |blocks: &[usize], first_token_only| {
            let adapted: Vec<AdaptedLinear> = blocks.iter().map(|&b| AdaptedLinear { block: b, d: 4, k: 4 }).collect();
            training_flops_per_sample(&StepShape {
                spec: &spec,
                tokens: 5,
                patch_inputs: 12,
                adapted: &adapted,
                rank: 2,
                classes: 5,
                first_token_only,
            })
        };
        assert!(count(&[0], false) > count(&[2], false));
        assert!(count(&[2], true) < count(&[2], false));
        // Moving the only adapter from block 2 down to block 1 adds block 1's backward short of its q, k, v
        // input gradients (attention twice, output and MLP) and block 2's q, k, v input gradients:
        // 2 x (2 x 200 + 400 + 240) for 5 tokens, hidden 4, MLP 8.
        assert_eq!(count(&[1], false) - count(&[2], false), 2.0 * (2.0 * 200.0 + 400.0 + 240.0));
    }
}
