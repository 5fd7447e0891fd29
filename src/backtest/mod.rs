//! `serin backtest`: what Flagger-style fixed thresholds and Serin's sequential judge would each have
//! decided about a past rollout, and when. The Canary (from a file or the cluster) is replayed twice through
//! the decision core, tick by tick over the time range, each check asking Prometheus at each past tick's
//! time what the controller would have asked then (a query asked again at a later tick is answered from one
//! range query over the rest of the replay: the same answers, two requests a query):
//!
//! - **fixed thresholds**: every metric with a threshold, checked against it; `compareToPrimary` ignored.
//! - **sequential judge**: every metric that can be compared with the primary (the built-in
//!   request-success-rate and request-duration, templates with `counts`) judged by the judge alone, with the Canary's `compareToPrimary` settings or the defaults;
//!   the other metrics kept as written.
//!
//! The past's traffic followed the real rollout, not the replay: after the real canary was rolled back,
//! promoted or held, the replay sees what the real one saw (no canary requests, say).

pub mod replay;
mod report;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use prometheus_client::metrics::counter::Counter;
use serde::Serialize;

use crate::api::analysis::Metric;
use crate::api::{Canary, CanarySpec, MetricTemplate, Provider};
use crate::decision::ControllerDefaults;
use crate::metrics::Analyzer;
use crate::metrics::prometheus::Prometheus;
use crate::metrics::provider::Providers;
use crate::metrics::replayed::Grid;
pub use replay::{Ending, Replay};
pub use report::render_table;

#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{0}")]
    NoCanary(String),
    #[error("no Kubernetes cluster to read Canary {namespace}/{name} from: {source}")]
    NoCluster {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("reading Canary {namespace}/{name}: {source}")]
    Get {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("--from {from} is not before --to {to}")]
    Range { from: String, to: String },
}

/// Where the Canary comes from.
#[derive(Debug, Clone)]
pub enum CanarySource {
    /// A YAML file holding the Canary, and any MetricTemplates it uses (documents of other kinds are
    /// skipped); `name` chooses among several Canaries.
    File {
        path: PathBuf,
        name: Option<String>,
    },
    Cluster {
        namespace: String,
        name: String,
    },
}

#[derive(Debug, Clone)]
pub struct Options {
    pub canary: CanarySource,
    /// The Prometheus of the built-in checks, inline queries and templates without an address; it wins
    /// over the Canary's metricsServer (a backtest usually runs outside the cluster).
    pub metrics_server: Option<String>,
    /// Seconds since the epoch: when the new revision appeared, and when to stop.
    pub from: f64,
    pub to: f64,
    /// The routing provider of a Canary that names none.
    pub provider: Provider,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Judge {
    FixedThresholds,
    SequentialJudge,
}

impl Judge {
    pub fn title(self) -> &'static str {
        match self {
            Judge::FixedThresholds => "fixed thresholds",
            Judge::SequentialJudge => "sequential judge",
        }
    }
}

/// One judge's replay, with what it checked.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JudgeReplay {
    pub judge: Judge,
    /// Each metric and how this judge checks it.
    pub metrics: Vec<String>,
    #[serde(flatten)]
    pub replay: Replay,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// namespace/name.
    pub canary: String,
    pub from: f64,
    pub to: f64,
    pub replays: Vec<JudgeReplay>,
    /// HTTP requests sent to Prometheus, both replays together (a query asked at several ticks is sent
    /// twice: once as an instant query, then as a range query over the rest of the replay).
    pub queries: u64,
}

/// A time as seconds since the epoch: RFC 3339, or a duration before `now` ("90m"; "0s" is now).
pub fn parse_time(s: &str, now: std::time::SystemTime) -> Result<f64, String> {
    if let Ok(t) = s.parse::<k8s_openapi::jiff::Timestamp>() {
        return Ok(t.as_millisecond() as f64 / 1000.0);
    }
    let ago = crate::api::duration::parse_duration(s).map_err(|_| {
        format!("{s:?} is neither an RFC 3339 time (2026-11-24T10:00:00Z) nor a duration ago (90m)")
    })?;
    let now = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?;
    Ok(now.saturating_sub(ago).as_secs_f64())
}

