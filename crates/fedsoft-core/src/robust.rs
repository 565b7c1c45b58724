//! Server-side norm bounds on uploads: how far one client may move each part of the model in a round.
//!
//! A single authenticated client can otherwise send finite but huge values within its entry budget and
//! wreck the global model for everyone. Each upload is cut into parts (the LoRA modules, then the head); a
//! part's norm is the l2 norm of the change it asks for. A part's limit is the smaller of an absolute bound
//! and a multiple of a reference norm of that part: the median over this round's uploads pooled with those
//! accepted in the previous round (a median is unmoved by a minority of attackers, and the pool keeps a round
//! with only one or two uploads from setting its own limit). With fewer than [`MIN_POOL`] norms in the pool
//! (a first round with one or two uploads) the reference is the smallest of them instead, so one honest
//! upload still bounds an attacker; a lone upload in the first round has nothing to be compared with, and
//! only `max_norm` bounds it.
//! An upload over a limit is rejected whole or has the offending parts scaled down to the limit. With no
//! bound configured nothing is looked at, so honest runs are the paper's algorithm bit for bit.

use crate::error::CoreError;
use serde::{Deserialize, Serialize};

/// What happens to an upload with a part over its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BoundAction {
    /// Dropped from the round, with the reason logged.
    #[default]
    Reject,
    /// Kept, each offending part scaled so that its norm equals the limit.
    Clip,
}

/// The limits on a part's norm; both absent means no bound.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct NormBound {
    /// Absolute limit on every part's norm.
    pub max_norm: Option<f64>,
    /// Limit as a multiple (>= 1) of the round's median norm of the part.
    pub median_factor: Option<f64>,
}

/// A part of one upload over its limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Excess {
    pub part: usize,
    pub norm: f64,
    pub limit: f64,
}

impl Excess {
    /// The factor that brings the part down to its limit.
    pub fn scale(&self) -> f64 {
        self.limit / self.norm
    }
}

/// The l2 norm, accumulated in f64 (finite for any finite f32 values). Takes any iterator, so a change can be
/// measured where it lies without copying it out first.
pub fn l2(values: impl IntoIterator<Item = f32>) -> f64 {
    values.into_iter().map(|v| (v as f64) * (v as f64)).sum::<f64>().sqrt()
}

/// Fewest norms a median reference is taken over.
pub const MIN_POOL: usize = 3;

/// The reference norm of one part: the median of the pool, or its minimum when the pool is too small for a
/// median to resist one attacker.
fn reference(pool: Vec<f64>) -> f64 {
    if pool.len() >= MIN_POOL { median(pool) } else { pool.into_iter().fold(f64::INFINITY, f64::min) }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { 0.5 * (v[n / 2 - 1] + v[n / 2]) }
}

impl NormBound {
    pub fn is_off(&self) -> bool {
        self.max_norm.is_none() && self.median_factor.is_none()
    }

    pub fn validate(&self) -> Result<(), CoreError> {
        if let Some(m) = self.max_norm.filter(|m| !(m.is_finite() && *m > 0.0)) {
            return Err(CoreError::invalid("robust.max_norm", format!("must be a positive number, got {m}")));
        }
        if let Some(f) = self.median_factor.filter(|f| !(f.is_finite() && *f >= 1.0)) {
            return Err(CoreError::invalid("robust.median_factor", format!("must be at least 1, got {f}")));
        }
        Ok(())
    }

    /// Each part's limit from every upload's part norms (`norms[upload][part]`, all uploads with the same
    /// number of parts) and the norms accepted in the previous round (`history`, same layout, possibly empty);
    /// `f64::INFINITY` where no bound applies.
    pub fn limits(&self, norms: &[Vec<f64>], history: &[Vec<f64>]) -> Vec<f64> {
        let parts = norms.first().map_or(0, Vec::len);
        (0..parts)
            .map(|p| {
                let absolute = self.max_norm.unwrap_or(f64::INFINITY);
                let pool: Vec<f64> = norms.iter().chain(history).filter_map(|n| n.get(p).copied()).collect();
                let relative = match self.median_factor {
                    Some(f) if !pool.is_empty() => f * reference(pool),
                    _ => f64::INFINITY,
                };
                absolute.min(relative)
            })
            .collect()
    }

