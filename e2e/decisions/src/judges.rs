//! The judges side by side: what each does with one tick, on Flagger's schedule (weights 10 to 50 by 10,
//! promotion at 50, a 60-tick deadline).

use crate::statistics::sequential::{LatencyEvidence, LatencyTick, RateEvidence, Settings};
use crate::statistics::{Counts, Tick, Verdict};
use crate::world::{EDGES, Observation, Variant};

/// What a judge answers after a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Take the next step (or promote, at the last).
    Advance,
    /// Stay at this weight.
    Hold,
    RollBack,
}

pub trait Judge {
    /// One tick; `observation` is None when Prometheus did not answer; `at_max` when the weight is the
    /// last step's.
    fn tick(&mut self, observation: Option<&Observation>, at_max: bool) -> Decision;
}

/// Flagger's fixed thresholds on the canary alone: success rate (%) at least `min_success`, p99 (from the
/// tick's buckets, interpolated as histogram_quantile does) at most `max_p99` seconds or `p99_over_primary`
/// times the primary's; a failed check (no value included) holds; `threshold` failed checks roll back.
pub struct Flagger {
    pub min_success: f64,
    pub max_p99: Option<f64>,
    pub p99_over_primary: Option<f64>,
    pub threshold: u32,
    pub failed: u32,
}

/// histogram_quantile(q) over cumulative bucket counts; NaN without requests.
pub fn histogram_quantile(q: f64, variant: &Variant) -> f64 {
    let total = variant.requests as f64;
    if variant.requests == 0 {
        return f64::NAN;
    }
    let rank = q * total;
    let mut below = 0.0;
    let mut lower_edge = 0.0;
    for (k, edge) in EDGES.iter().enumerate() {
        let count = variant.at_or_below[k] as f64;
        if count >= rank {
            let in_bucket = count - below;
            if in_bucket <= 0.0 {
                return *edge;
            }
            return lower_edge + (edge - lower_edge) * (rank - below) / in_bucket;
        }
        below = count;
        lower_edge = *edge;
    }
    // In the +Inf bucket: the highest finite edge, as Prometheus answers.
    EDGES[EDGES.len() - 1]
}

impl Judge for Flagger {
    fn tick(&mut self, observation: Option<&Observation>, _at_max: bool) -> Decision {
        let passed = observation.is_some_and(|o| {
            let canary = &o.canary;
            if canary.requests == 0 {
                return false;
            }
            let success = 100.0 * (1.0 - canary.errors as f64 / canary.requests as f64);
            let p99 = histogram_quantile(0.99, canary);
            let mut ok = success >= self.min_success;
            if let Some(max) = self.max_p99 {
                ok &= p99 <= max;
            }
            if let Some(ratio) = self.p99_over_primary {
                ok &= p99 <= ratio * histogram_quantile(0.99, &o.primary);
            }
            ok
        });
        if passed {
            Decision::Advance
        } else {
            self.failed += 1;
            if self.failed >= self.threshold {
                Decision::RollBack
            } else {
                Decision::Hold
            }
        }
    }
}

/// Ours: errors and latency, each judged canary against primary by the sequential judge (K = 2). Any Fail
/// rolls back; below the last step it advances; at the last it promotes when both Pass, else holds.
pub struct Sequential {
    errors: RateEvidence,
    latency: LatencyEvidence,
    error_settings: Settings,
    latency_settings: Settings,
}

impl Sequential {
    /// Expected rates from the primary's ten minutes before the canary.
    pub fn new(before: &Variant, before_windows: &[Variant]) -> Self {
        let n = before.requests.max(1) as f64;
        let expected_latency = (0..EDGES.len())
            .map(|k| before.slower_than(k) as f64 / n)
            .collect();
        let mut errors = RateEvidence::before(counts(before.requests, before.errors));
        let windows: Vec<Counts> = before_windows
            .iter()
            .map(|w| counts(w.requests, w.errors))
            .collect();
        errors.observe_windows(&windows);
        Sequential {
            errors,
            latency: LatencyEvidence::new(EDGES.to_vec(), expected_latency),
            error_settings: Settings::errors(2),
            latency_settings: Settings::latency(2),
        }
    }
}

fn counts(requests: u64, bad: u64) -> Counts {
    Counts { requests, bad }
}

impl Judge for Sequential {
    fn tick(&mut self, observation: Option<&Observation>, at_max: bool) -> Decision {
        // No answer, or no canary traffic: the tick counts for nothing, and the weight holds.
        let Some(o) = observation.filter(|o| o.canary.requests > 0) else {
            return Decision::Hold;
        };
        let errors = self.errors.update(
            &Tick {
                canary: counts(o.canary.requests, o.canary.errors),
                primary: counts(o.primary.requests, o.primary.errors),
            },
            &self.error_settings,
        );
        let slower = (0..EDGES.len())
            .map(|k| Tick {
                canary: counts(o.canary.requests, o.canary.slower_than(k)),
                primary: counts(o.primary.requests, o.primary.slower_than(k)),
            })
            .collect();
        let latency = self
            .latency
            .update(&LatencyTick { slower }, &self.latency_settings);
        let windows: Vec<Counts> = o
            .subwindows
            .iter()
            .map(|(_, p)| counts(p.requests, p.errors))
            .collect();
        self.errors.observe_windows(&windows);
        match (errors, latency) {
            (Verdict::Fail, _) | (_, Verdict::Fail) => Decision::RollBack,
            (Verdict::Pass, Verdict::Pass) => Decision::Advance,
            _ if !at_max => Decision::Advance,
            _ => Decision::Hold,
        }
    }
}