/// Runs both replays.
pub async fn backtest(options: Options) -> anyhow::Result<Report> {
    if options.from >= options.to {
        return Err(BacktestError::Range {
            from: options.from.to_string(),
            to: options.to.to_string(),
        }
        .into());
    }
    let (mut canary, file_templates) = load(&options.canary).await?;
    if let Some(server) = &options.metrics_server {
        canary.spec.metrics_server = None;
        tracing::debug!(%server, "the backtest's Prometheus replaces the Canary's metricsServer");
    }
    let (templates, secrets) = stores(&canary, file_templates).await;
    let default_server = options
        .metrics_server
        .clone()
        .unwrap_or_else(|| "http://prometheus:9090".into());
    let mut analyzer = Analyzer::new(
        templates,
        secrets,
        default_server,
        options.provider,
        options.timeout,
        Counter::default(),
    );
    // The ticks fall every analysis interval from `from`: a query asked at two ticks is asked for the rest
    // of them in one range query.
    let step = canary
        .spec
        .active_analysis()
        .and_then(|a| a.interval.as_deref())
        .and_then(|i| crate::api::duration::parse_duration(i).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(Duration::from_secs(60));
    analyzer.providers = Providers {
        prometheus: Prometheus::replaying(
            options.timeout,
            Grid {
                start: options.from,
                end: options.to,
                step: step.as_secs_f64(),
            },
        ),
    };
    let defaults = ControllerDefaults {
        provider: options.provider,
        // The API server held the Canary to its own minimum already.
        min_interval: Duration::from_secs(1),
    };
    let comparable = |m: &Metric| analyzer.can_compare(&canary, m);
    let mut replays = Vec::new();
    for judge in [Judge::FixedThresholds, Judge::SequentialJudge] {
        let (spec, metrics) = match judge {
            Judge::FixedThresholds => fixed_thresholds(&canary.spec),
            Judge::SequentialJudge => sequential_judge(&canary.spec, &comparable),
        };
        let mut replayed = canary.clone();
        replayed.spec = spec;
        let replay = replay::replay(
            &replayed,
            defaults.clone(),
            &analyzer,
            options.from,
            options.to,
        )
        .await;
        replays.push(JudgeReplay {
            judge,
            metrics,
            replay,
        });
    }
    Ok(Report {
        canary: format!(
            "{}/{}",
            canary.namespace().unwrap_or_default(),
            canary.name_any()
        ),
        from: options.from,
        to: options.to,
        replays,
        queries: analyzer.providers.prometheus.sent(),
    })
}

/// The Canary, and the MetricTemplates of its file.
async fn load(source: &CanarySource) -> anyhow::Result<(Canary, Vec<MetricTemplate>)> {
    match source {
        CanarySource::File { path, name } => {
            let shown = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|source| BacktestError::Read {
                path: shown.clone(),
                source,
            })?;
            from_yaml(&text, name.as_deref()).map_err(|message| {
                BacktestError::Parse {
                    path: shown,
                    message,
                }
                .into()
            })
        }
        CanarySource::Cluster { namespace, name } => {
            let client =
                Client::try_default()
                    .await
                    .map_err(|source| BacktestError::NoCluster {
                        namespace: namespace.clone(),
                        name: name.clone(),
                        source,
                    })?;
            let canary = Api::<Canary>::namespaced(client, namespace)
                .get(name)
                .await
                .map_err(|source| BacktestError::Get {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    source,
                })?;
            Ok((canary, vec![]))
        }
    }
}

/// The Canary of a YAML text (the one named `name` when it holds several), and its MetricTemplates.
pub fn from_yaml(text: &str, name: Option<&str>) -> Result<(Canary, Vec<MetricTemplate>), String> {
    let documents: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(text).map_err(|e| e.to_string())?;
    let mut canaries = Vec::new();
    let mut templates = Vec::new();
    for (i, doc) in documents.into_iter().enumerate() {
        let kind = doc["kind"].as_str().unwrap_or_default().to_string();
        let what = || format!("document {} ({kind})", i + 1);
        match kind.as_str() {
            "Canary" => canaries.push(
                serde_json::from_value::<Canary>(doc).map_err(|e| format!("{}: {e}", what()))?,
            ),
            "MetricTemplate" => templates.push(
                serde_json::from_value::<MetricTemplate>(doc)
                    .map_err(|e| format!("{}: {e}", what()))?,
            ),
            _ => {}
        }
    }
    let names: Vec<String> = canaries.iter().map(|c| c.name_any()).collect();
    let chosen = match name {
        Some(n) => canaries.into_iter().find(|c| c.name_any() == n),
        None if canaries.len() == 1 => canaries.pop(),
        None => None,
    };
    let mut canary = chosen.ok_or_else(|| match (name, names.len()) {
        (_, 0) => "no Canary in the file".to_string(),
        (Some(n), _) => format!(
            "no Canary named {n} in the file (it has {})",
            names.join(", ")
        ),
        (None, _) => format!(
            "{} Canaries in the file ({}): name one",
            names.len(),
            names.join(", ")
        ),
    })?;
    if canary.namespace().is_none() {
        canary.metadata.namespace = Some("default".into());
    }
    for t in &mut templates {
        if t.namespace().is_none() {
            t.metadata.namespace = canary.namespace();
        }
    }
    Ok((canary, templates))
}

