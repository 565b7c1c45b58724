//! The round's norm bounds on accepted uploads (`[robust]`, `fedsoft_core::robust`): each upload's parts are
//! its LoRA modules' changes and its head's change; an upload over a limit is dropped with the reason, or has
//! the offending parts scaled down to the limit.

use crate::config::RobustConfig;
use crate::server::Arrival;
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

/// The round's uploads after the `[robust]` bounds.
pub(crate) struct Bounded {
    /// Kept uploads, clipped where the action says so (each clip noted on the upload).
    pub kept: Vec<Arrival>,
    /// Refused uploads by schedule slot, with the reason.
    pub dropped: Vec<(usize, String)>,
    /// The kept uploads' part norms (after clipping): the next round's reference pool. Empty without a bound.
    pub accepted_norms: Vec<Vec<f64>>,
}

/// Applies the configured bounds to the round's accepted uploads, their limits drawn from this round's norms
/// pooled with `history` (the norms accepted in the previous round). Without a bound, nothing changes.
pub(crate) fn bound_arrivals(
    arrived: Vec<Arrival>,
    global: &LoraState,
    head: &Head,
    mode: FeedbackMode,
    cfg: &RobustConfig,
    history: &[Vec<f64>],
) -> Bounded {
    let bound = cfg.bound();
    if bound.is_off() || arrived.is_empty() {
        return Bounded { kept: arrived, dropped: Vec::new(), accepted_norms: Vec::new() };
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
    // A history of another layout (a run resumed with other modules cannot happen, but a damaged one could)
    // is not a reference.
    let history: Vec<Vec<f64>> = history.iter().filter(|h| h.len() == modules + 1).cloned().collect();
    let part_name = |p: usize| {
        if p < modules { global.shapes[p].name.clone() } else { "the head".to_string() }
    };
    let describe =
        |e: &Excess| format!("{} changes by {:.4e}, over its limit {:.4e}", part_name(e.part), e.norm, e.limit);
    let mut out = Bounded { kept: Vec::with_capacity(arrived.len()), dropped: Vec::new(), accepted_norms: Vec::new() };
    for ((mut a, excess), mut n) in arrived.into_iter().zip(bound.excesses(&norms, &history)).zip(norms) {
        let Some(first) = excess.first() else {
            out.accepted_norms.push(n);
            out.kept.push(a);
            continue;
        };
        match cfg.action {
            BoundAction::Reject => out.dropped.push((a.slot, format!("norm bound: {} ([robust])", describe(first)))),
            BoundAction::Clip => {
                for e in &excess {
                    clip(&mut a, e, global, head, mode);
                    n[e.part] = e.limit;
                }
                let parts: Vec<String> = excess.iter().map(describe).collect();
                a.note = Some(format!("clipped by the norm bound: {} ([robust])", parts.join("; ")));
                out.accepted_norms.push(n);
                out.kept.push(a);
            }
        }
    }
    out
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
