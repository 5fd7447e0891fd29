//! The judge against an independent computation (mpmath, 50 digits), and its guarantees by simulation.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Binomial, Distribution, Poisson};

use super::confidence::Prior;
use super::fisher::Table;
use super::sequential::FAIL_FACTORS;
use super::*;
use eprocess::MixtureEProcess;

fn close(ours: f64, theirs: f64, what: &str) {
    assert!(
        (ours - theirs).abs() <= 1e-9 * (1.0 + theirs.abs()),
        "{what}: {ours} against {theirs}"
    );
}

#[test]
fn the_law_agrees_with_an_exact_computation() {
    // (canary requests, primary requests, bad, canary's bad, odds ratio) -> ln P, from mpmath's exact sums.
    let vectors = [
        ((30, 270, 7, 3, 1.0), -3.8285514905329863),
        ((30, 270, 7, 3, 2.5), -2.047353630304199),
        ((1000, 9000, 120, 25, 1.25), -6.0443355709982204),
        ((2500, 2500, 40, 31, 50.0), -16.473422681258475),
        ((12, 988, 3, 0, 0.3), -0.010930054782021945),
    ];
    for ((canary_requests, primary_requests, bad, x, omega), expected) in vectors {
        let table = Table {
            canary_requests,
            primary_requests,
            bad,
        };
        close(
            table.ln_pmf(x, omega),
            expected,
            &format!("{table:?} x={x} ω={omega}"),
        );
    }
}

#[test]
fn the_fail_e_process_agrees_with_an_exact_computation() {
    let ticks = [
        ((60, 2), (540, 5)),
        ((120, 3), (480, 4)),
        ((180, 6), (420, 3)),
        ((0, 0), (600, 6)),
        ((240, 9), (360, 2)),
    ];
    let mut process = MixtureEProcess::new(FAIL_FACTORS.len());
    for ((cr, cb), (pr, pb)) in ticks {
        let tick = Tick {
            canary: Counts {
                requests: cr,
                bad: cb,
            },
            primary: Counts {
                requests: pr,
                bad: pb,
            },
        };
        process.update(&tick, 1.0, &FAIL_FACTORS, 1.0);
    }
    close(process.ln_e(), 6.767823259206531, "ln e after five ticks");
}

#[test]
fn the_bounds_agree_with_an_exact_computation() {
    // (a, b, bad, requests, α) -> (lower, upper), by bisection in mpmath.
    let vectors = [
        (
            (1.0, 99.0, 20, 1000, 0.0125),
            (0.0080891183169421, 0.0398484274440458),
        ),
        ((1.0, 999.0, 0, 300, 0.0125), (0.0, 0.015362841726536)),
        (
            (1.0, 1.0, 7, 40, 0.05),
            (0.0432031156267546, 0.404733763330797),
        ),
    ];
    for ((a, b, bad, requests, alpha), (lower, upper)) in vectors {
        let (ours_lower, ours_upper) = Prior { a, b }.bounds(Counts { requests, bad }, alpha);
        assert!(
            (ours_lower - lower).abs() < 1e-10,
            "lower {ours_lower} against {lower}"
        );
        assert!(
            (ours_upper - upper).abs() < 1e-10,
            "upper {ours_upper} against {upper}"
        );
    }
}

/// A canary's run: `rps` requests a second, 60-s ticks, the canary's weight stepping 10 to 50 by 10 and
/// then holding; each variant's requests go bad at its rate, plus `shared(tick)` for both.
struct World {
    rps: f64,
    primary_rate: f64,
    canary_rate: f64,
    shared: fn(usize) -> f64,
}

impl World {
    fn new(rps: f64, primary_rate: f64, canary_rate: f64, shared: fn(usize) -> f64) -> Self {
        World {
            rps,
            primary_rate,
            canary_rate,
            shared,
        }
    }

