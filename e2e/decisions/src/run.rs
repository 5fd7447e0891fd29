//! One cell of the grid: many simulated canaries per judge, each on Flagger's schedule, summed up.

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::judges::{Decision, Flagger, Judge, Sequential};
use crate::kayenta::Kayenta;
use crate::world::{Cell, World};

pub const MAX_WEIGHT: u32 = 50;
pub const STEP: u32 = 10;
/// An hour of 60-s ticks.
pub const DEADLINE: usize = 60;

pub const JUDGES: [&str; 5] = [
    "flagger-tutorial",
    "flagger-tuned-5",
    "flagger-tuned-2",
    "kayenta-style",
    "ours",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Promoted(usize),
    RolledBack(usize),
    TimedOut,
}

/// How a judge's canaries ended in one cell.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub cell: Cell,
    pub judge: &'static str,
    pub endings: Vec<Ending>,
}

impl Outcome {
    pub fn runs(&self) -> usize {
        self.endings.len()
    }

    pub fn share(&self, pick: impl Fn(&Ending) -> bool) -> f64 {
        self.endings.iter().filter(|e| pick(e)).count() as f64 / self.runs().max(1) as f64
    }

    pub fn rolled_back(&self) -> f64 {
        self.share(|e| matches!(e, Ending::RolledBack(_)))
    }

    pub fn promoted(&self) -> f64 {
        self.share(|e| matches!(e, Ending::Promoted(_)))
    }

    pub fn timed_out(&self) -> f64 {
        self.share(|e| matches!(e, Ending::TimedOut))
    }

    /// The median minute of the endings `pick` selects (ticks are minutes), None if there are none.
    pub fn median_minutes(&self, pick: impl Fn(&Ending) -> Option<usize>) -> Option<f64> {
        let mut minutes: Vec<usize> = self.endings.iter().filter_map(pick).collect();
        if minutes.is_empty() {
            return None;
        }
        minutes.sort_unstable();
        Some(minutes[minutes.len() / 2] as f64)
    }

    pub fn median_rollback(&self) -> Option<f64> {
        self.median_minutes(|e| {
            if let Ending::RolledBack(t) = e {
                Some(*t)
            } else {
                None
            }
        })
    }

    pub fn median_promotion(&self) -> Option<f64> {
        self.median_minutes(|e| {
            if let Ending::Promoted(t) = e {
                Some(*t)
            } else {
                None
            }
        })
    }
}

fn judge_named(name: &str, cell: &Cell, world: &World, rng: &mut StdRng) -> Box<dyn Judge> {
    // Tuned thresholds: success at least 100 - (baseline + τ/2) in percent, τ = 1 point.
    let tuned_success = 100.0 - (cell.baseline * 100.0 + 0.5);
    let flagger = |min_success, max_p99, p99_over_primary, threshold| {
        Box::new(Flagger {
            min_success,
            max_p99,
            p99_over_primary,
            threshold,
            failed: 0,
        }) as Box<dyn Judge>
    };
    match name {
        "flagger-tutorial" => flagger(99.0, Some(0.5), None, 5),
        "flagger-tuned-5" => flagger(tuned_success, None, Some(1.05), 5),
        "flagger-tuned-2" => flagger(tuned_success, None, Some(1.05), 2),
        "kayenta-style" => Box::new(Kayenta::default()),
        "ours" => {
            let (before, windows) = world.before(rng);
            Box::new(Sequential::new(&before, &windows))
        }
        other => unreachable!("no judge {other}"),
    }
}

/// `runs` canaries of `cell` through judge `name`, seeded by `seed`.
pub fn run(cell: Cell, name: &'static str, runs: usize, seed: u64) -> Outcome {
    let world = World::new(cell);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut endings = Vec::with_capacity(runs);
    for _ in 0..runs {
        let mut judge = judge_named(name, &cell, &world, &mut rng);
        let mut weight = STEP;
        let mut ending = Ending::TimedOut;
        for t in 0..DEADLINE {
            let observation = world.tick(&mut rng, t, weight);
            match judge.tick(observation.as_ref(), weight >= MAX_WEIGHT) {
                Decision::RollBack => {
                    ending = Ending::RolledBack(t + 1);
                    break;
                }
                Decision::Advance if weight >= MAX_WEIGHT => {
                    ending = Ending::Promoted(t + 1);
                    break;
                }
                Decision::Advance => weight += STEP,
                Decision::Hold => {}
            }
        }
        endings.push(ending);
    }
    Outcome {
        cell,
        judge: name,
        endings,
    }
}
