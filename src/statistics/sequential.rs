//! The judge of one metric, canary against primary, tick after tick: three answers.
//!
//! - **Fail**: the fail e-process (is the canary worse than the primary?) reached metrics/α_fail. Whatever
//!   the looks, weights, holds and shared incidents, a canary that is not worse is rolled back with
//!   probability at most α_fail over all its metrics (Ville's inequality, split evenly between metrics so
//!   the one that failed can be named).
//! - **Pass**: no regression beyond the tolerance is proven: the relative leg (an e-process for "odds ratio
//!   below the tolerance's", immune to shared incidents) reached 2/α_pass, or the absolute leg (the canary's
//!   upper bound minus the primary's lower bound, each anytime-valid at α_pass/4) is within the tolerance. A
//!   canary worse than the tolerance passes with probability at most α_pass. Once passed, it stays passed
//!   (the guarantee is on ever crossing), unless it fails.
//! - **Hold**: neither yet: gather more.
//!
//! Latency is judged on histogram buckets: "slower than the edge x" is a bad event for each edge. It fails
//! when the mean of the edges' fail e-processes (itself an e-process) reaches metrics/α_fail, and passes
//! when every edge's absolute leg is within the latency tolerance.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::confidence::Prior;
use super::eprocess::{Counts, Dispersion, MixtureEProcess, Tick, ln_mean_exp};

/// The odds ratios the fail test bets on, as multiples of its null: 25% worse to 50 times worse.
pub const FAIL_FACTORS: [f64; 8] = [1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0];
/// The odds ratios the relative pass leg bets on, as multiples of the tolerance's odds ratio.
pub const PASS_FACTORS: [f64; 8] = [0.9, 0.75, 0.6, 0.45, 0.3, 0.2, 0.1, 0.05];

/// How a judge decides; the defaults are the reference's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// The chance of rolling back a canary that is not worse, over all its judged metrics (default 0.01).
    pub alpha_fail: f64,
    /// The chance of passing a metric that is worse than the tolerance (default 0.05).
    pub alpha_pass: f64,
    /// How much worse the canary may be and still pass, in absolute rate (0.01 = 1 point of errors; 0.10 =
    /// 10 points more requests slower than an edge).
    pub tolerance: f64,
    /// The odds ratio the fail test takes as "not worse" (1: the same as the primary; 1.2 tolerates 20%
    /// higher odds, for very high traffic or cold pods).
    pub fail_margin: f64,
    /// How many metrics the canary's α_fail is shared between.
    pub metrics: usize,
    /// Ticks with canary traffic not judged at the start. New pods are often slow for their first minute
    /// (cold caches, JIT), which is not the version's fault: 1 for latency. Errors are judged from the
    /// first tick: users saw them, and a fast rollback on errors matters most.
    pub warm_up_ticks: u32,
}

pub const DEFAULT_ALPHA_FAIL: f64 = 0.01;
pub const DEFAULT_ALPHA_PASS: f64 = 0.05;
pub const DEFAULT_ERROR_TOLERANCE: f64 = 0.01;
pub const DEFAULT_LATENCY_TOLERANCE: f64 = 0.10;
pub const DEFAULT_LATENCY_WARM_UP_TICKS: u32 = 1;

impl Settings {
    pub fn errors(metrics: usize) -> Self {
        Settings {
            alpha_fail: DEFAULT_ALPHA_FAIL,
            alpha_pass: DEFAULT_ALPHA_PASS,
            tolerance: DEFAULT_ERROR_TOLERANCE,
            fail_margin: 1.0,
            metrics,
            warm_up_ticks: 0,
        }
    }

    pub fn latency(metrics: usize) -> Self {
        Settings {
            tolerance: DEFAULT_LATENCY_TOLERANCE,
            warm_up_ticks: DEFAULT_LATENCY_WARM_UP_TICKS,
            ..Settings::errors(metrics)
        }
    }

