//! One replay: the decision core, tick by tick at the past times of a rollout, in a world that does at once
//! whatever the core decides (the primary created and promoted, the route at the weight asked, every pod
//! ready), with the checks run against Prometheus at each tick's time, as the controller would have run
//! them then. Webhooks are not called (they are side effects: load tests, gates): they are taken as
//! passed.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use crate::api::status::EvidenceStatus;
use crate::api::{Canary, CheckStatus, Phase};
use crate::decision::{
    ControllerDefaults, Need, Observed, Outcome, Primary, Readiness, Traffic, decide,
};
use crate::metrics::CheckRunner;
use crate::statistics::Verdict;
use crate::vocabulary::{Checks, HookCall};

/// The revision the replay's target holds before the rollout; the one analysed is the Canary's own
/// (status.lastAppliedSpec, as read from the cluster), else this.
const BEFORE: &str = "previous";
const REPLAYED: &str = "replayed";
/// Ticks at most, whatever the requeues (a 1-s interval over a day is 86,400).
const MAX_TICKS: usize = 100_000;

/// How a replay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Ending {
    Promoted,
    RolledBack,
    /// The time range ended first.
    Undecided,
    /// The spec cannot run (the InvalidSpec or NotSupported event says why).
    Invalid,
}

/// One compared metric after a tick.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Judged {
    pub name: String,
    pub verdict: Verdict,
    pub e_value: f64,
    pub fail_at: f64,
    pub canary_requests: u64,
    pub message: String,
}

impl From<&EvidenceStatus> for Judged {
    fn from(e: &EvidenceStatus) -> Self {
        Judged {
            name: e.name.clone(),
            verdict: e.verdict,
            e_value: e.e_value,
            fail_at: e.fail_at,
            canary_requests: e.canary_requests,
            message: e.message.clone(),
        }
    }
}

/// A tick that ran the checks, or ended the analysis.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TickRow {
    /// Seconds since the epoch.
    pub at: f64,
    pub phase: Phase,
    /// The canary's weight when the tick began (the weight the checks ran at).
    pub weight: i32,
    /// The round's verdict in words ("passed", or what failed, held or is not proven yet); none when the
    /// checks did not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub round: Option<String>,
    /// The fixed checks' results, and the compared metrics that held (no data, a failed query).
    pub checks: Vec<CheckStatus>,
    pub evidence: Vec<Judged>,
    /// The events of the tick, as "Reason: message".
    pub events: Vec<String>,
}

/// What one judge would have decided.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Replay {
    pub ending: Ending,
    /// When it was decided (seconds since the epoch); the range's end when undecided.
    pub at: f64,
    /// The canary's weight when it was decided.
    pub weight: i32,
    /// Why, in the core's words (the rollback's or promotion's event, else the last round's).
    pub message: String,
    pub ticks: Vec<TickRow>,
}

/// The world the core acts on.
struct World {
    o: Observed,
}

impl World {
    fn new(canary: &Canary, defaults: ControllerDefaults, at: f64) -> Self {
        World {
            o: Observed::first_sight(timestamp(at), canary.spec.clone(), defaults, BEFORE),
        }
    }

    /// One tick at `at`: the core decides (the checks run when it asks), the world does what it says.
    /// Returns when to tick next, and the row when the checks ran or the phase changed.
    async fn tick(
        &mut self,
        canary: &Canary,
        runner: &dyn CheckRunner,
        at: f64,
    ) -> (f64, Option<TickRow>) {
        self.o.now = timestamp(at);
        let before = self.o.status.phase;
        let weight = self.weight();
        let mut round = None;
        let decision = loop {
            match decide(&self.o) {
                Outcome::Act(d) => break *d,
                Outcome::Need(Need::Checks) => {
                    let mut canary = canary.clone();
                    canary.status = Some(self.o.status.clone());
                    let r = runner.run(&canary, at).await;
                    round = Some(r.clone());
                    self.o.checks = Some(r);
                }
                Outcome::Need(Need::Hooks(kind)) => {
                    let calls = self
                        .o
                        .spec
                        .active_analysis()
                        .map(|a| a.webhooks.clone())
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|h| h.kind() == kind)
                        .map(|h| HookCall {
                            name: h.name,
                            passed: true,
                            message: "not called in a backtest: taken as passed".into(),
                        })
                        .collect();
                    self.o.hooks.insert(kind, calls);
                }
            }
        };
        self.o.checks = None;
        self.o.hooks.clear();
        self.o.status = decision.status.clone();
        let d = &decision.desired;
        if let Some(revision) = &d.create_primary
            && self.o.primary.revision.is_none()
        {
            self.o.primary = Primary {
                revision: Some(revision.clone()),
                ready: Readiness::Ready,
            };
        }
        if let Some(revision) = &d.promote_primary {
            self.o.primary.revision = Some(revision.clone());
        }
        if d.apex {
            self.o.apex_to_primary = true;
        }
        if let Some(traffic) = d.traffic {
            self.o.routed = Some(traffic);
        }
        let next = at
            + decision
                .requeue_after
                .max(Duration::from_secs(1))
                .as_secs_f64();
        let phase = self.phase();
        let row = (round.is_some() || before != Some(phase)).then(|| TickRow {
            at,
            phase,
            weight,
            round: round.as_ref().map(|r| in_words(&r.verdict)),
            checks: round
                .as_ref()
                .map(|r| r.results.clone())
                .unwrap_or_default(),
            evidence: round
                .as_ref()
                .map(|r| r.evidence.iter().map(Judged::from).collect())
                .unwrap_or_default(),
            events: decision
                .events
                .iter()
                .map(|e| format!("{}: {}", e.reason.as_str(), e.message))
                .collect(),
        });
        (next, row)
    }

    fn phase(&self) -> Phase {
        self.o.status.phase.unwrap_or(Phase::Initializing)
    }

    fn weight(&self) -> i32 {
        match self.o.routed {
            Some(Traffic::Split(w)) => w.canary,
            _ => self.o.status.canary_weight,
        }
    }
}

