//! What the sequential judge reads from Prometheus: per variant (canary, primary), the requests, the bad
//! ones (5xx) and the latency buckets of one window, for the built-in checks' telemetry families. Each
//! query is the counters' change over exactly the window, evaluated at the window's end, so that windows
//! tile (no overlap, no gap, no extrapolation): the judge's bets need every request counted once.
//!
//! PromQL regexes are anchored, so the canary's pod pattern (`<target>-<hash>-<id>`) never matches the
//! primary's pods (`<target>-primary-<hash>-<id>`: one segment more).

use std::collections::BTreeMap;

use super::builtin::Family;
use crate::statistics::{Counts, LatencyTick, Tick};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Canary,
    Primary,
}

/// The label matchers that select one variant's series, for `render`.
fn selector(family: Family, variant: Variant) -> &'static str {
    use Family::*;
    use Variant::*;
    match (family, variant) {
        (Http, Canary) => {
            r#"kubernetes_namespace="{{ namespace }}", kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)""#
        }
        (Http, Primary) => {
            r#"kubernetes_namespace="{{ namespace }}", kubernetes_pod_name=~"{{ target }}-primary-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)""#
        }
        (Istio, Canary) => {
            r#"reporter="destination", destination_workload_namespace="{{ namespace }}", destination_workload="{{ target }}""#
        }
        (Istio, Primary) => {
            r#"reporter="destination", destination_workload_namespace="{{ namespace }}", destination_workload="{{ target }}-primary""#
        }
        (Linkerd, Canary) => {
            r#"namespace="{{ namespace }}", deployment="{{ target }}", direction="inbound""#
        }
        (Linkerd, Primary) => {
            r#"namespace="{{ namespace }}", deployment="{{ target }}-primary", direction="inbound""#
        }
        (Nginx, Canary) => r#"namespace="{{ namespace }}", ingress="{{ ingress }}", canary!="""#,
        (Nginx, Primary) => r#"namespace="{{ namespace }}", ingress="{{ ingress }}", canary="""#,
        (Contour, Canary) => {
            r#"envoy_cluster_name=~"{{ namespace }}_{{ service }}-canary_[0-9a-zA-Z-]+""#
        }
        (Contour, Primary) => {
            r#"envoy_cluster_name=~"{{ namespace }}_{{ service }}-primary_[0-9a-zA-Z-]+""#
        }
        (Traefik, Canary) => {
            r#"service=~"{{ namespace }}-{{ target }}-canary-[0-9a-zA-Z-]+@kubernetescrd""#
        }
        (Traefik, Primary) => {
            r#"service=~"{{ namespace }}-{{ target }}-primary-[0-9a-zA-Z-]+@kubernetescrd""#
        }
    }
}

