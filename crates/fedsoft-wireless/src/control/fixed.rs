//! A constant ratio: the baselines' setting, with the uplink still simulated and logged.

use super::{RatioController, RoundContext};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FixedRatio(pub f64);

impl RatioController for FixedRatio {
    fn choose(&self, _: &RoundContext) -> f64 {
        self.0
    }
    fn observe(&mut self, _: &RoundContext, _: f64) {}
    fn backlog(&self) -> f64 {
        0.0
    }
    fn state(&self) -> f64 {
        0.0
    }
    fn restore(&mut self, _: f64) {}
}