    /// The fail test's bar, in ln.
    pub fn ln_fail_at(&self) -> f64 {
        (self.metrics.max(1) as f64 / self.alpha_fail).ln()
    }

    fn ln_pass_at(&self) -> f64 {
        (2.0 / self.alpha_pass).ln()
    }

    /// Each of the absolute leg's two bounds holds at α_pass/4; the relative leg takes α_pass/2: α_pass in all.
    fn bound_alpha(&self) -> f64 {
        self.alpha_pass / 4.0
    }

    /// Counts a tick in `ticks` and says whether it is judged: a tick without canary requests adds
    /// nothing, and the first `warm_up_ticks` with canary requests are not judged.
    fn judges(&self, ticks: &mut u32, canary_requests: u64) -> bool {
        if canary_requests == 0 {
            return false;
        }
        *ticks += 1;
        *ticks > self.warm_up_ticks
    }

    /// Anytime-valid bounds on the canary's rate minus the primary's (the absolute leg), from counts that
    /// scatter `dispersion` times more than binomial ones.
    fn difference(
        &self,
        prior: Prior,
        canary: Counts,
        primary: Counts,
        dispersion: f64,
    ) -> (f64, f64) {
        let (canary_low, canary_high) =
            prior.bounds_scattered(canary, dispersion, self.bound_alpha());
        let (primary_low, primary_high) =
            prior.bounds_scattered(primary, dispersion, self.bound_alpha());
        (canary_low - primary_high, canary_high - primary_low)
    }