    /// For every upload, the parts over their limits (empty: within bounds).
    pub fn excesses(&self, norms: &[Vec<f64>], history: &[Vec<f64>]) -> Vec<Vec<Excess>> {
        let limits = self.limits(norms, history);
        norms
            .iter()
            .map(|n| {
                n.iter()
                    .zip(&limits)
                    .enumerate()
                    .filter(|(_, (norm, limit))| norm > limit)
                    .map(|(part, (&norm, &limit))| Excess { part, norm, limit })
                    .collect()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_attacker_does_not_move_the_median_limit() {
        let honest: Vec<Vec<f64>> = (0..9).map(|i| vec![1.0 + 0.1 * i as f64, 0.5]).collect();
        let mut all = honest.clone();
        all.push(vec![3e38, 1e30]);
        let b = NormBound { max_norm: None, median_factor: Some(5.0) };
        let ex = b.excesses(&all, &[]);
        assert!(ex[..9].iter().all(Vec::is_empty));
        assert_eq!(ex[9].len(), 2);
        assert_eq!(ex[9][0].limit, 5.0 * 1.45);
        assert!((ex[9][0].scale() * 3e38 - ex[9][0].limit).abs() < 1e-9);
        let abs = NormBound { max_norm: Some(0.6), median_factor: Some(5.0) };
        assert_eq!(abs.limits(&all, &[]), vec![0.6, 0.6]);
        assert!(NormBound::default().is_off() && NormBound::default().excesses(&all, &[]).iter().all(Vec::is_empty));
        assert!(NormBound { median_factor: Some(0.5), ..Default::default() }.validate().is_err());
        assert!(NormBound { max_norm: Some(f64::NAN), ..Default::default() }.validate().is_err());
        assert_eq!(l2([3.0, 4.0]), 5.0);
        assert!(l2([f32::MAX, f32::MAX]).is_finite());
    }

    #[test]
    fn one_or_two_uploads_cannot_set_their_own_limit() {
        let b = NormBound { max_norm: None, median_factor: Some(5.0) };
        let honest = vec![1.0, 0.5];
        let attacker = vec![1e3, 0.5];
        // Two uploads and no history: the smaller sets the reference, so the attacker is over it.
        let ex = b.excesses(&[honest.clone(), attacker.clone()], &[]);
        assert!(ex[0].is_empty());
        assert_eq!(ex[1], vec![Excess { part: 0, norm: 1e3, limit: 5.0 }]);
        // The attacker alone, after an honest round: the previous round's accepted norms are the reference.
        let history: Vec<Vec<f64>> = (0..8).map(|i| vec![0.9 + 0.05 * i as f64, 0.5]).collect();
        let ex = b.excesses(std::slice::from_ref(&attacker), &history);
        assert_eq!(ex[0].len(), 1);
        // The pool: the eight accepted norms 0.90 ... 1.25 and the attacker's; its median is 1.10.
        assert!((ex[0][0].limit - 5.0 * 1.1).abs() < 1e-12, "{:?}", ex[0][0]);
        // An honest upload alone after the same history passes.
        assert!(b.excesses(&[honest], &history)[0].is_empty());
        // A lone upload with no history: only an absolute bound can hold it.
        assert!(b.excesses(std::slice::from_ref(&attacker), &[])[0].is_empty());
        let abs = NormBound { max_norm: Some(10.0), median_factor: Some(5.0) };
        assert_eq!(abs.excesses(&[attacker], &[])[0].len(), 1);
    }
}
