//! A Kayenta-style judge (NetflixACAJudge's rule): every tick, each metric's 10-s samples since the start,
//! canary against primary, by a two-sided Mann-Whitney confidence interval on the shift at 98% with the
//! Hodges-Lehmann estimate; "High" when the interval's lower end is above a quarter of |HL|. A High metric
//! rolls back; otherwise the schedule goes on (Kayenta never holds). Samples without requests are removed
//! (nanStrategy "remove").
//!
//! The interval is the distribution-free one on the pairwise differences (the order statistics that the
//! normal approximation of the Mann-Whitney statistic picks), which is what Kayenta's root-finding on that
//! approximation converges to.

use statrs::distribution::{ContinuousCDF, Normal};

use crate::judges::{Decision, Judge};
use crate::world::{Observation, Variant};

const CONFIDENCE: f64 = 0.98;
const TOLERANCE: f64 = 0.25;

#[derive(Default)]
pub struct Kayenta {
    errors: (Vec<f64>, Vec<f64>),
    latency: (Vec<f64>, Vec<f64>),
}

fn error_rate(v: &Variant) -> Option<f64> {
    (v.requests > 0).then(|| v.errors as f64 / v.requests as f64)
}

fn mean_latency(v: &Variant) -> Option<f64> {
    (v.requests > 0).then(|| v.latency_sum / v.requests as f64)
}

/// True when the canary's values are shifted up beyond Kayenta's relative-precision rule.
pub fn high(canary: &[f64], primary: &[f64]) -> bool {
    let (m, n) = (canary.len(), primary.len());
    if m == 0 || n == 0 {
        return false;
    }
    let mut differences: Vec<f64> = canary
        .iter()
        .flat_map(|c| primary.iter().map(move |p| c - p))
        .collect();
    differences.sort_by(f64::total_cmp);
    let total = differences.len();
    let hodges_lehmann = if total % 2 == 1 {
        differences[total / 2]
    } else {
        0.5 * (differences[total / 2 - 1] + differences[total / 2])
    };
    let z = Normal::standard().inverse_cdf(1.0 - (1.0 - CONFIDENCE) / 2.0);
    let (m, n) = (m as f64, n as f64);
    let k = (m * n / 2.0 - z * (m * n * (m + n + 1.0) / 12.0).sqrt()).floor();
    if k < 0.0 {
        // Too few samples for any interval at 98%: the whole line, never High.
        return false;
    }
    let lower = differences[k as usize];
    lower > TOLERANCE * hodges_lehmann.abs()
}

impl Judge for Kayenta {
    fn tick(&mut self, observation: Option<&Observation>, _at_max: bool) -> Decision {
        if let Some(o) = observation {
            for (canary, primary) in &o.subwindows {
                if let (Some(c), Some(p)) = (error_rate(canary), error_rate(primary)) {
                    self.errors.0.push(c);
                    self.errors.1.push(p);
                }
                if let (Some(c), Some(p)) = (mean_latency(canary), mean_latency(primary)) {
                    self.latency.0.push(c);
                    self.latency.1.push(p);
                }
            }
        }
        if high(&self.errors.0, &self.errors.1) || high(&self.latency.0, &self.latency.1) {
            Decision::RollBack
        } else {
            Decision::Advance
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kayentas_known_miss_passes_more_variance() {
        // kayenta#780: canary [100 x7, 1 x3] against baseline [1 x10] passes: HL 99, but the interval's
        // lower end is far below a quarter of it.
        let canary: Vec<f64> = [vec![100.0; 7], vec![1.0; 3]].concat();
        let primary = vec![1.0; 10];
        assert!(!high(&canary, &primary));
        // A clean shift is High.
        let shifted: Vec<f64> = (0..20).map(|i| 10.0 + i as f64 * 0.1).collect();
        let base: Vec<f64> = (0..20).map(|i| 5.0 + i as f64 * 0.1).collect();
        assert!(high(&shifted, &base));
    }
}
