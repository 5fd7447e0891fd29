//! Anytime-valid bounds on one variant's rate of bad events: Robbins' beta-binomial mixture. With `bad` of
//! `requests` seen, M(p) = [B(a + bad, b + requests - bad) / B(a, b)] / [p^bad (1 - p)^(requests - bad)] is a
//! martingale for the true p, so {p : M(p) < 1/α} holds the true rate at every tick at once with probability
//! at least 1 - α. It assumes the variant's rate is stable; the conditional test does not.

use serde::{Deserialize, Serialize};
use statrs::function::beta::ln_beta;

use super::eprocess::Counts;

/// The prior Beta(a, b): mean `expected` with the smaller parameter 1, so that a rate near the expected one
/// is bounded tightly soon (a uniform prior costs a good canary minutes at low rates).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Prior {
    pub a: f64,
    pub b: f64,
}

impl Prior {
    pub fn with_mean(expected: f64) -> Self {
        let p = expected.clamp(1e-4, 1.0 - 1e-4);
        if p <= 0.5 {
            Prior {
                a: 1.0,
                b: 1.0 / p - 1.0,
            }
        } else {
            Prior {
                a: 1.0 / (1.0 - p) - 1.0,
                b: 1.0,
            }
        }
    }

    /// The bounds on the rate after `seen`, each holding with probability 1 - `alpha` at every tick.
    pub fn bounds(&self, seen: Counts, alpha: f64) -> (f64, f64) {
        self.bounds_scattered(seen, 1.0, alpha)
    }

    /// The bounds when the counts scatter `dispersion` times more than binomial ones: they carry as much
    /// information as 1/dispersion of their requests would.
    pub fn bounds_scattered(&self, seen: Counts, dispersion: f64, alpha: f64) -> (f64, f64) {
        let scale = dispersion.max(1.0);
        let (s, n) = (seen.bad as f64 / scale, seen.requests as f64 / scale);
        if seen.requests == 0 {
            return (0.0, 1.0);
        }
        let ln_mixture = ln_beta(self.a + s, self.b + n - s) - ln_beta(self.a, self.b);
        let ln_m = |p: f64| ln_mixture - s * p.ln() - (n - s) * (1.0 - p).ln();
        let limit = (1.0 / alpha).ln();
        let estimate = s / n;
        // ln M is convex in p with its minimum (at most 0) at the estimate: one crossing on each side.
        let lower = if seen.bad == 0 {
            0.0
        } else {
            bisect(|p| ln_m(p) < limit, 0.0, estimate)
        };
        let upper = if seen.bad == seen.requests {
            1.0
        } else {
            1.0 - bisect(|q| ln_m(1.0 - q) < limit, 0.0, 1.0 - estimate)
        };
        (lower, upper)
    }
}

/// The boundary of an interval (`inside` false at `outside`, true at `inside_end`), to 1e-12.
fn bisect(inside: impl Fn(f64) -> bool, mut outside: f64, mut inside_end: f64) -> f64 {
    for _ in 0..60 {
        let middle = 0.5 * (outside + inside_end);
        if middle == outside || middle == inside_end {
            break;
        }
        if inside(middle) {
            inside_end = middle;
        } else {
            outside = middle;
        }
    }
    inside_end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bounds_hold_the_estimate_and_narrow_with_data() {
        let prior = Prior::with_mean(0.01);
        let mut last_width = 1.0;
        for n in [100, 1_000, 10_000, 100_000] {
            let seen = Counts {
                requests: n,
                bad: n / 50,
            };
            let (lower, upper) = prior.bounds(seen, 0.0125);
            assert!(lower < 0.02 && 0.02 < upper, "{n}: [{lower}, {upper}]");
            assert!(upper - lower < last_width, "{n}: no narrower");
            last_width = upper - lower;
        }
        assert_eq!(prior.bounds(Counts::default(), 0.05), (0.0, 1.0));
        assert_eq!(
            prior
                .bounds(
                    Counts {
                        requests: 10,
                        bad: 0
                    },
                    0.05
                )
                .0,
            0.0
        );
        assert_eq!(
            prior
                .bounds(
                    Counts {
                        requests: 10,
                        bad: 10
                    },
                    0.05
                )
                .1,
            1.0
        );
    }

    #[test]
    fn the_priors_mean_is_the_expected_rate() {
        for expected in [0.001, 0.01, 0.3, 0.9] {
            let prior = Prior::with_mean(expected);
            assert!((prior.a / (prior.a + prior.b) - expected).abs() < 1e-12);
            assert!(prior.a.min(prior.b) == 1.0);
        }
    }
}
