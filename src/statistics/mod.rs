//! The sequential judge: is the canary worse than the primary it would replace, better than a tolerance,
//! or is it too early to say? Pure; the math and its sources are in the README's "Statistical judge".
//!
//! - [`fisher`]: the law of the canary's share of a tick's bad events (the shared rate cancels);
//! - [`eprocess`]: mixtures of likelihood-ratio bets on that law, valid however often they are looked at;
//! - [`confidence`]: anytime-valid bounds on one variant's rate;
//! - [`sequential`]: the three answers for an error rate and for a latency histogram.

pub mod confidence;
pub mod eprocess;
pub mod fisher;
pub mod sequential;

pub use eprocess::{Counts, Tick};
pub use sequential::{LatencyEvidence, LatencyTick, RateEvidence, Settings, Verdict};

/// About how many canary requests the pass test needs to clear a canary as good as the primary at rate
/// `expected`, with tolerance `tolerance`: the fixed-sample size of a one-sided test at `alpha`, with power
/// 80%, times 1.5 for looking at every tick. An estimate for messages, never a decision.
pub fn requests_needed(expected: f64, tolerance: f64, alpha: f64) -> f64 {
    use statrs::distribution::{ContinuousCDF, Normal};
    let normal = Normal::standard();
    let z_alpha = normal.inverse_cdf(1.0 - alpha);
    let z_beta = normal.inverse_cdf(0.8);
    let p = expected.clamp(1e-4, 0.99);
    let worse = (p + tolerance).min(0.999);
    let spread = z_alpha * (p * (1.0 - p)).sqrt() + z_beta * (worse * (1.0 - worse)).sqrt();
    1.5 * (spread / tolerance).powi(2)
}

#[cfg(test)]
mod tests;
