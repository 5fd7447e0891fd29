//! Canary analysis checks. When the decision core wants evidence, the controller asks a [`CheckRunner`] for
//! one round: every metric of the analysis is queried (concurrently, one query each) at the tick's time and
//! judged against its range; [`judge::verdict`] turns the results into the round's verdict.
//!
//! Where a query goes: a built-in check (request-success-rate, request-duration) and a deprecated inline
//! query go to the Canary's `metricsServer`, else the controller's `--metrics-server`, as in Flagger; a
//! MetricTemplate's query goes to its provider's address, else the Canary's `metricsServer`, else the
//! controller's `--metrics-server` (Flagger has no fallback there and fails the check); a template with a
//! secretRef or headers needs its own address, since its credentials go nowhere else.

pub mod builtin;
pub mod compare;
pub mod counts;
pub mod judge;
pub mod prometheus;
pub mod provider;
pub mod replayed;
pub mod template;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::{BoxFuture, join_all};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use prometheus_client::metrics::counter::Counter;
use secrecy::SecretSlice;

use crate::api::analysis::Metric;
use crate::api::canary::CrossNamespaceRef;
use crate::api::canary::DEFAULT_METRIC_INTERVAL;
use crate::api::{Canary, CheckStatus, MetricTemplate, Provider};
use crate::routing::ServiceNames;
use crate::vocabulary::CheckRound;
use builtin::{Builtin, Family};
use judge::{Subject, effective_range, errored, judge, verdict};
use provider::{MetricsProvider, ProviderSettings, Providers, QueryError};
use template::{Variables, render};

pub trait CheckRunner: Send + Sync {
    /// One round of the Canary's checks, at `at` (seconds since the epoch).
    fn run<'a>(&'a self, canary: &'a Canary, at: f64) -> BoxFuture<'a, CheckRound>;
}

/// The checks as the controller runs them: MetricTemplates and their Secrets read from the watch caches.
pub struct Analyzer {
    pub templates: Store<MetricTemplate>,
    pub secrets: Store<Secret>,
    /// The controller's --metrics-server.
    pub default_server: String,
    /// The controller's --provider, for Canaries that don't name one.
    pub default_provider: Provider,
    pub providers: Providers,
    /// Counts every query sent (serin_metric_queries_total).
    pub queries: Counter,
}

impl Analyzer {
    pub fn new(
        templates: Store<MetricTemplate>,
        secrets: Store<Secret>,
        default_server: String,
        default_provider: Provider,
        timeout: Duration,
        queries: Counter,
    ) -> Self {
        Self {
            templates,
            secrets,
            default_server,
            default_provider,
            providers: Providers::new(timeout),
            queries,
        }
    }

    /// Counts a query that was sent (settings that could not be used sent none).
    fn count<T>(&self, answer: &Result<T, QueryError>) {
        if !matches!(answer, Err(QueryError::Settings(_))) {
            self.queries.inc();
        }
    }

    /// The Prometheus of the built-in checks and inline queries: the Canary's metricsServer, else the
    /// controller's.
    fn canary_prometheus(&self, canary: &Canary) -> (&dyn MetricsProvider, ProviderSettings) {
        let settings = ProviderSettings {
            address: self.canary_server(canary),
            ..ProviderSettings::default()
        };
        (&self.providers.prometheus, settings)
    }