/// The stores the checks read: the file's MetricTemplates, and from the cluster (when one is reachable)
/// the Canary's other templates and their Secrets.
async fn stores(
    canary: &Canary,
    file_templates: Vec<MetricTemplate>,
) -> (Store<MetricTemplate>, Store<Secret>) {
    let (templates, mut template_writer) = reflector::store::<MetricTemplate>();
    let (secrets, mut secret_writer) = reflector::store::<Secret>();
    let ns = canary.namespace().unwrap_or_default();
    let mut found: HashMap<ObjectRef<MetricTemplate>, MetricTemplate> = file_templates
        .into_iter()
        .map(|t| (ObjectRef::from_obj(&t), t))
        .collect();
    let wanted: Vec<(String, String)> = canary
        .spec
        .active_analysis()
        .into_iter()
        .flat_map(|a| &a.metrics)
        .filter_map(|m| m.template_ref.as_ref())
        .map(|r| {
            let template_ns = r.namespace.clone().filter(|n| !n.is_empty());
            (template_ns.unwrap_or_else(|| ns.clone()), r.name.clone())
        })
        .collect();
    let client = Client::try_default().await.ok();
    if let Some(client) = &client {
        for (template_ns, name) in &wanted {
            let key = ObjectRef::new(name).within(template_ns);
            if found.contains_key(&key) {
                continue;
            }
            match Api::<MetricTemplate>::namespaced(client.clone(), template_ns)
                .get_opt(name)
                .await
            {
                Ok(Some(t)) => {
                    found.insert(key, t);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(template = %key, error = %e, "reading a MetricTemplate"),
            }
        }
        for t in found.values() {
            let Some(secret) = &t.spec.provider.secret_ref else {
                continue;
            };
            let template_ns = t.namespace().unwrap_or_default();
            match Api::<Secret>::namespaced(client.clone(), &template_ns)
                .get_opt(&secret.name)
                .await
            {
                Ok(Some(s)) => secret_writer.apply_watcher_event(&watcher::Event::Apply(s)),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(secret = %secret.name, namespace = %template_ns, error = %e, "reading a template's Secret")
                }
            }
        }
    }
    for t in found.into_values() {
        template_writer.apply_watcher_event(&watcher::Event::Apply(t));
    }
    (templates, secrets)
}

/// The spec with each metric changed by `change` (None drops it), and what each became. A replay always
/// analyses: `skipAnalysis` and `suspend` are cleared.
fn each_metric(
    spec: &CanarySpec,
    mut change: impl FnMut(&Metric) -> Option<(Metric, String)>,
) -> (CanarySpec, Vec<String>) {
    let mut spec = spec.clone();
    spec.skip_analysis = false;
    spec.suspend = false;
    let mut shown = Vec::new();
    for analysis in [spec.analysis.as_mut(), spec.canary_analysis.as_mut()]
        .into_iter()
        .flatten()
    {
        let mut kept = Vec::new();
        for m in &analysis.metrics {
            match change(m) {
                Some((m, how)) => {
                    shown.push(format!("{}: {how}", m.name));
                    kept.push(m);
                }
                None => shown.push(format!("{}: not checked (no threshold)", m.name)),
            }
        }
        analysis.metrics = kept;
    }
    (spec, shown)
}

/// Every metric with a threshold checked against it; compareToPrimary ignored (and promoteWhenProven,
/// which needs a compared metric).
fn fixed_thresholds(spec: &CanarySpec) -> (CanarySpec, Vec<String>) {
    let mut spec = spec.clone();
    for analysis in [spec.analysis.as_mut(), spec.canary_analysis.as_mut()]
        .into_iter()
        .flatten()
    {
        analysis.promote_when_proven = false;
    }
    each_metric(&spec, |m| {
        if m.threshold.is_none() && m.threshold_range.is_none() && m.compare_to_primary.is_some() {
            return None;
        }
        let range = crate::metrics::judge::effective_range(m);
        let how = match (range.min, range.max) {
            (Some(min), Some(max)) => format!("within [{min}, {max}]"),
            (Some(min), None) => format!("at least {min}"),
            (None, Some(max)) => format!("at most {max}"),
            (None, None) => "any value".into(),
        };
        Some((
            Metric {
                compare_to_primary: None,
                ..m.clone()
            },
            how,
        ))
    })
}

/// Every metric the judge can compare judged by it alone; the others as written.
fn sequential_judge(
    spec: &CanarySpec,
    comparable: &dyn Fn(&Metric) -> bool,
) -> (CanarySpec, Vec<String>) {
    each_metric(spec, |m| {
        if !comparable(m) {
            return Some((
                m.clone(),
                "as written (cannot be compared with the primary)".into(),
            ));
        }
        Some((
            Metric {
                threshold: None,
                threshold_range: None,
                compare_to_primary: Some(m.compare_to_primary.clone().unwrap_or_default()),
                ..m.clone()
            },
            "compared with the primary".into(),
        ))
    })
}

#[cfg(test)]
mod tests;