    fn tick(&self, t: usize, rng: &mut StdRng) -> Tick {
        let weight = (0.1 * (t + 1) as f64).min(0.5);
        let mut variant = |share: f64, rate: f64| {
            let mean = self.rps * 60.0 * share;
            let requests = Poisson::new(mean).unwrap().sample(rng) as u64;
            let rate = (rate + (self.shared)(t)).min(1.0);
            let bad = Binomial::new(requests, rate).unwrap().sample(rng);
            Counts { requests, bad }
        };
        Tick {
            canary: variant(weight, self.canary_rate),
            primary: variant(1.0 - weight, self.primary_rate),
        }
    }

    /// How `runs` canaries end within `ticks`: (failed, passed).
    fn judge(&self, runs: usize, ticks: usize, seed: u64) -> (usize, usize) {
        let mut rng = StdRng::seed_from_u64(seed);
        let settings = Settings::errors(1);
        let (mut failed, mut passed) = (0, 0);
        for _ in 0..runs {
            let mut evidence = RateEvidence::new(self.primary_rate);
            for t in 0..ticks {
                match evidence.update(&self.tick(t, &mut rng), &settings) {
                    Verdict::Fail => {
                        failed += 1;
                        break;
                    }
                    Verdict::Pass if t >= 4 => {
                        passed += 1;
                        break;
                    }
                    _ => {}
                }
            }
        }
        (failed, passed)
    }
}

fn calm(_: usize) -> f64 {
    0.0
}

fn incident(t: usize) -> f64 {
    if (4..7).contains(&t) { 0.10 } else { 0.0 }
}

#[test]
fn a_canary_as_good_as_the_primary_is_rarely_rolled_back_however_long_it_is_watched() {
    // A/A: α_fail is 1%; 1,000 canaries watched for an hour each. Ville's bound makes the true rate well
    // under 1%; 2% leaves room for sampling error only.
    let world = World::new(5.0, 0.01, 0.01, calm);
    let (failed, _) = world.judge(1_000, 60, 1);
    assert!(failed <= 20, "{failed} of 1000 good canaries rolled back");
}

#[test]
fn a_shared_incident_does_not_roll_back_a_good_canary() {
    let world = World::new(50.0, 0.01, 0.01, incident);
    let (failed, _) = world.judge(300, 20, 2);
    assert!(
        failed <= 6,
        "{failed} of 300 good canaries rolled back by an incident both variants saw"
    );
}

#[test]
fn a_canary_one_point_worse_is_rolled_back_and_a_good_one_passes() {
    let worse = World::new(50.0, 0.01, 0.02, calm);
    let (failed, passed) = worse.judge(100, 60, 3);
    assert!(failed >= 95, "{failed} of 100 caught ({passed} passed)");
    assert!(passed <= 5, "{passed} of 100 worse canaries passed");
    let good = World::new(50.0, 0.01, 0.01, calm);
    let (failed, passed) = good.judge(100, 60, 4);
    assert!(
        passed >= 95,
        "{passed} of 100 good canaries passed ({failed} failed)"
    );
}

#[test]
fn no_data_adds_nothing_and_holds() {
    let settings = Settings::errors(1);
    let mut evidence = RateEvidence::new(0.01);
    let before = evidence.clone();
    for _ in 0..100 {
        let idle = Tick {
            canary: Counts::default(),
            primary: Counts {
                requests: 300,
                bad: 3,
            },
        };
        assert_eq!(evidence.update(&idle, &settings), Verdict::Hold);
    }
    assert_eq!(evidence.fail, before.fail);
    assert_eq!(evidence.pass, before.pass);
    assert!(!evidence.passed);
}