    /// The Canary's metricsServer, else the controller's.
    fn canary_server(&self, canary: &Canary) -> String {
        canary
            .spec
            .metrics_server
            .clone()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| self.default_server.clone())
    }

    /// One check: `source` of `metric`, reported under `name`.
    async fn check(
        &self,
        canary: &Canary,
        metric: &Metric,
        name: &str,
        source: Source<'_>,
        at: f64,
    ) -> CheckStatus {
        let range = effective_range(metric);
        let vars = variables(canary, metric);
        let canary_service = ServiceNames::of(canary).canary;
        let (query_text, provider, settings, origin, family) = match source {
            Source::Builtin(check) => {
                let provider = canary.spec.provider.unwrap_or(self.default_provider);
                let f = match Family::of(provider) {
                    Ok(f) => f,
                    Err(e) => return errored(name, range, e.to_string()),
                };
                let (provider, settings) = self.canary_prometheus(canary);
                let origin = "the built-in query".to_string();
                let query = f.query(check).to_string();
                (query, provider, settings, origin, Some((f, check)))
            }
            Source::Template(r) => match self.template(canary, r) {
                Ok((template, provider, settings, origin)) => (
                    template.spec.query.clone(),
                    provider,
                    settings,
                    origin,
                    None,
                ),
                Err(why) => return errored(name, range, why),
            },
            Source::Query(q) => {
                let (provider, settings) = self.canary_prometheus(canary);
                let origin = "the metric's query".to_string();
                (q.to_string(), provider, settings, origin, None)
            }
        };
        let unit = match family {
            Some((_, Builtin::RequestSuccessRate)) => "%",
            Some((_, Builtin::RequestDuration)) => "ms",
            None => "",
        };
        let query = match render(&query_text, &vars) {
            Ok(q) => q,
            Err(e) => return errored(name, range, format!("{origin}: spec.query: {e}")),
        };
        let subject = Subject {
            name,
            unit,
            canary_service: &canary_service,
            // A built-in query is known; a template's or an inline one is shown when it finds nothing.
            query: family.is_none().then_some(query.as_str()),
        };
        let answer = provider.query(&settings, &query, at).await;
        self.count(&answer);
        match (answer, family) {
            (Ok(provider::Answer::Value(v)), Some((f, check))) => judge(
                &subject,
                provider::Answer::Value(f.to_unit(check, v)),
                &range,
            ),
            (Ok(answer), _) => judge(&subject, answer, &range),
            (Err(e), _) => errored(name, range, failure(&e, &query)),
        }
    }

    /// A MetricTemplate's query, provider and settings (its namespace defaults to the Canary's, and its
    /// Secret is read from the template's namespace), or why it can't be used.
    fn template(
        &self,
        canary: &Canary,
        r: &CrossNamespaceRef,
    ) -> Result<
        (
            std::sync::Arc<MetricTemplate>,
            &dyn MetricsProvider,
            ProviderSettings,
            String,
        ),
        String,
    > {
        let ns = r
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| canary.namespace().unwrap_or_default());
        let origin = format!("MetricTemplate {ns}/{}", r.name);
        let t = self
            .templates
            .get(&ObjectRef::new(&r.name).within(&ns))
            .ok_or_else(|| format!("{origin} not found"))?;
        let spec = &t.spec.provider;
        let provider = self
            .providers
            .get(spec.provider_type)
            .map_err(|e| format!("{origin}: spec.provider.type: {e}"))?;
        let own_address = spec.address.clone().filter(|a| !a.trim().is_empty());
        let has_credentials =
            spec.secret_ref.is_some() || spec.headers.as_ref().is_some_and(|h| !h.is_empty());
        if own_address.is_none() && has_credentials {
            // The address would be the Canary's metricsServer, which whoever writes the Canary chooses: a
            // template's Secret and headers never go there.
            return Err(format!(
                "{origin}: spec.provider.address is empty: its secretRef and headers are sent only to the template's own address, never to the Canary's metricsServer or the controller's"
            ));
        }
        let mut settings = ProviderSettings {
            address: own_address.unwrap_or_else(|| self.canary_server(canary)),
            headers: spec.headers.clone().unwrap_or_default(),
            insecure_skip_verify: spec.insecure_skip_verify,
            region: spec.region.clone(),
            ..ProviderSettings::default()
        };
        if let Some(s) = &spec.secret_ref {
            let secret = self
                .secrets
                .get(&ObjectRef::new(&s.name).within(&ns))
                .ok_or_else(|| {
                    format!(
                        "{origin}: spec.provider.secretRef: Secret {ns}/{} not found",
                        s.name
                    )
                })?;
            settings.secret = secret_data(&secret);
            settings.secret_name = Some(format!("Secret {ns}/{}", s.name));
        }
        Ok((t, provider, settings, origin))
    }
}

