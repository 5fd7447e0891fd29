//! What Serin tells about itself: logs (text or JSON, a span per canary) and Prometheus metrics.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::api::status::EvidenceStatus;
use crate::api::{CheckStatus, Phase};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Logs to stderr; RUST_LOG filters (default info).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CanaryLabels {
    pub name: String,
    pub namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    pub name: String,
    pub namespace: String,
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MetricLabels {
    pub name: String,
    pub namespace: String,
    pub metric: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ThresholdLabels {
    pub name: String,
    pub namespace: String,
    pub metric: String,
    /// min or max: the end of thresholdRange.
    pub bound: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteBackLabels {
    /// The write-back's phase after a round (Pushed, Applied, AlreadyUpToDate, Superseded, DryRun), or
    /// Failed's reason (AuthFailed, PushRejected, NotFound, ...).
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    /// The webhook's type (confirm-rollout, rollout, ...).
    pub r#type: String,
    /// passed (answered 202 or less) or failed.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabels {
    /// slack, msteams, discord, rocket, gchat, or webhook (event webhooks).
    pub provider: String,
    pub severity: String,
    /// delivered, failed (after its retries), dropped (the queue was full).
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// watch, list, get, create, patch, update, delete.
    pub verb: String,
    pub resource: String,
}

/// (metric, bound): one end of a check's range with a series.
type MetricBound = (String, String);

pub struct Metrics {
    registry: Registry,
    /// Every request to the API server, by verb and resource.
    pub api_requests: Family<RequestLabels, Counter>,
    /// The last value of each check, in its unit (percent, milliseconds, or the template's).
    pub metric_value: Family<MetricLabels, Gauge<f64, AtomicU64>>,
    /// The sequential judge's fail e-value of each metric compared with the primary.
    pub evidence: Family<MetricLabels, Gauge<f64, AtomicU64>>,
    /// Each check's thresholdRange ends, so dashboards draw the line a value is judged against.
    pub thresholds: Family<ThresholdLabels, Gauge<f64, AtomicU64>>,
    /// Rounds of checks run, and the metrics queries they sent.
    pub check_rounds: Counter,
    pub metric_queries: Counter,
    /// 0 progressing, 1 succeeded or initialized, 2 failed (Flagger's flagger_canary_status).
    pub status: Family<CanaryLabels, Gauge>,
    /// The canary's share of traffic, percent.
    pub weight: Family<CanaryLabels, Gauge>,
    pub transitions: Family<TransitionLabels, Counter>,
    pub reconcile_seconds: Histogram,
    /// How late each scheduled tick ran against its schedule (a tick woken early by a watch is not one).
    pub tick_lateness_seconds: Histogram,
    pub reconcile_errors: Counter,
    /// Writes refused because this replica did not lead (its lease lost or not renewed in time).
    pub fenced_writes: Counter,
    /// Writes Serin made to the API server: a settled Canary makes none.
    pub api_writes: Counter,
    /// Webhook calls, by type and result.
    pub webhook_calls: Family<WebhookLabels, Counter>,
    /// Roll forwards in git, by result; and how long a round of writing took.
    pub write_backs: Family<WriteBackLabels, Counter>,
    pub write_back_seconds: Histogram,
    pub notifications: Family<NotificationLabels, Counter>,
    pub notification_queue: Gauge,
    /// 1 while this replica leads (or runs without leader election), 0 while it stands by: the fleet's
    /// sum says whether anyone is acting.
    pub leader: Gauge,
    /// Sharding: the live members this replica sees (itself included), and 1 once it takes its share.
    pub shard_members: Gauge,
    pub shard_taking: Gauge,
    /// The checks, and the compared metrics, with a series on /metrics, by (namespace, canary).
    exported_checks: Mutex<HashMap<(String, String), BTreeSet<String>>>,
    exported_evidence: Mutex<HashMap<(String, String), BTreeSet<String>>>,
    exported_thresholds: Mutex<HashMap<(String, String), BTreeSet<MetricBound>>>,
    /// The Canaries with series on /metrics, by (namespace, name), so those deleted can be dropped.
    exported_canaries: Mutex<BTreeSet<(String, String)>>,
    lock: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("serin");
        let status = Family::<CanaryLabels, Gauge>::default();
        let weight = Family::<CanaryLabels, Gauge>::default();
        let transitions = Family::<TransitionLabels, Counter>::default();
        let reconcile_seconds = Histogram::new([
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ]);
        let reconcile_errors = Counter::default();
        let fenced_writes = Counter::default();
        registry.register(
            "fenced_writes",
            "Writes refused because this replica did not hold the leader lease (lost, or not renewed within the renew deadline)",
            fenced_writes.clone(),
        );
        let api_writes = Counter::default();
        let metric_value = Family::<MetricLabels, Gauge<f64, AtomicU64>>::default();
        let evidence = Family::<MetricLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "canary_evidence",
            "The sequential judge's fail e-value of each metric compared with the primary (a regression is proven at metrics/falseRollbackRate, 100 for one metric)",
            evidence.clone(),
        );
        let thresholds = Family::<ThresholdLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "canary_metric_threshold",
            "Each check's thresholdRange ends (bound min or max), in the unit of serin_canary_metric_value",
            thresholds.clone(),
        );
        let api_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "api_requests",
            "Requests to the API server by verb (watch, list, get, create, patch, update, delete) and resource",
            api_requests.clone(),
        );
        let check_rounds = Counter::default();
        let metric_queries = Counter::default();
        registry.register(
            "check_rounds",
            "Rounds of canary checks run (one per analysis step that needs evidence)",
            check_rounds.clone(),
        );
        registry.register(
            "metric_queries",
            "Queries sent to metrics providers",
            metric_queries.clone(),
        );
        registry.register(
            "canary_metric_value",
            "The last value of each canary check (percent, milliseconds, or the template's unit)",
            metric_value.clone(),
        );
        registry.register(
            "canary_status",
            "Canary status: 0 progressing, 1 succeeded or initialized, 2 failed",
            status.clone(),
        );
        registry.register(
            "canary_weight",
            "The canary's share of traffic, percent",
            weight.clone(),
        );
        registry.register(
            "canary_phase_transitions",
            "Phase changes, by the phase entered",
            transitions.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time to reconcile one Canary",
            reconcile_seconds.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciles that ended in an error",
            reconcile_errors.clone(),
        );
        registry.register(
            "api_writes",
            "Writes to the API server (object applies, status applies, events)",
            api_writes.clone(),
        );
        let webhook_calls = Family::<WebhookLabels, Counter>::default();
        registry.register(
            "webhook_calls",
            "Canary webhook calls by type and result (passed: answered 202 or less)",
            webhook_calls.clone(),
        );
        let notifications = Family::<NotificationLabels, Counter>::default();
        registry.register(
            "notifications",
            "Alerts and event webhook posts by provider, severity and outcome (delivered, failed after its retries, dropped from a full queue)",
            notifications.clone(),
        );
        let notification_queue = Gauge::default();
        registry.register(
            "notification_queue_depth",
            "Notifications waiting to be sent",
            notification_queue.clone(),
        );
        let tick_lateness_seconds = Histogram::new([
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        ]);
        registry.register(
            "tick_lateness_seconds",
            "How late each scheduled analysis tick ran against its schedule (requeue time): the controller's backlog",
            tick_lateness_seconds.clone(),
        );
        let write_backs = Family::<WriteBackLabels, Counter>::default();
        registry.register(
            "writeback",
            "Roll forwards in git by result: a phase (Pushed, Applied, AlreadyUpToDate, Superseded, DryRun) or a failure's reason (AuthFailed, PushRejected, NotFound, Ambiguous, NoSource, ...)",
            write_backs.clone(),
        );
        let write_back_seconds = Histogram::new([0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]);
        registry.register(
            "writeback_duration_seconds",
            "How long a round of writing back took: fetch, locate, commit, push (with its retries)",
            write_back_seconds.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica leads and acts (or runs without leader election), 0 while it stands by",
            leader.clone(),
        );
        let shard_members = Gauge::default();
        registry.register(
            "shard_members",
            "With --sharding: the live replicas this one sees, itself included (0 while it is not a member)",
            shard_members.clone(),
        );
        let shard_taking = Gauge::default();
        registry.register(
            "shard_taking",
            "With --sharding: 1 once this replica acts on its share (after the join delay), else 0",
            shard_taking.clone(),
        );
        Metrics {
            registry,
            webhook_calls,
            write_backs,
            write_back_seconds,
            notifications,
            notification_queue,
            leader,
            shard_members,
            shard_taking,
            metric_value,
            evidence,
            thresholds,
            api_requests,
            check_rounds,
            metric_queries,
            status,
            weight,
            transitions,
            reconcile_seconds,
            tick_lateness_seconds,
            reconcile_errors,
            fenced_writes,
            api_writes,
            exported_checks: Mutex::new(HashMap::new()),
            exported_evidence: Mutex::new(HashMap::new()),
            exported_thresholds: Mutex::new(HashMap::new()),
            exported_canaries: Mutex::new(BTreeSet::new()),
            lock: Mutex::new(()),
        }
    }
}