    /// The verdict from the fail e-value (ln) and whether the pass test has cleared.
    fn verdict(&self, ln_e: f64, passed: bool) -> Verdict {
        if ln_e >= self.ln_fail_at() {
            Verdict::Fail
        } else if passed {
            Verdict::Pass
        } else {
            Verdict::Hold
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Verdict {
    Fail,
    Pass,
    Hold,
}

/// The chance that `expected_high` is below the primary's true rate.
const EXPECTED_HIGH_ALPHA: f64 = 0.01;

/// What a judged bad/total metric knows, kept across ticks and restarts (bounded: 16 numbers and counts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateEvidence {
    /// The primary's rate before the canary had traffic: the prior mean of the absolute leg's bounds.
    pub expected: f64,
    /// An upper bound on the primary's rate (99%): the relative pass leg turns the tolerance (points) into
    /// an odds ratio at the rate in [expected, expected_high] where that ratio is smallest, so that a
    /// primary seen briefly never makes the tolerance looser than stated.
    pub expected_high: f64,
    pub fail: MixtureEProcess,
    /// The relative pass leg.
    pub pass: MixtureEProcess,
    pub canary: Counts,
    pub primary: Counts,
    /// How the primary's bad events scatter between short windows (see [`RateEvidence::observe_windows`]).
    pub dispersion: Dispersion,
    /// Ticks with canary traffic seen, warm-up included.
    pub ticks: u32,
    pub passed: bool,
}

/// A rate metric's evidence, in the words the status and events use.
#[derive(Debug, Clone, PartialEq)]
pub struct RateSummary {
    pub verdict: Verdict,
    /// The fail e-value, and the bar it must reach.
    pub e_value: f64,
    pub fail_at: f64,
    pub canary_rate: f64,
    pub primary_rate: f64,
    /// Anytime-valid bounds on canary − primary.
    pub difference: (f64, f64),
    pub canary_requests: u64,
}

impl RateEvidence {
    /// For a primary whose rate is known to be `expected`.
    pub fn new(expected: f64) -> Self {
        RateEvidence {
            expected,
            expected_high: expected,
            fail: MixtureEProcess::new(FAIL_FACTORS.len()),
            pass: MixtureEProcess::new(PASS_FACTORS.len()),
            canary: Counts::default(),
            primary: Counts::default(),
            dispersion: Dispersion::default(),
            ticks: 0,
            passed: false,
        }
    }

    /// From the primary's counts before the canary had traffic: its rate, and an upper bound on it that
    /// holds with 99% (Robbins' mixture over a uniform prior: no requests seen bounds nothing, and the
    /// relative leg then never passes a canary; the absolute leg still can).
    pub fn before(primary: Counts) -> Self {
        let expected = if primary.requests == 0 {
            0.0
        } else {
            primary.bad as f64 / primary.requests as f64
        };
        let uniform = Prior { a: 1.0, b: 1.0 };
        RateEvidence {
            expected_high: uniform.bounds(primary, EXPECTED_HIGH_ALPHA).1.max(expected),
            ..RateEvidence::new(expected)
        }
    }

    /// The primary's counts in short windows, each short enough that its rate holds within it (the
    /// controller: ten 1-minute windows before the canary; the benchmark: those and 10-s windows within
    /// each tick): how much they scatter beyond independent requests tempers the next ticks' bets and
    /// widens the bounds, so that bursts of errors shared by many requests are not taken for a regression.
    /// Windows far apart would mistake a change of rate (a shared incident) for scatter.
    pub fn observe_windows(&mut self, windows: &[Counts]) {
        for window in windows {
            self.dispersion.add(*window);
        }
    }

    /// The odds ratio at which the canary is worse by exactly the tolerance. Its rate is only known to lie
    /// between `expected` and `expected_high`, so the ratio is taken where it is smallest over that range:
    /// a fixed number of points is the smallest odds ratio at a rate of (1 - tolerance)/2, and grows on
    /// either side (1 point is 1.04 times the odds at 50%, 2 at 1%, 10 at 99%).
    fn tolerance_odds_ratio(&self, settings: &Settings) -> f64 {
        let odds = |p: f64| p / (1.0 - p);
        let flattest = (1.0 - settings.tolerance) / 2.0;
        let expected = flattest
            .clamp(self.expected.min(self.expected_high), self.expected_high)
            .clamp(1e-4, 0.99);
        let worse = (expected + settings.tolerance).min(0.999);
        odds(worse) / odds(expected)
    }

    /// Judges one tick. A tick without canary requests adds nothing; the first `warm_up_ticks` with
    /// canary requests are not judged.
    pub fn update(&mut self, tick: &Tick, settings: &Settings) -> Verdict {
        if !settings.judges(&mut self.ticks, tick.canary.requests) {
            return self.verdict(settings);
        }
        let temper = self.dispersion.factor();
        self.fail
            .update(tick, settings.fail_margin, &FAIL_FACTORS, temper);
        self.pass.update(
            tick,
            self.tolerance_odds_ratio(settings),
            &PASS_FACTORS,
            temper,
        );
        self.canary.add(tick.canary);
        self.primary.add(tick.primary);
        if !self.passed {
            self.passed = self.pass.ln_e() >= settings.ln_pass_at()
                || self.difference(settings).1 <= settings.tolerance;
        }
        self.verdict(settings)
    }

    pub fn verdict(&self, settings: &Settings) -> Verdict {
        settings.verdict(self.fail.ln_e(), self.passed)
    }

    /// Anytime-valid bounds on the canary's rate minus the primary's.
    fn difference(&self, settings: &Settings) -> (f64, f64) {
        let prior = Prior::with_mean(self.expected);
        settings.difference(prior, self.canary, self.primary, self.dispersion.factor())
    }

    pub fn summary(&self, settings: &Settings) -> RateSummary {
        let rate = |c: Counts| {
            if c.requests == 0 {
                0.0
            } else {
                c.bad as f64 / c.requests as f64
            }
        };
        RateSummary {
            verdict: self.verdict(settings),
            e_value: self.fail.ln_e().exp(),
            fail_at: settings.ln_fail_at().exp(),
            canary_rate: rate(self.canary),
            primary_rate: rate(self.primary),
            difference: self.difference(settings),
            canary_requests: self.canary.requests,
        }
    }
}

/// One tick of a latency histogram: per edge, requests slower than it, for both variants.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyTick {
    /// One per edge, in the order of the evidence's edges.
    pub slower: Vec<Tick>,
}

/// The most bucket edges a latency judge keeps (histograms have a dozen or two).
pub const MAX_EDGES: usize = 64;

/// What a judged latency metric knows, per bucket edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LatencyEvidence {
    /// The bucket edges judged, in milliseconds.
    #[schemars(length(max = MAX_EDGES))]
    pub edges: Vec<f64>,
    /// The primary's share of requests slower than each edge, before the canary had traffic.
    #[schemars(length(max = MAX_EDGES))]
    pub expected: Vec<f64>,
    #[schemars(length(max = MAX_EDGES))]
    pub fail: Vec<MixtureEProcess>,
    #[schemars(length(max = MAX_EDGES))]
    pub canary: Vec<Counts>,
    #[schemars(length(max = MAX_EDGES))]
    pub primary: Vec<Counts>,
    /// Ticks with canary traffic seen, warm-up included.
    pub ticks: u32,
    pub passed: bool,
}