/// The series that count requests, and the matcher that keeps the bad ones.
fn requests_series(family: Family) -> (&'static str, &'static str) {
    use Family::*;
    match family {
        Http => ("http_request_duration_seconds_count", r#"status=~"5.*""#),
        Istio => ("istio_requests_total", r#"response_code=~"5.*""#),
        Linkerd => ("response_total", r#"classification="failure""#),
        Nginx => ("nginx_ingress_controller_requests", r#"status=~"5.*""#),
        Contour => ("envoy_cluster_upstream_rq", r#"envoy_response_code=~"5.*""#),
        Traefik => (
            "traefik_service_request_duration_seconds_count",
            r#"code=~"5..""#,
        ),
    }
}

/// The latency histogram's bucket series and how many milliseconds its unit is.
fn bucket_series(family: Family) -> (&'static str, f64) {
    use Family::*;
    match family {
        Http => ("http_request_duration_seconds_bucket", 1000.0),
        Istio => ("istio_request_duration_milliseconds_bucket", 1.0),
        Linkerd => ("response_latency_ms_bucket", 1.0),
        // ingress-nginx's request time histogram (the built-in check reads a mean, of its response time).
        Nginx => (
            "nginx_ingress_controller_request_duration_seconds_bucket",
            1000.0,
        ),
        Contour => ("envoy_cluster_upstream_rq_time_bucket", 1.0),
        Traefik => ("traefik_service_request_duration_seconds_bucket", 1000.0),
    }
}

/// A variant's request counters: the series and its label matchers.
pub fn requests_series_selector(family: Family, variant: Variant) -> String {
    let (series, _) = requests_series(family);
    format!("{series}{{{}}}", selector(family, variant))
}

/// A variant's bad (5xx) request counters.
pub fn bad_series_selector(family: Family, variant: Variant) -> String {
    let (series, bad) = requests_series(family);
    format!("{series}{{{}, {bad}}}", selector(family, variant))
}

/// How much the counters of `series` (a selector) grew in the window ending at the query's time, summed
/// `by` the labels kept (none: one number): each series' value at the window's end minus its value at the
/// start, each the last sample at or before that time (within 5 minutes, as an instant query reads it,
/// stale markers aside); a series born or reset in the window counts its value at the end. Consecutive
/// windows thus add up to exactly the counters' change.
///
/// Not `increase()`: it stretches the growth seen between a window's first and last samples to the
/// window's edges, and a window of a few seconds then counts 1.25 or 2.5 bad requests, which round away
/// about one in five of them when they are sparse (measured end to end: 9 of 11 canary errors counted over
/// 13 windows of 5 s), while the requests lose far fewer: the canary looked better than it was, and a
/// canary one point worse than the primary passed a one-point tolerance.
fn window_increase(series: &str, by: &str) -> String {
    let at_end = format!("last_over_time({series}[5m])");
    let at_start = format!("last_over_time({series}[5m] offset {{{{ interval }}}})");
    format!("sum{by}(({at_end} - {at_start}) >= 0 or {at_end})")
}

/// A variant's requests in the window ending at the query's time; `{{ interval }}` is the window.
pub fn requests_query(family: Family, variant: Variant) -> String {
    window_increase(&requests_series_selector(family, variant), "")
}

/// A variant's bad (5xx) requests in the window.
pub fn bad_query(family: Family, variant: Variant) -> String {
    window_increase(&bad_series_selector(family, variant), "")
}

/// A variant's latency buckets in the window, one series per `le`, and the milliseconds per unit.
pub fn buckets_query(family: Family, variant: Variant) -> (String, f64) {
    let (series, ms_per_unit) = bucket_series(family);
    (
        window_increase(
            &format!("{series}{{{}}}", selector(family, variant)),
            " by (le) ",
        ),
        ms_per_unit,
    )
}

/// Cumulative bucket counts by edge (milliseconds; +Inf last), read from `le` labels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Buckets {
    pub edges_ms: Vec<f64>,
    pub at_or_below: Vec<f64>,
    /// The +Inf bucket: every request.
    pub total: f64,
}

impl Buckets {
    /// From a `sum by (le)` answer; series without a readable `le` are ignored.
    pub fn from_samples(samples: &[(BTreeMap<String, String>, f64)], ms_per_unit: f64) -> Self {
        let mut finite: Vec<(f64, f64)> = Vec::new();
        let mut total = 0.0;
        for (labels, value) in samples {
            let Some(le) = labels.get("le").and_then(|le| le.parse::<f64>().ok()) else {
                continue;
            };
            let value = if value.is_finite() {
                value.max(0.0)
            } else {
                0.0
            };
            if le.is_infinite() {
                total = value;
            } else {
                finite.push((le * ms_per_unit, value));
            }
        }
        finite.sort_by(|a, b| a.0.total_cmp(&b.0));
        Buckets {
            edges_ms: finite.iter().map(|(e, _)| *e).collect(),
            at_or_below: finite.iter().map(|(_, c)| *c).collect(),
            total,
        }
    }

    /// Requests slower than `edge` (milliseconds), if the histogram has that edge.
    fn slower_than(&self, edge: f64) -> Option<Counts> {
        let k = self
            .edges_ms
            .iter()
            .position(|e| (e - edge).abs() <= 1e-9 * edge.abs().max(1.0))?;
        Some(Counts::measured(
            self.total,
            self.total - self.at_or_below[k],
        ))
    }
}

/// One tick of errors, from each variant's requests and bad requests.
pub fn error_tick(canary: (f64, f64), primary: (f64, f64)) -> Tick {
    Tick {
        canary: Counts::measured(canary.0, canary.1),
        primary: Counts::measured(primary.0, primary.1),
    }
}

/// One tick of latency at `edges` (milliseconds); an edge one of the variants lacks counts nothing there.
pub fn latency_tick(edges: &[f64], canary: &Buckets, primary: &Buckets) -> LatencyTick {
    LatencyTick {
        slower: edges
            .iter()
            .map(
                |edge| match (canary.slower_than(*edge), primary.slower_than(*edge)) {
                    (Some(canary), Some(primary)) => Tick { canary, primary },
                    _ => Tick::default(),
                },
            )
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::template::{Variables, render};

    fn rendered(query: &str) -> String {
        let vars = Variables {
            name: "podinfo".into(),
            namespace: "test".into(),
            target: "podinfo".into(),
            service: "podinfo".into(),
            ingress: "podinfo".into(),
            route: "podinfo".into(),
            interval: "60s".into(),
            variables: Default::default(),
            variant: None,
        };
        render(query, &vars).unwrap()
    }

    #[test]
    fn the_podinfo_queries_select_one_variant_each() {
        let series = r#"http_request_duration_seconds_count{kubernetes_namespace="test", kubernetes_pod_name=~"podinfo-primary-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)", status=~"5.*"}"#;
        assert_eq!(
            rendered(&bad_query(Family::Http, Variant::Primary)),
            format!(
                "sum((last_over_time({series}[5m]) - last_over_time({series}[5m] offset 60s)) >= 0 or last_over_time({series}[5m]))"
            )
        );
        // Prometheus anchors regexes: the canary's pattern must not match the primary's pods.
        let canary = regex::Regex::new("^(?:podinfo-[0-9a-zA-Z]+(-[0-9a-zA-Z]+))$").unwrap();
        assert!(canary.is_match("podinfo-7d9f8b6c5-x2x9k"));
        assert!(!canary.is_match("podinfo-primary-7d9f8b6c5-x2x9k"));
    }

    #[test]
    fn every_family_has_requests_and_bad_queries_and_the_histograms_it_exports() {
        use Family::*;
        for family in [Http, Istio, Linkerd, Nginx, Contour, Traefik] {
            for variant in [Variant::Canary, Variant::Primary] {
                let requests = rendered(&requests_query(family, variant));
                let bad = rendered(&bad_query(family, variant));
                assert!(
                    requests.starts_with("sum((last_over_time(")
                        && requests.contains("[5m] offset 60s)) >= 0 or last_over_time("),
                    "{requests}"
                );
                assert!(bad.len() > requests.len(), "{bad}");
                assert!(!requests.contains("{{"), "{requests}");
            }
            let q = rendered(&buckets_query(family, Variant::Canary).0);
            assert!(
                q.starts_with("sum by (le) ((last_over_time(") && q.contains("_bucket{"),
                "{q}"
            );
        }
        assert_eq!(
            rendered(&requests_series_selector(Istio, Variant::Primary)),
            r#"istio_requests_total{reporter="destination", destination_workload_namespace="test", destination_workload="podinfo-primary"}"#
        );
    }

    #[test]
    fn buckets_become_requests_slower_than_each_edge() {
        let sample = |le: &str, v: f64| (BTreeMap::from([("le".to_string(), le.to_string())]), v);
        let canary = Buckets::from_samples(
            &[
                sample("0.1", 90.0),
                sample("+Inf", 100.0),
                sample("0.05", 40.0),
                sample("0.25", 99.4),
            ],
            1000.0,
        );
        assert_eq!(canary.edges_ms, vec![50.0, 100.0, 250.0]);
        let primary = Buckets::from_samples(
            &[
                sample("0.05", 500.0),
                sample("0.1", 880.0),
                sample("+Inf", 900.0),
            ],
            1000.0,
        );
        let tick = latency_tick(&[50.0, 100.0, 250.0], &canary, &primary);
        assert_eq!(
            tick.slower[0].canary,
            Counts {
                requests: 100,
                bad: 60
            }
        );
        assert_eq!(
            tick.slower[0].primary,
            Counts {
                requests: 900,
                bad: 400
            }
        );
        assert_eq!(
            tick.slower[1].canary,
            Counts {
                requests: 100,
                bad: 10
            }
        );
        // `increase()` extrapolates: counts are rounded, and an edge the primary lacks counts nothing.
        assert_eq!(tick.slower[2], Tick::default());
        assert_eq!(
            error_tick((99.6, 2.4), (900.2, -0.1)).canary,
            Counts {
                requests: 100,
                bad: 2
            }
        );
    }
}
