//! The simulated canary, as the reference models it: 10-s sub-windows, Poisson requests split by the
//! canary's weight, binomial errors, latencies from a log-normal (median 50 ms, σ 0.5) counted into
//! Prometheus' default buckets, the canary's latencies scaled by a factor; 60-s ticks.

use rand::rngs::StdRng;
use rand_distr::{Beta, Binomial, Distribution, Normal, Poisson};

/// Prometheus' default histogram buckets, in seconds (+Inf is the total).
pub const EDGES: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
pub const SUBWINDOWS: usize = 6;
const MEDIAN: f64 = 0.050;
const SIGMA: f64 = 0.5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Calm,
    /// Both variants' errors raised by 10 points in ticks 5 to 7.
    SharedIncident,
    /// Each variant's error rate drawn per sub-window from a Beta with intra-class correlation 0.01.
    Overdispersion,
    /// The canary 1.5 times slower during its first minute.
    WarmUp,
    /// The canary gets no traffic at all (a broken route).
    NoCanaryTraffic,
    /// Prometheus answers nothing for ticks 2 to 4.
    PrometheusGap,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Calm => "calm",
            Scenario::SharedIncident => "shared-incident",
            Scenario::Overdispersion => "overdispersion",
            Scenario::WarmUp => "warm-up",
            Scenario::NoCanaryTraffic => "no-canary-traffic",
            Scenario::PrometheusGap => "prometheus-gap",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cell {
    pub scenario: Scenario,
    pub rps: f64,
    /// The primary's error rate.
    pub baseline: f64,
    /// The canary's error rate minus the primary's.
    pub error_effect: f64,
    /// The canary's latencies over the primary's.
    pub latency_factor: f64,
}

impl Cell {
    /// True when the canary is not worse: a rollback is a false one.
    pub fn is_good(&self) -> bool {
        self.error_effect <= 0.0 && self.latency_factor <= 1.0
    }
}

/// One variant's counts over a window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Variant {
    pub requests: u64,
    pub errors: u64,
    /// Requests at or below each edge (cumulative, as Prometheus' `le` buckets).
    pub at_or_below: [u64; EDGES.len()],
    /// The sum of the latencies in seconds (the histogram's `_sum`).
    pub latency_sum: f64,
}

impl Variant {
    fn add(&mut self, other: &Variant) {
        self.requests += other.requests;
        self.errors += other.errors;
        for (mine, theirs) in self.at_or_below.iter_mut().zip(other.at_or_below) {
            *mine += theirs;
        }
        self.latency_sum += other.latency_sum;
    }

    /// Requests slower than edge k.
    pub fn slower_than(&self, k: usize) -> u64 {
        self.requests - self.at_or_below[k]
    }
}

/// One 60-s tick: the sub-windows (what a judge sampling every 10 s sees) and their totals; `None` when
/// Prometheus did not answer.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    pub canary: Variant,
    pub primary: Variant,
    pub subwindows: Vec<(Variant, Variant)>,
}

pub struct World {
    pub cell: Cell,
    /// P(latency > edge) for the primary and the canary (before warm-up), per edge.
    primary_exceed: [f64; EDGES.len()],
    canary_exceed: [f64; EDGES.len()],
    warm_exceed: [f64; EDGES.len()],
}

fn exceedances(scale: f64) -> [f64; EDGES.len()] {
    let normal = statrs::distribution::Normal::standard();
    use statrs::distribution::ContinuousCDF;
    EDGES.map(|edge| 1.0 - normal.cdf(((edge / (MEDIAN * scale)).ln()) / SIGMA))
}

impl World {
    pub fn new(cell: Cell) -> Self {
        World {
            cell,
            primary_exceed: exceedances(1.0),
            canary_exceed: exceedances(cell.latency_factor),
            warm_exceed: exceedances(cell.latency_factor * 1.5),
        }
    }

    /// Ten minutes of the primary alone at full traffic, before the canary: what the judge's expected rates
    /// come from.
    pub fn before(&self, rng: &mut StdRng) -> (Variant, Vec<Variant>) {
        let dispersed = self.cell.scenario == Scenario::Overdispersion;
        let windows: Vec<Variant> = (0..60)
            .map(|_| {
                self.variant(
                    rng,
                    1.0,
                    self.cell.baseline,
                    &self.primary_exceed,
                    1.0,
                    dispersed,
                )
            })
            .collect();
        let mut total = Variant::default();
        for window in &windows {
            total.add(window);
        }
        (total, windows)
    }

