//! The round's norm bounds on accepted uploads (`[robust]`, `fedsoft_core::robust`): each upload's parts are
//! its LoRA modules' changes and its head's change; an upload over a limit is dropped with the reason, or has
//! the offending parts scaled down to the limit.

use crate::config::RobustConfig;
use crate::engine::Arrival;
use fedsoft_core::feedback::FeedbackMode;
use fedsoft_core::lora::LoraState;
use fedsoft_core::robust::{BoundAction, Excess, l2};
use fedsoft_model::adapters::Head;

/// The norm of the change an upload asks for in module `m`: of its values (delta mode) or of their distance
/// from the global model at the same entries (model mode).
fn module_change_norm(a: &Arrival, m: usize, global: &LoraState, mode: FeedbackMode) -> f64 {
    let sm = &a.update.modules[m];
    match mode {
        FeedbackMode::Delta => l2(sm.values.iter().copied()),
        FeedbackMode::Model => {
            l2(sm.indices.iter().zip(&sm.values).map(|(&i, &v)| v - global.modules[m].get(i as usize)))
        }
    }
}

fn head_change_norm(h: &Head, global: &Head) -> f64 {
    l2(h.weight.iter().zip(&global.weight).chain(h.bias.iter().zip(&global.bias)).map(|(x, g)| x - g))
}

/// Applies the configured bounds to the round's accepted uploads: the uploads that stay (clipped where the
/// action says so) and, by schedule slot, the reasons of those dropped. Without a bound, nothing changes.
pub(crate) fn bound_arrivals(
    arrived: Vec<Arrival>,
    global: &LoraState,
    head: &Head,
    mode: FeedbackMode,
    cfg: &RobustConfig,
) -> (Vec<Arrival>, Vec<(usize, String)>) {
    let bound = cfg.bound();
    if bound.is_off() || arrived.is_empty() {
        return (arrived, Vec::new());
    }
    let modules = global.modules.len();
    let norms: Vec<Vec<f64>> = arrived
        .iter()
        .map(|a| {
            let mut n: Vec<f64> = (0..modules).map(|m| module_change_norm(a, m, global, mode)).collect();
            n.push(head_change_norm(&a.upload.head, head));
            n
        })
        .collect();
    let part_name = |p: usize| {
        if p < modules { global.shapes[p].name.clone() } else { "the head".to_string() }
    };
    let mut kept = Vec::with_capacity(arrived.len());
    let mut dropped = Vec::new();
    for (mut a, excess) in arrived.into_iter().zip(bound.excesses(&norms)) {
        let Some(first) = excess.first() else {
            kept.push(a);
            continue;
        };
        match cfg.action {
            BoundAction::Reject => dropped.push((
                a.slot,
                format!(
                    "norm bound: {} changes by {:.4e}, over its limit {:.4e} ([robust])",
                    part_name(first.part),
                    first.norm,
                    first.limit
                ),
            )),
            BoundAction::Clip => {
                for e in &excess {
                    clip(&mut a, e, global, head, mode);
                }
                kept.push(a);
            }
        }
    }
    (kept, dropped)
}

/// Scales one part's change down to its limit.
fn clip(a: &mut Arrival, e: &Excess, global: &LoraState, head: &Head, mode: FeedbackMode) {
    let s = e.scale();
    let scaled = |x: f32, g: f32| (g as f64 + (x as f64 - g as f64) * s) as f32;
    if e.part < global.modules.len() {
        let sm = &mut a.update.modules[e.part];
        for (&i, v) in sm.indices.iter().zip(sm.values.iter_mut()) {
            *v = match mode {
                FeedbackMode::Delta => (*v as f64 * s) as f32,
                FeedbackMode::Model => scaled(*v, global.modules[e.part].get(i as usize)),
            };
        }
    } else {
        let h = &mut a.upload.head;
        for (x, g) in h.weight.iter_mut().zip(&head.weight).chain(h.bias.iter_mut().zip(&head.bias)) {
            *x = scaled(*x, *g);
        }
    }
}