impl Metrics {
    /// A round of writing back ended in `phase` (Failed: counted by its reason).
    pub fn write_back(
        &self,
        phase: crate::api::write_back::WriteBackPhase,
        reason: Option<&str>,
        took: Duration,
    ) {
        let result = match (phase, reason) {
            (crate::api::write_back::WriteBackPhase::Failed, Some(r)) => r,
            (p, _) => p.as_str(),
        };
        self.write_backs
            .get_or_create(&WriteBackLabels {
                result: result.into(),
            })
            .inc();
        if !took.is_zero() {
            self.write_back_seconds.observe(took.as_secs_f64());
        }
    }

    pub fn webhook_called(&self, kind: crate::api::analysis::HookType, passed: bool) {
        let result = if passed { "passed" } else { "failed" };
        self.webhook_calls
            .get_or_create(&WebhookLabels {
                r#type: kind.as_str().into(),
                result: result.into(),
            })
            .inc();
    }

    pub fn observe_canary(
        &self,
        name: &str,
        namespace: &str,
        phase: Option<Phase>,
        weight: i32,
        entered: Option<Phase>,
    ) {
        let labels = CanaryLabels {
            name: name.into(),
            namespace: namespace.into(),
        };
        self.exported_canaries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((namespace.to_string(), name.to_string()));
        let status = match phase {
            Some(Phase::Failed) => 2,
            Some(Phase::Succeeded | Phase::Initialized) => 1,
            _ => 0,
        };
        self.status.get_or_create(&labels).set(status);
        self.weight.get_or_create(&labels).set(i64::from(weight));
        if let Some(p) = entered {
            let t = TransitionLabels {
                name: name.into(),
                namespace: namespace.into(),
                phase: p.as_str().into(),
            };
            self.transitions.get_or_create(&t).inc();
        }
    }