    /// Tick `t` (from 0) at canary weight `weight` (percent); None when Prometheus did not answer.
    pub fn tick(&self, rng: &mut StdRng, t: usize, weight: u32) -> Option<Observation> {
        let cell = &self.cell;
        let share = if cell.scenario == Scenario::NoCanaryTraffic {
            0.0
        } else {
            f64::from(weight) / 100.0
        };
        let shared = if cell.scenario == Scenario::SharedIncident && (4..7).contains(&t) {
            0.10
        } else {
            0.0
        };
        let dispersed = cell.scenario == Scenario::Overdispersion;
        let canary_exceed = if cell.scenario == Scenario::WarmUp && t == 0 {
            &self.warm_exceed
        } else {
            &self.canary_exceed
        };
        let canary_scale = if cell.scenario == Scenario::WarmUp && t == 0 {
            cell.latency_factor * 1.5
        } else {
            cell.latency_factor
        };
        let mut observation = Observation::default();
        for _ in 0..SUBWINDOWS {
            let canary = self.variant(
                rng,
                share,
                cell.baseline + cell.error_effect + shared,
                canary_exceed,
                canary_scale,
                dispersed,
            );
            let primary = self.variant(
                rng,
                1.0 - share,
                cell.baseline + shared,
                &self.primary_exceed,
                1.0,
                dispersed,
            );
            observation.canary.add(&canary);
            observation.primary.add(&primary);
            observation.subwindows.push((canary, primary));
        }
        let gap = cell.scenario == Scenario::PrometheusGap && (1..4).contains(&t);
        (!gap).then_some(observation)
    }

    fn variant(
        &self,
        rng: &mut StdRng,
        share: f64,
        error_rate: f64,
        exceed: &[f64; EDGES.len()],
        scale: f64,
        dispersed: bool,
    ) -> Variant {
        let mean = self.cell.rps * 10.0 * share;
        let requests = if mean > 0.0 {
            Poisson::new(mean).unwrap().sample(rng) as u64
        } else {
            0
        };
        let mut rate = error_rate.clamp(0.0, 1.0);
        if dispersed && rate > 0.0 {
            // Intra-class correlation 0.01: a + b = 1/0.01 - 1.
            let concentration = 99.0;
            rate = Beta::new(rate * concentration, (1.0 - rate) * concentration)
                .unwrap()
                .sample(rng);
        }
        let errors = Binomial::new(requests, rate).unwrap().sample(rng);
        // Latency buckets: a multinomial over the buckets, drawn as successive binomials from the slowest.
        let mut at_or_below = [0u64; EDGES.len()];
        let mut left = requests;
        let mut left_probability = 1.0;
        for k in (0..EDGES.len()).rev() {
            // Of the `left` requests at or below the next edge up, how many are above this one.
            let above_this = left_probability - (1.0 - exceed[k]);
            let p = if left_probability > 0.0 {
                (above_this / left_probability).clamp(0.0, 1.0)
            } else {
                0.0
            };
            let above = Binomial::new(left, p).unwrap().sample(rng);
            left -= above;
            left_probability = 1.0 - exceed[k];
            at_or_below[k] = left;
        }
        // The sum of n log-normal latencies, by its normal approximation (only the Kayenta-style judge reads it).
        let (mu, s2) = ((MEDIAN * scale).ln(), SIGMA * SIGMA);
        let mean_latency = (mu + s2 / 2.0).exp();
        let variance = ((s2).exp() - 1.0) * (2.0 * mu + s2).exp();
        let n = requests as f64;
        let latency_sum = if requests == 0 {
            0.0
        } else {
            Normal::new(n * mean_latency, (n * variance).sqrt())
                .unwrap()
                .sample(rng)
                .max(0.0)
        };
        Variant {
            requests,
            errors,
            at_or_below,
            latency_sum,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn the_buckets_follow_the_log_normal() {
        let world = World::new(Cell {
            scenario: Scenario::Calm,
            rps: 500.0,
            baseline: 0.01,
            error_effect: 0.0,
            latency_factor: 1.0,
        });
        let mut rng = StdRng::seed_from_u64(1);
        let (before, _) = world.before(&mut rng);
        let n = before.requests as f64;
        assert!((n - 300_000.0).abs() < 3_000.0);
        // Half the requests are slower than the median (50 ms), about 8.3% slower than 100 ms.
        assert!((before.slower_than(3) as f64 / n - 0.5).abs() < 0.01);
        assert!((before.slower_than(4) as f64 / n - 0.083).abs() < 0.005);
        assert!((before.errors as f64 / n - 0.01).abs() < 0.001);
        assert!(before.at_or_below.windows(2).all(|w| w[0] <= w[1]));
        assert!((before.latency_sum / n - 0.0567).abs() < 0.001);
    }
}
