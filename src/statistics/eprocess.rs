//! E-processes on the canary's share of each tick's bad events: a bet, renewed every tick, whose wealth
//! stays a fair game (a non-negative supermartingale) while the null hypothesis holds. By Ville's inequality
//! the wealth ever reaching 1/α has probability at most α, however often it is looked at, however the
//! weights and the shared rate move, and however long the analysis holds.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::fisher::Table;

/// One tick's counts for one bad/total metric (errors, or requests slower than a bucket's edge).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Counts {
    pub requests: u64,
    pub bad: u64,
}

impl Counts {
    /// Counts as read from Prometheus: rounded, never negative, bad never above requests.
    pub fn measured(requests: f64, bad: f64) -> Self {
        let requests = if requests.is_finite() {
            requests.round().max(0.0) as u64
        } else {
            0
        };
        let bad = if bad.is_finite() {
            bad.round().max(0.0) as u64
        } else {
            0
        };
        Counts {
            requests,
            bad: bad.min(requests),
        }
    }

    pub fn add(&mut self, other: Counts) {
        self.requests += other.requests;
        self.bad += other.bad;
    }
}

/// One tick of both variants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tick {
    pub canary: Counts,
    pub primary: Counts,
}

impl Tick {
    fn table(&self) -> Table {
        Table {
            canary_requests: self.canary.requests,
            primary_requests: self.primary.requests,
            bad: self.canary.bad + self.primary.bad,
        }
    }
}

/// A mixture, with equal weights, of likelihood-ratio martingales of "odds ratio = alternative" against
/// "odds ratio = null", each the product over ticks of f(canary's bad; alternative) / f(canary's bad; null),
/// with alternative = null × factor.
///
/// Factors above 1 test "canary worse than the null" (the law of the canary's share is monotone in the odds
/// ratio, so the bet stays fair for every odds ratio at or below the null); factors below 1 test "canary no
/// worse than the null", fair for every odds ratio at or above it. Only the products are kept (the state
/// kept across ticks and restarts): the null and the factors come from the settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MixtureEProcess {
    /// ln of each alternative's product so far.
    #[schemars(length(max = 16))]
    pub ln_products: Vec<f64>,
}

impl MixtureEProcess {
    /// A new process at wealth 1 over `alternatives` alternatives.
    pub fn new(alternatives: usize) -> Self {
        MixtureEProcess {
            ln_products: vec![0.0; alternatives],
        }
    }

    /// Bets on one tick. A tick whose split is forced (no bad events, no canary or primary requests)
    /// carries no information and changes nothing.
    ///
    /// `temper` (at least 1) raises each tick's ratio to the power 1/temper: still a fair bet (by Jensen,
    /// E[L^(1/t)] <= E[L]^(1/t) <= 1), and the right size when requests are not independent and the counts
    /// scatter `temper` times more than binomial ones.
    pub fn update(&mut self, tick: &Tick, null: f64, factors: &[f64], temper: f64) {
        let table = tick.table();
        if table.is_degenerate() {
            return;
        }
        if self.ln_products.len() != factors.len() {
            // A state from other settings: start again rather than mix bets on other alternatives.
            *self = MixtureEProcess::new(factors.len());
        }
        let observed = tick.canary.bad;
        let ln_null = table.ln_pmf(observed, null);
        for (factor, product) in factors.iter().zip(self.ln_products.iter_mut()) {
            let ln_ratio = table.ln_pmf(observed, null * factor) - ln_null;
            // A non-finite ratio can only come from counts no law allows; betting nothing keeps the game fair.
            if ln_ratio.is_finite() {
                *product += ln_ratio / temper.max(1.0);
            }
        }
    }

    /// ln of the wealth: the mean of the products.
    pub fn ln_e(&self) -> f64 {
        ln_mean_exp(&self.ln_products)
    }
}

/// How much more a variant's bad events scatter between short windows than independent requests would
/// make them (retry storms, bursts): Pearson's χ² over its degrees of freedom, from sums kept across ticks.
/// 1 when the windows are too few to tell.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Dispersion {
    pub windows: u32,
    pub requests: u64,
    pub bad: u64,
    /// Σ bad² / requests over the windows.
    pub bad_squared_over_requests: f64,
}

/// Fewer windows than this and the scatter is not estimated.
const MIN_WINDOWS: u32 = 10;
const MAX_DISPERSION: f64 = 1_000.0;

impl Dispersion {
    pub fn add(&mut self, window: Counts) {
        if window.requests == 0 {
            return;
        }
        self.windows += 1;
        self.requests += window.requests;
        self.bad += window.bad;
        self.bad_squared_over_requests += (window.bad as f64).powi(2) / window.requests as f64;
    }

    pub fn factor(&self) -> f64 {
        if self.windows < MIN_WINDOWS || self.bad == 0 || self.bad == self.requests {
            return 1.0;
        }
        let (bad, requests) = (self.bad as f64, self.requests as f64);
        let rate = bad / requests;
        let chi_squared =
            (self.bad_squared_over_requests - bad * bad / requests) / (rate * (1.0 - rate));
        (chi_squared / f64::from(self.windows - 1)).clamp(1.0, MAX_DISPERSION)
    }
}

/// ln((1/n) Σ exp(x)), without overflow.
pub fn ln_mean_exp(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let max = values.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return max;
    }
    max + (values.iter().map(|v| (v - max).exp()).sum::<f64>() / values.len() as f64).ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(canary: (u64, u64), primary: (u64, u64)) -> Tick {
        Tick {
            canary: Counts {
                requests: canary.0,
                bad: canary.1,
            },
            primary: Counts {
                requests: primary.0,
                bad: primary.1,
            },
        }
    }

    #[test]
    fn no_information_no_bet() {
        let mut process = MixtureEProcess::new(2);
        for idle in [
            tick((0, 0), (100, 3)),
            tick((50, 0), (50, 0)),
            tick((10, 10), (0, 0)),
        ] {
            process.update(&idle, 1.0, &[2.0, 5.0], 1.0);
        }
        assert_eq!(process.ln_e(), 0.0);
    }

    #[test]
    fn more_bad_canary_events_never_lower_the_wealth_against_a_worse_canary() {
        // Monotone likelihood ratio: with the primary's counts fixed, one more bad canary request raises
        // every "worse" alternative's ratio.
        for (nc, np, ep) in [(30, 270, 3), (100, 100, 0), (500, 4500, 45), (7, 3, 2)] {
            let mut last = f64::NEG_INFINITY;
            for ec in 0..=nc.min(40) {
                let mut process = MixtureEProcess::new(3);
                process.update(&tick((nc, ec), (np, ep)), 1.0, &[1.25, 2.0, 10.0], 1.0);
                let now = process.ln_e();
                assert!(
                    now >= last - 1e-12,
                    "nc={nc} np={np} ep={ep} ec={ec}: {now} < {last}"
                );
                last = now;
            }
        }
    }

    #[test]
    fn ln_mean_exp_is_the_log_of_the_mean() {
        let values = [0.0, 2.0_f64.ln(), -1000.0];
        assert!((ln_mean_exp(&values) - (3.0_f64 / 3.0).ln()).abs() < 1e-12);
        assert_eq!(ln_mean_exp(&[]), 0.0);
    }
}