    /// Records the values a round of checks measured. A check without a value (no data, an error) has no
    /// series until it has one again, like a check no longer in the analysis: /metrics shows no stale value.
    /// The e-values of the metrics compared with the primary, likewise.
    pub fn observe_checks(
        &self,
        name: &str,
        namespace: &str,
        results: &[CheckStatus],
        evidence: &[EvidenceStatus],
    ) {
        let values = results
            .iter()
            .filter_map(|r| r.value.map(|v| (r.name.clone(), v)));
        export(
            &self.metric_value,
            &self.exported_checks,
            name,
            namespace,
            values.collect(),
        );
        self.export_thresholds(name, namespace, results);
        let e_values = evidence.iter().map(|e| (e.name.clone(), e.e_value));
        export(
            &self.evidence,
            &self.exported_evidence,
            name,
            namespace,
            e_values.collect(),
        );
    }

    /// The ends of each check's range; an end no longer set (or a check gone) loses its series.
    fn export_thresholds(&self, name: &str, namespace: &str, results: &[CheckStatus]) {
        let labels = |metric: &str, bound: &str| ThresholdLabels {
            name: name.into(),
            namespace: namespace.into(),
            metric: metric.into(),
            bound: bound.into(),
        };
        let mut now = BTreeSet::new();
        for check in results {
            let Some(range) = &check.threshold_range else {
                continue;
            };
            for (bound, value) in [("min", range.min), ("max", range.max)] {
                if let Some(v) = value {
                    self.thresholds
                        .get_or_create(&labels(&check.name, bound))
                        .set(v);
                    now.insert((check.name.clone(), bound.to_string()));
                }
            }
        }
        let mut exported = self
            .exported_thresholds
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let key = (namespace.to_string(), name.to_string());
        for (metric, bound) in exported
            .get(&key)
            .into_iter()
            .flatten()
            .filter(|k| !now.contains(*k))
        {
            self.thresholds.remove(&labels(metric, bound));
        }
        if now.is_empty() {
            exported.remove(&key);
        } else {
            exported.insert(key, now);
        }
    }

