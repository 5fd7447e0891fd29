//! Tick-by-tick tests of the decision core: a small world that does at once whatever the decision asks.

mod canary;
mod spec;
mod strategies;

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use super::*;
use crate::api::{CanaryStatus, Phase, Provider};

pub(super) struct World {
    pub(super) o: Observed,
    /// Every weight the route was set to, in order, without repeats.
    pub(super) weights: Vec<i32>,
    pub(super) primary_revision_writes: usize,
    pub(super) events: Vec<Event>,
    pub(super) asked_for_checks: usize,
}

pub(super) fn spec(analysis: serde_json::Value) -> CanarySpec {
    serde_json::from_value(json!({
        "provider": "gatewayapi",
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
        "service": {"port": 9898},
        "analysis": analysis,
    }))
    .unwrap()
}

impl World {
    pub(super) fn new(spec: CanarySpec) -> Self {
        let o = Observed {
            now: Timestamp::from_second(1_800_000_000).unwrap(),
            generation: 1,
            spec,
            status: CanaryStatus::default(),
            defaults: ControllerDefaults {
                provider: Provider::GatewayApi,
                min_interval: Duration::from_secs(1),
            },
            target: Target {
                revision: "r1".into(),
                ready: Readiness::Ready,
            },
            primary: Primary {
                revision: None,
                ready: Readiness::NotReady("not created".into()),
            },
            weights: None,
            checks: None,
            retry: None,
        };
        World {
            o,
            weights: vec![],
            primary_revision_writes: 0,
            events: vec![],
            asked_for_checks: 0,
        }
    }

    /// A world whose Canary is initialized at r1 and whose target then changed to r2.
    pub(super) fn progressing(analysis: serde_json::Value) -> Self {
        let mut w = World::new(spec(analysis));
        w.tick(None);
        w.tick(None);
        assert_eq!(w.phase(), Phase::Initialized);
        w.o.target.revision = "r2".into();
        w.tick(None);
        assert_eq!(w.phase(), Phase::Progressing);
        w
    }

    pub(super) fn phase(&self) -> Phase {
        self.o.status.phase.unwrap()
    }

    pub(super) fn later(&mut self, secs: i64) {
        self.o.now = self
            .o
            .now
            .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(secs))
            .unwrap();
    }

    /// One tick; `checks` answers if the core asks for them (and must be given then).
    pub(super) fn tick(&mut self, checks: Option<Checks>) -> Decision {
        self.tick_round(checks.map(CheckRound::from))
    }

    /// One tick whose checks, if asked for, answer with `round` (results included).
    pub(super) fn tick_round(&mut self, round: Option<CheckRound>) -> Decision {
        let decision = match decide(&self.o) {
            Outcome::RunChecks => {
                self.asked_for_checks += 1;
                self.o.checks = Some(round.expect("the core asked for checks"));
                match decide(&self.o) {
                    Outcome::Act(d) => *d,
                    Outcome::RunChecks => panic!("asked for checks twice"),
                }
            }
            Outcome::Act(d) => *d,
        };
        self.o.checks = None;
        self.o.status = decision.status.clone();
        let d = &decision.desired;
        if d.bootstrap && self.o.primary.revision.is_none() {
            self.o.primary = Primary {
                revision: Some(self.o.target.revision.clone()),
                ready: Readiness::Ready,
            };
        }
        if let Some(revision) = &d.promote_primary {
            self.o.primary.revision = Some(revision.clone());
            self.primary_revision_writes += 1;
        }
        if let Some(Traffic::Split(w)) = d.traffic {
            self.o.weights = Some(w);
            if self.weights.last() != Some(&w.canary) {
                self.weights.push(w.canary);
            }
        }
        self.events.extend(decision.events.clone());
        decision
    }

    /// Ticks an interval later each time, until the phase is one of `until`.
    pub(super) fn run(&mut self, interval: i64, checks: Checks, until: &[Phase]) {
        for _ in 0..100 {
            if until.contains(&self.phase()) {
                return;
            }
            self.later(interval);
            self.tick(Some(checks.clone()));
        }
        panic!("never reached {until:?}; at {:?}", self.phase());
    }

    pub(super) fn reasons(&self) -> Vec<Reason> {
        self.events.iter().map(|e| e.reason).collect()
    }

    pub(super) fn condition(&self, kind: &str) -> (String, String) {
        let c = self
            .o
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == kind)
            .unwrap_or_else(|| panic!("no {kind} condition"));
        (c.status.clone(), c.message.clone().unwrap_or_default())
    }
}

pub(super) fn failed(message: &str) -> Checks {
    Checks::Failed {
        message: message.into(),
    }
}