#[test]
fn more_bad_canary_events_never_lower_the_fail_e_value() {
    let settings = Settings::errors(2);
    let mut rng = StdRng::seed_from_u64(5);
    let world = World::new(5.0, 0.01, 0.01, calm);
    for _ in 0..50 {
        let ticks: Vec<Tick> = (0..10).map(|t| world.tick(t, &mut rng)).collect();
        let e_value = |extra: u64| {
            let mut evidence = RateEvidence::new(0.01);
            for (t, tick) in ticks.iter().enumerate() {
                let mut tick = *tick;
                if t == 3 {
                    tick.canary.bad = (tick.canary.bad + extra).min(tick.canary.requests);
                }
                evidence.update(&tick, &settings);
            }
            evidence.fail.ln_e()
        };
        for extra in 0..4 {
            assert!(e_value(extra + 1) >= e_value(extra) - 1e-12);
        }
    }
}

#[test]
fn the_evidence_survives_a_round_trip_through_the_status() {
    let settings = Settings::latency(2);
    let mut evidence = LatencyEvidence::new(vec![0.1, 0.25, 0.5], vec![0.3, 0.05, 0.01]);
    let slower = |c: u64, p: u64| Tick {
        canary: Counts {
            requests: 100,
            bad: c,
        },
        primary: Counts {
            requests: 900,
            bad: p,
        },
    };
    let tick = LatencyTick {
        slower: vec![slower(40, 270), slower(9, 45), slower(2, 9)],
    };
    evidence.update(&tick, &settings);
    let json = serde_json::to_string(&evidence).unwrap();
    let back: LatencyEvidence = serde_json::from_str(&json).unwrap();
    assert_eq!(back, evidence);
    let mut rates = RateEvidence::new(0.01);
    rates.update(&slower(5, 9), &Settings::errors(2));
    let back: RateEvidence = serde_json::from_str(&serde_json::to_string(&rates).unwrap()).unwrap();
    assert_eq!(back, rates);
}

#[test]
fn a_slower_canary_fails_on_the_buckets_and_an_equal_one_passes() {
    let settings = Settings::latency(2);
    // Share of requests slower than 50, 100, 250 ms: the primary's, and a canary's 50% slower.
    let primary = [0.5, 0.08, 0.004];
    let slower = [0.79, 0.25, 0.03];
    let mut rng = StdRng::seed_from_u64(6);
    let mut run = |canary: [f64; 3]| {
        let mut evidence = LatencyEvidence::new(vec![0.05, 0.1, 0.25], primary.to_vec());
        for t in 0..60 {
            let (nc, np) = (150, 150);
            let tick = LatencyTick {
                slower: (0..3)
                    .map(|k| Tick {
                        canary: Counts {
                            requests: nc,
                            bad: Binomial::new(nc, canary[k]).unwrap().sample(&mut rng),
                        },
                        primary: Counts {
                            requests: np,
                            bad: Binomial::new(np, primary[k]).unwrap().sample(&mut rng),
                        },
                    })
                    .collect(),
            };
            match evidence.update(&tick, &settings) {
                Verdict::Hold => {}
                verdict => return (verdict, t),
            }
        }
        (Verdict::Hold, 60)
    };
    let (verdict, _) = run(slower);
    assert_eq!(verdict, Verdict::Fail);
    let (verdict, _) = run(primary);
    assert_eq!(verdict, Verdict::Pass);
}

#[test]
fn the_requests_needed_grow_as_the_tolerance_shrinks() {
    let wide = requests_needed(0.01, 0.02, 0.05);
    let narrow = requests_needed(0.01, 0.005, 0.05);
    assert!(narrow > 4.0 * wide, "{narrow} against {wide}");
    assert!((500.0..5_000.0).contains(&requests_needed(0.01, 0.01, 0.05)));
}