/// Where a check's query comes from.
#[derive(Clone, Copy)]
enum Source<'a> {
    Builtin(Builtin),
    Template(&'a CrossNamespaceRef),
    Query(&'a str),
}

/// Every check a metric entry asks for, with the name each is reported under. As in Flagger, a built-in
/// name, an inline query and a templateRef given together each run; the first is reported under the
/// metric's name, the others under `<name> (query)` and `<name> (template)`.
fn checks_of(metric: &Metric) -> Vec<(String, Source<'_>)> {
    let mut sources = Vec::new();
    if let Some(b) = Builtin::from_name(&metric.name) {
        sources.push((metric.name.clone(), Source::Builtin(b)));
    }
    if let Some(r) = &metric.template_ref {
        sources.push((format!("{} (template)", metric.name), Source::Template(r)));
    }
    if let Some(q) = &metric.query {
        sources.push((format!("{} (query)", metric.name), Source::Query(q)));
    }
    if let Some(first) = sources.first_mut() {
        first.0 = metric.name.clone();
    }
    sources
}

/// Where a compared metric's counts come from: its built-in check, else its template; an inline query
/// (one number, not counts) when it has nothing else, which the comparison refuses by name.
fn compared_source(metric: &Metric) -> Source<'_> {
    checks_of(metric)
        .into_iter()
        .map(|(_, s)| s)
        .find(|s| !matches!(s, Source::Query(_)))
        .unwrap_or(Source::Query(""))
}

/// A query's failure in words, with the query (none was sent when the settings were unusable).
fn failure(e: &QueryError, query: &str) -> String {
    match e {
        QueryError::Settings(_) => e.to_string(),
        _ => format!("{e}; query: {query}"),
    }
}

impl CheckRunner for Analyzer {
    fn run<'a>(&'a self, canary: &'a Canary, at: f64) -> BoxFuture<'a, CheckRound> {
        Box::pin(async move {
            let metrics = canary
                .spec
                .active_analysis()
                .map(|a| a.metrics.as_slice())
                .unwrap_or_default();
            let compared = metrics
                .iter()
                .filter(|m| m.compare_to_primary.is_some())
                .count();
            let comparisons = join_all(
                metrics
                    .iter()
                    .filter(|m| m.compare_to_primary.is_some())
                    .map(|m| async move {
                        self.compare(canary, m, compared_source(m), compared, at)
                            .await
                    }),
            );
            let mut checks = Vec::new();
            for m in metrics {
                // Compared with the primary and given no fixed threshold: the judge alone decides.
                if m.compare_to_primary.is_some()
                    && m.threshold_range.is_none()
                    && m.threshold.is_none()
                {
                    continue;
                }
                let sources = checks_of(m);
                if sources.is_empty() {
                    // Settings refuses such a spec first; say so rather than pass it.
                    let why = "not a built-in check, and it has neither templateRef nor query";
                    checks.push(futures::future::Either::Left(std::future::ready(errored(
                        &m.name,
                        effective_range(m),
                        why.into(),
                    ))));
                }
                for (name, source) in sources {
                    checks.push(futures::future::Either::Right(Box::pin(async move {
                        self.check(canary, m, &name, source, at).await
                    })));
                }
            }
            let (results, comparisons) = futures::join!(join_all(checks), comparisons);
            let mut results = results;
            let mut evidence = Vec::new();
            for c in comparisons {
                results.extend(c.held);
                evidence.extend(c.evidence);
            }
            verdict(results, evidence)
        })
    }
}

/// The values a metric's query is rendered with, as Flagger fills them.
pub fn variables(canary: &Canary, metric: &Metric) -> Variables {
    let spec = &canary.spec;
    let target = spec.target_ref.name.clone();
    let or_target = |name: Option<&String>| {
        name.filter(|n| !n.is_empty())
            .cloned()
            .unwrap_or_else(|| target.clone())
    };
    Variables {
        name: canary.name_any(),
        namespace: canary.namespace().unwrap_or_default(),
        service: or_target(spec.service.name.as_ref()),
        ingress: or_target(spec.ingress_ref.as_ref().map(|r| &r.name)),
        route: or_target(spec.route_ref.as_ref().map(|r| &r.name)),
        interval: metric
            .interval
            .clone()
            .filter(|i| !i.is_empty())
            .unwrap_or_else(|| DEFAULT_METRIC_INTERVAL.to_string()),
        variables: metric.template_variables.clone(),
        target,
        variant: None,
    }
}

/// A Secret's keys and values, kept secret (also read for AlertProviders' addresses and tokens).
pub fn secret_data(secret: &Secret) -> BTreeMap<String, SecretSlice<u8>> {
    let mut data: BTreeMap<String, Vec<u8>> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    // stringData is write-only on the server, but a cache fed by a test or a dry run may carry it.
    for (k, v) in secret.string_data.iter().flatten() {
        data.entry(k.clone())
            .or_insert_with(|| v.as_bytes().to_vec());
    }
    data.into_iter().map(|(k, v)| (k, v.into())).collect()
}

#[cfg(test)]
mod tests;