fn in_words(verdict: &Checks) -> String {
    match verdict {
        Checks::Passed => "passed".into(),
        Checks::Failed { message } => format!("failed: {message}"),
        Checks::NoData { message } => format!("held: {message}"),
        Checks::Regressed { message } => format!("regressed: {message}"),
        Checks::Unproven { message } => format!("unproven: {message}"),
    }
}

fn timestamp(at: f64) -> Timestamp {
    Timestamp::from_millisecond((at * 1000.0).round() as i64).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Replays `canary`'s analysis of a new revision that appeared at `from`, until it ends or `to` passes.
pub async fn replay(
    canary: &Canary,
    defaults: ControllerDefaults,
    runner: &dyn CheckRunner,
    from: f64,
    to: f64,
) -> Replay {
    let mut world = World::new(canary, defaults, from);
    let mut ticks = Vec::new();
    // Initialized on the revision before (at once: every pod is ready), then the new revision appears.
    for _ in 0..8 {
        let (_, row) = world.tick(canary, runner, from).await;
        ticks.extend(row);
        if world.phase() == Phase::Initialized {
            break;
        }
    }
    if world.phase() != Phase::Initialized {
        return ended(ticks, Ending::Invalid, from, 0);
    }
    ticks.clear();
    world.o.target.revision = canary
        .status
        .as_ref()
        .and_then(|s| s.last_applied_spec.clone())
        .filter(|r| !r.is_empty() && r != BEFORE)
        .unwrap_or_else(|| REPLAYED.into());
    let mut at = from;
    for _ in 0..MAX_TICKS {
        if at > to {
            break;
        }
        // The weight the decision is taken at: a rollback moves the route in the same tick.
        let weight = world.weight();
        let (next, row) = world.tick(canary, runner, at).await;
        let invalid = row
            .as_ref()
            .is_some_and(|r| r.events.iter().any(|e| cannot_run(e)));
        ticks.extend(row);
        let ending = match world.phase() {
            Phase::Promoting | Phase::Finalising | Phase::Succeeded => Some(Ending::Promoted),
            Phase::Failed => Some(Ending::RolledBack),
            _ if invalid => Some(Ending::Invalid),
            _ => None,
        };
        if let Some(ending) = ending {
            return ended(ticks, ending, at, weight);
        }
        at = next;
    }
    ended(ticks, Ending::Undecided, to, world.weight())
}

/// An event saying the spec cannot run: invalid, or asking for what Serin does not support.
fn cannot_run(event: &str) -> bool {
    event.starts_with("InvalidSpec:") || event.starts_with("NotSupported:")
}

fn ended(ticks: Vec<TickRow>, ending: Ending, at: f64, weight: i32) -> Replay {
    let event = |prefixes: &[&str]| {
        ticks
            .iter()
            .rev()
            .flat_map(|t| t.events.iter().rev())
            .find(|e| prefixes.iter().any(|p| e.starts_with(p)))
            .cloned()
    };
    let last_round = ticks.iter().rev().find(|t| t.round.is_some());
    let message = match ending {
        Ending::RolledBack => event(&["Regressed:", "RolledBack:"]),
        Ending::Invalid => event(&["InvalidSpec:", "NotSupported:"]),
        // What the last round proved or measured: the judge's words, else the checks'.
        Ending::Promoted => last_round.map(|t| {
            let words: Vec<String> = t
                .evidence
                .iter()
                .map(|e| e.message.clone())
                .chain(t.checks.iter().filter_map(|c| c.message.clone()))
                .collect();
            if words.is_empty() {
                format!("every check passed at weight {weight}")
            } else {
                words.join("; ")
            }
        }),
        Ending::Undecided => last_round.and_then(|t| t.round.clone()),
    }
    .unwrap_or_default();
    Replay {
        ending,
        at,
        weight,
        message,
        ticks,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures::future::BoxFuture;
    use serde_json::json;

    use super::*;
    use crate::api::Provider;
    use crate::vocabulary::CheckRound;

    const FROM: f64 = 1_800_000_000.0;

    /// Answers each round with the next verdict of its script (the last one again when it runs out), and
    /// remembers when it was asked.
    struct Scripted {
        script: Vec<Checks>,
        asked: Mutex<Vec<f64>>,
    }

    impl CheckRunner for Scripted {
        fn run<'a>(&'a self, _: &'a Canary, at: f64) -> BoxFuture<'a, CheckRound> {
            let mut asked = self.asked.lock().unwrap();
            let verdict = self.script[asked.len().min(self.script.len() - 1)].clone();
            asked.push(at);
            Box::pin(std::future::ready(CheckRound::from(verdict)))
        }
    }

    fn canary() -> Canary {
        serde_json::from_value(json!({"apiVersion": "serin.dev/v1beta1", "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "shop"},
            "spec": {"provider": "gatewayapi",
                "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                "service": {"port": 9898},
                "analysis": {"interval": "1m", "stepWeight": 10, "maxWeight": 30, "threshold": 2,
                    "metrics": [{"name": "request-success-rate", "thresholdRange": {"min": 99}}]}}}))
        .unwrap()
    }

    fn defaults() -> ControllerDefaults {
        ControllerDefaults {
            provider: Provider::GatewayApi,
            min_interval: Duration::from_secs(1),
        }
    }

    async fn replayed(script: Vec<Checks>, to: f64) -> (Replay, Vec<f64>) {
        let runner = Scripted {
            script,
            asked: Mutex::new(vec![]),
        };
        let r = replay(&canary(), defaults(), &runner, FROM, to).await;
        (r, runner.asked.into_inner().unwrap())
    }

    #[tokio::test]
    async fn checks_that_pass_promote_after_the_steps_a_minute_apart() {
        let (r, asked) = replayed(vec![Checks::Passed], FROM + 3600.0).await;
        assert_eq!(r.ending, Ending::Promoted, "{r:#?}");
        // Steps to 10, 20, 30 a minute apart, the checks passing at each; promoted after the last.
        assert_eq!(r.weight, 30);
        assert!(
            r.at - FROM <= 4.0 * 60.0 + 1.0,
            "promoted at +{}",
            r.at - FROM
        );
        assert!(asked.len() >= 3, "{asked:?}");
        assert!(
            asked.windows(2).all(|w| (w[1] - w[0] - 60.0).abs() < 1.0),
            "{asked:?}"
        );
        assert_eq!(r.message, "every check passed at weight 30");
        let weights: Vec<i32> = r.ticks.iter().map(|t| t.weight).collect();
        assert!(weights.contains(&30), "{weights:?}");
    }

    #[tokio::test]
    async fn a_proven_regression_rolls_back_at_the_weight_it_was_proven() {
        let regressed = Checks::Regressed {
            message: "request-success-rate: regression proven".into(),
        };
        let (r, _) = replayed(vec![Checks::Passed, regressed], FROM + 3600.0).await;
        assert_eq!(r.ending, Ending::RolledBack, "{r:#?}");
        // Passed at 10, stepped to 20, proven worse there.
        assert_eq!(r.weight, 20);
        assert!(r.message.contains("regression proven"), "{}", r.message);
        let last = r.ticks.last().unwrap();
        assert_eq!(last.phase, Phase::Failed);
    }

    #[tokio::test]
    async fn the_range_ending_first_leaves_it_undecided_where_it_held() {
        let unproven = Checks::Unproven {
            message: "request-success-rate: not proven either way yet".into(),
        };
        let (r, asked) = replayed(vec![unproven], FROM + 600.0).await;
        assert_eq!(r.ending, Ending::Undecided, "{r:#?}");
        assert_eq!(r.at, FROM + 600.0);
        // Stepping on while unproven, holding at maxWeight until the range ends.
        assert_eq!(r.weight, 30);
        assert!(asked.iter().all(|&t| t <= FROM + 600.0), "{asked:?}");
        assert!(r.message.contains("not proven"), "{}", r.message);
    }
}