    pub fn forget_canary(&self, name: &str, namespace: &str) {
        let labels = CanaryLabels {
            name: name.into(),
            namespace: namespace.into(),
        };
        self.status.remove(&labels);
        self.weight.remove(&labels);
        for phase in Phase::ALL {
            self.transitions.remove(&TransitionLabels {
                name: name.into(),
                namespace: namespace.into(),
                phase: phase.as_str().into(),
            });
        }
        self.observe_checks(name, namespace, &[], &[]);
        for exported in [&self.exported_checks, &self.exported_evidence] {
            exported
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&(namespace.to_string(), name.to_string()));
        }
        self.exported_canaries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(namespace.to_string(), name.to_string()));
    }

    /// Drops the series of every Canary `exists` says is gone (after a watch restarted, deletions made
    /// while it was down come as a new list, not as events).
    pub fn retain_canaries(&self, exists: impl Fn(&str, &str) -> bool) {
        let gone: Vec<(String, String)> = self
            .exported_canaries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(ns, name)| !exists(ns, name))
            .cloned()
            .collect();
        for (ns, name) in gone {
            self.forget_canary(&name, &ns);
        }
    }

    pub fn reconciled(&self, took: Duration, failed: bool) {
        self.reconcile_seconds.observe(took.as_secs_f64());
        if failed {
            self.reconcile_errors.inc();
        }
    }

    pub fn render(&self) -> String {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Sets one gauge per metric of a Canary, and drops the series of its metrics that have no value now.
fn export(
    family: &Family<MetricLabels, Gauge<f64, AtomicU64>>,
    exported: &Mutex<HashMap<(String, String), BTreeSet<String>>>,
    name: &str,
    namespace: &str,
    values: Vec<(String, f64)>,
) {
    for (metric, v) in &values {
        family
            .get_or_create(&metric_labels(name, namespace, metric))
            .set(*v);
    }
    let valued: BTreeSet<String> = values.into_iter().map(|(m, _)| m).collect();
    let mut exported = exported.lock().unwrap_or_else(|p| p.into_inner());
    let key = (namespace.to_string(), name.to_string());
    for gone in exported
        .get(&key)
        .into_iter()
        .flatten()
        .filter(|m| !valued.contains(*m))
    {
        family.remove(&metric_labels(name, namespace, gone));
    }
    exported.insert(key, valued);
}

fn metric_labels(name: &str, namespace: &str, metric: &str) -> MetricLabels {
    MetricLabels {
        name: name.into(),
        namespace: namespace.into(),
        metric: metric.into(),
    }
}

impl crate::notify::delivery::Counter for Metrics {
    fn count(&self, provider: &str, severity: crate::api::analysis::Severity, outcome: &str) {
        self.notifications
            .get_or_create(&NotificationLabels {
                provider: provider.into(),
                severity: severity.as_str().into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    fn depth(&self, depth: usize) {
        self.notification_queue
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::CheckVerdict;

    fn result(name: &str, value: Option<f64>) -> CheckStatus {
        CheckStatus {
            name: name.into(),
            value,
            verdict: if value.is_some() {
                CheckVerdict::Passed
            } else {
                CheckVerdict::NoData
            },
            ..CheckStatus::default()
        }
    }

    #[test]
    fn each_checks_range_is_exported_and_dropped_with_it() {
        let m = Metrics::default();
        let ranged = |name: &str, min: Option<f64>, max: Option<f64>| CheckStatus {
            threshold_range: Some(crate::api::analysis::ThresholdRange { min, max }),
            ..result(name, None)
        };
        m.observe_checks(
            "podinfo",
            "shop",
            &[
                ranged("rate", Some(99.0), None),
                ranged("p99", None, Some(500.0)),
                result("x", Some(1.0)),
            ],
            &[],
        );
        let text = m.render();
        for want in [
            r#"serin_canary_metric_threshold{name="podinfo",namespace="shop",metric="rate",bound="min"} 99.0"#,
            r#"serin_canary_metric_threshold{name="podinfo",namespace="shop",metric="p99",bound="max"} 500.0"#,
        ] {
            assert!(text.contains(want), "{want} in {text}");
        }
        assert_eq!(
            text.matches("serin_canary_metric_threshold{").count(),
            2,
            "{text}"
        );
        m.observe_checks("podinfo", "shop", &[ranged("rate", Some(95.0), None)], &[]);
        let text = m.render();
        assert!(
            text.contains(r#"metric="rate",bound="min"} 95.0"#),
            "{text}"
        );
        assert!(
            !text.contains(r#"metric="p99""#),
            "a check gone loses its threshold: {text}"
        );
        m.forget_canary("podinfo", "shop");
        assert!(!m.render().contains("serin_canary_metric_threshold{"));
    }

    #[test]
    fn a_check_without_a_value_has_no_series() {
        let m = Metrics::default();
        m.observe_checks(
            "podinfo",
            "shop",
            &[result("rate", Some(99.5)), result("p99", Some(20.0))],
            &[],
        );
        let text = m.render();
        assert!(
            text.contains(
                r#"serin_canary_metric_value{name="podinfo",namespace="shop",metric="rate"} 99.5"#
            ),
            "{text}"
        );
        m.observe_checks(
            "podinfo",
            "shop",
            &[result("rate", None), result("p99", Some(21.0))],
            &[],
        );
        let text = m.render();
        assert!(!text.contains(r#"metric="rate""#), "{text}");
        assert!(text.contains(r#"metric="p99"} 21.0"#), "{text}");
        m.forget_canary("podinfo", "shop");
        assert!(!m.render().contains("metric=\""));
    }

    #[test]
    fn each_compared_metric_exports_its_e_value() {
        let m = Metrics::default();
        let evidence = EvidenceStatus {
            name: "request-success-rate".into(),
            revision: "r2".into(),
            since: k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ),
            window_end: k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ),
            verdict: crate::statistics::Verdict::Hold,
            e_value: 12.5,
            fail_at: 100.0,
            canary_requests: 300,
            message: String::new(),
            errors: None,
            latency: None,
        };
        m.observe_checks("podinfo", "shop", &[], &[evidence]);
        let text = m.render();
        assert!(
            text.contains(r#"serin_canary_evidence{name="podinfo",namespace="shop",metric="request-success-rate"} 12.5"#),
            "{text}"
        );
        m.forget_canary("podinfo", "shop");
        assert!(!m.render().contains("serin_canary_evidence{"));
    }

    #[test]
    fn a_deleted_canary_leaves_no_series() {
        let m = Metrics::default();
        for name in ["gone", "kept"] {
            m.observe_canary(
                name,
                "shop",
                Some(Phase::Progressing),
                10,
                Some(Phase::Progressing),
            );
            m.observe_checks(name, "shop", &[result("rate", Some(99.5))], &[]);
        }
        m.retain_canaries(|_, name| name == "kept");
        let text = m.render();
        assert!(!text.contains(r#"name="gone""#), "{text}");
        assert!(
            text.contains(r#"serin_canary_weight{name="kept",namespace="shop"} 10"#),
            "{text}"
        );
        assert!(
            text.contains(r#"name="kept",namespace="shop",phase="Progressing""#),
            "{text}"
        );
    }
}
