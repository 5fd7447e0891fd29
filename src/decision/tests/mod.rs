//! Tick-by-tick tests of the decision core: a small world that does at once whatever the decision asks.

mod canary;
mod evidence;
mod gates;
mod manual;
mod revisions;
mod safety;
mod spec;
mod strategies;
mod write_back;

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use super::*;
use crate::api::{Phase, Provider};
use crate::routing::Router;
use crate::routing::gatewayapi::{self, as_stored};

pub(super) struct World {
    pub(super) o: Observed,
    /// Every weight the route was set to, in order, without repeats.
    pub(super) weights: Vec<i32>,
    pub(super) primary_revision_writes: usize,
    /// Primaries created (at initialization, or rebuilt), by revision.
    pub(super) primaries_created: Vec<String>,
    /// The route as the API server stores it (its defaults filled in); None until one is written.
    pub(super) route: Option<kube::api::DynamicObject>,
    pub(super) events: Vec<Event>,
    pub(super) notices: Vec<Notice>,
    pub(super) asked_for_checks: usize,
    /// How each kind of webhook answers: passed or not, by webhook name (absent: passes).
    pub(super) hook_answers: std::collections::BTreeMap<String, bool>,
    /// The webhook kinds the core asked for, tick by tick.
    pub(super) asked_for_hooks: Vec<crate::api::analysis::HookType>,
    pub(super) post_rollouts: Vec<crate::api::Phase>,
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
        let o = Observed::first_sight(
            Timestamp::from_second(1_800_000_000).unwrap(),
            spec,
            ControllerDefaults {
                provider: Provider::GatewayApi,
                min_interval: Duration::from_secs(1),
            },
            "r1",
        );
        World {
            o,
            weights: vec![],
            primary_revision_writes: 0,
            primaries_created: vec![],
            route: None,
            events: vec![],
            notices: vec![],
            asked_for_checks: 0,
            hook_answers: Default::default(),
            asked_for_hooks: vec![],
            post_rollouts: vec![],
        }
    }

    /// Ticks until the Canary is Initialized: the primary created, then the apex Service and the route
    /// switched to it, then the target scaled to zero.
    pub(super) fn initialize(&mut self) {
        for _ in 0..4 {
            self.tick(None);
            if self.phase() == Phase::Initialized {
                return;
            }
        }
        panic!("not initialized; at {:?}", self.phase());
    }

    /// A world whose Canary is initialized at r1 and whose target then changed to r2.
    pub(super) fn progressing(analysis: serde_json::Value) -> Self {
        let mut w = World::new(spec(analysis));
        w.initialize();
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
        let mut round = round;
        let decision = loop {
            match decide(&self.o) {
                Outcome::Act(d) => break *d,
                Outcome::Need(Need::Checks) => {
                    assert!(self.o.checks.is_none(), "asked for checks twice");
                    self.asked_for_checks += 1;
                    self.o.checks = Some(round.take().expect("the core asked for checks"));
                }
                Outcome::Need(Need::Hooks(kind)) => {
                    assert!(!self.o.hooks.contains_key(&kind), "asked for {kind} twice");
                    self.asked_for_hooks.push(kind);
                    let calls = self.call_hooks(kind);
                    self.o.hooks.insert(kind, calls);
                }
            }
        };
        self.o.checks = None;
        self.o.hooks.clear();
        self.notices.extend(decision.notices.clone());
        self.post_rollouts.extend(decision.post_rollout);
        self.o.status = decision.status.clone();
        let d = &decision.desired;
        if let Some(revision) = &d.create_primary
            && self.o.primary.revision.is_none()
            && *revision == self.o.target.revision
        {
            self.o.primary = Primary {
                revision: Some(revision.clone()),
                ready: Readiness::Ready,
            };
            self.primaries_created.push(revision.clone());
        }
        if let Some(revision) = &d.promote_primary {
            self.o.primary.revision = Some(revision.clone());
            self.primary_revision_writes += 1;
        }
        if d.apex {
            self.o.apex_to_primary = true;
        }
        if let Some(traffic) = d.traffic {
            // Through the real router, stored as the API server stores it, and read back from that.
            let route = gatewayapi::V1
                .desired(&self.canary(), traffic)
                .expect("a route")
                .remove(0);
            self.route = Some(as_stored(route));
            self.read_back_route();
            if let Traffic::Split(w) = traffic
                && self.weights.last() != Some(&w.canary)
            {
                self.weights.push(w.canary);
            }
        }
        self.events.extend(decision.events.clone());
        decision
    }

    /// The webhooks of `kind` answering as `hook_answers` says, stopping as the controller does.
    fn call_hooks(&self, kind: crate::api::analysis::HookType) -> Vec<HookCall> {
        let hooks = self
            .o
            .spec
            .active_analysis()
            .map(|a| a.webhooks.clone())
            .unwrap_or_default();
        let mut calls = vec![];
        for h in hooks.iter().filter(|h| h.kind() == kind) {
            let passed = *self.hook_answers.get(&h.name).unwrap_or(&true);
            calls.push(HookCall {
                name: h.name.clone(),
                passed,
                message: if passed {
                    "HTTP 200".into()
                } else {
                    "HTTP 403: closed".into()
                },
            });
            if kind.stops_after(passed) {
                break;
            }
        }
        calls
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

    /// The Canary the routes are built for.
    pub(super) fn canary(&self) -> crate::api::Canary {
        serde_json::from_value(json!({
            "apiVersion": "serin.dev/v1beta1", "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "shop", "uid": "u1"},
            "spec": self.o.spec,
        }))
        .unwrap()
    }

    /// What the controller observes of the route: read back by the router from the stored object.
    pub(super) fn read_back_route(&mut self) {
        self.o.routed = self
            .route
            .as_ref()
            .and_then(|r| gatewayapi::V1.traffic(&self.canary(), r));
    }

    /// Someone (or a crash between writes) left the route's catch-all split at `canary` percent.
    pub(super) fn route_says(&mut self, canary: i32) {
        let route = self.route.as_mut().expect("a route");
        let backends = &mut route.data["spec"]["rules"][0]["backendRefs"];
        backends[0]["weight"] = json!(100 - canary);
        backends[1]["weight"] = json!(canary);
        self.read_back_route();
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