#[test]
fn the_scatter_of_short_windows_is_measured_against_independent_requests() {
    let mut rng = StdRng::seed_from_u64(7);
    let (mut independent, mut bursty) = (
        eprocess::Dispersion::default(),
        eprocess::Dispersion::default(),
    );
    for _ in 0..600 {
        let requests = 2_500;
        independent.add(Counts {
            requests,
            bad: Binomial::new(requests, 0.01).unwrap().sample(&mut rng),
        });
        // Intra-class correlation 0.01: about 1 + 2,499 x 0.01 = 26 times the binomial variance.
        let rate = rand_distr::Beta::new(0.99, 98.01).unwrap().sample(&mut rng);
        bursty.add(Counts {
            requests,
            bad: Binomial::new(requests, rate).unwrap().sample(&mut rng),
        });
    }
    assert!(independent.factor() < 1.3, "{}", independent.factor());
    assert!(
        (15.0..40.0).contains(&bursty.factor()),
        "{}",
        bursty.factor()
    );
    assert_eq!(eprocess::Dispersion::default().factor(), 1.0);
}

#[test]
fn the_first_minute_of_latency_is_not_judged() {
    let settings = Settings::latency(1);
    let mut evidence = LatencyEvidence::new(vec![0.1], vec![0.1]);
    let cold = LatencyTick {
        slower: vec![Tick {
            canary: Counts {
                requests: 3_000,
                bad: 3_000,
            },
            primary: Counts {
                requests: 27_000,
                bad: 2_700,
            },
        }],
    };
    assert_eq!(evidence.update(&cold, &settings), Verdict::Hold);
    assert_eq!(evidence.fail[0].ln_e(), 0.0);
    assert_eq!(evidence.update(&cold, &settings), Verdict::Fail);
}

/// The first verdict other than Hold over 200 ticks of `tick`, or Hold.
fn first_verdict(evidence: &mut RateEvidence, tick: &Tick, settings: &Settings) -> Verdict {
    (0..200)
        .map(|_| evidence.update(tick, settings))
        .find(|v| *v != Verdict::Hold)
        .unwrap_or(Verdict::Hold)
}

/// Defect found end to end: a primary seen for seconds before the canary (a few requests, none bad) made
/// its rate look like 0, so "1 point worse" became an odds ratio of about 100 and the relative pass leg
/// cleared a canary failing 3.3% against 1% in a few ticks: promoted at maxWeight before the fail test had
/// its proof. The tolerance is now set from an upper bound on the primary's rate.
#[test]
fn a_primary_seen_briefly_never_loosens_the_tolerance() {
    let settings = Settings::errors(1);
    let mut evidence = RateEvidence::before(Counts {
        requests: 20,
        bad: 0,
    });
    assert!(evidence.expected_high > 0.15, "{}", evidence.expected_high);
    let tick = Tick {
        canary: Counts {
            requests: 150,
            bad: 5,
        },
        primary: Counts {
            requests: 1350,
            bad: 13,
        },
    };
    assert_eq!(
        first_verdict(&mut evidence, &tick, &settings),
        Verdict::Fail
    );
    // With ten minutes of the primary, the bound is close to its rate.
    let known = RateEvidence::before(Counts {
        requests: 30_000,
        bad: 300,
    });
    assert!(
        (0.01..0.014).contains(&known.expected_high),
        "{}",
        known.expected_high
    );
}

/// Defect found re-reading the fix above: a primary with no requests at all before the canary has an
/// upper bound near 1, and "1 point worse" than 99% is an odds ratio of 10 — looser, not tighter. The
/// odds ratio of a fixed number of points is smallest near 50%, so the rate it is read at is the bound, but
/// never past the point where that ratio starts growing again. (In CI, a canary failing 2% against 1% was
/// promoted with such a primary.)
#[test]
fn a_primary_never_seen_never_loosens_the_tolerance() {
    let settings = Settings::errors(1);
    let mut evidence = RateEvidence::before(Counts::default());
    let tick = Tick {
        canary: Counts {
            requests: 500,
            bad: 10,
        },
        primary: Counts {
            requests: 500,
            bad: 5,
        },
    };
    assert_eq!(
        first_verdict(&mut evidence, &tick, &settings),
        Verdict::Fail
    );
}