/// A latency metric's evidence, in the words the status and events use.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencySummary {
    pub verdict: Verdict,
    pub e_value: f64,
    pub fail_at: f64,
    /// The edge where the canary is furthest from passing, with the bounds on canary − primary there.
    pub widest_edge: Option<(f64, (f64, f64))>,
    pub canary_requests: u64,
}

impl LatencyEvidence {
    pub fn new(edges: Vec<f64>, expected: Vec<f64>) -> Self {
        let n = edges.len();
        LatencyEvidence {
            edges,
            expected,
            fail: vec![MixtureEProcess::new(FAIL_FACTORS.len()); n],
            canary: vec![Counts::default(); n],
            primary: vec![Counts::default(); n],
            ticks: 0,
            passed: false,
        }
    }

    /// Judges one tick, as [`RateEvidence::update`] does.
    pub fn update(&mut self, tick: &LatencyTick, settings: &Settings) -> Verdict {
        let canary_requests = tick.slower.first().map_or(0, |t| t.canary.requests);
        if !settings.judges(&mut self.ticks, canary_requests) {
            return self.verdict(settings);
        }
        for (k, slower) in tick.slower.iter().enumerate().take(self.edges.len()) {
            self.fail[k].update(slower, settings.fail_margin, &FAIL_FACTORS, 1.0);
            self.canary[k].add(slower.canary);
            self.primary[k].add(slower.primary);
        }
        if !self.passed && !self.edges.is_empty() {
            self.passed =
                (0..self.edges.len()).all(|k| self.difference(k, settings).1 <= settings.tolerance);
        }
        self.verdict(settings)
    }

    fn ln_e(&self) -> f64 {
        let per_edge: Vec<f64> = self.fail.iter().map(MixtureEProcess::ln_e).collect();
        ln_mean_exp(&per_edge)
    }

    pub fn verdict(&self, settings: &Settings) -> Verdict {
        settings.verdict(self.ln_e(), self.passed)
    }

    fn difference(&self, k: usize, settings: &Settings) -> (f64, f64) {
        let prior = Prior::with_mean(self.expected.get(k).copied().unwrap_or(0.5));
        settings.difference(prior, self.canary[k], self.primary[k], 1.0)
    }

    pub fn summary(&self, settings: &Settings) -> LatencySummary {
        let widest_edge = (0..self.edges.len())
            .map(|k| (self.edges[k], self.difference(k, settings)))
            .max_by(|a, b| a.1.1.total_cmp(&b.1.1));
        LatencySummary {
            verdict: self.verdict(settings),
            e_value: self.ln_e().exp(),
            fail_at: settings.ln_fail_at().exp(),
            widest_edge,
            // Every request is counted at every edge.
            canary_requests: self.canary.first().map_or(0, |c| c.requests),
        }
    }
}
