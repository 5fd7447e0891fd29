//! The series the simulator serves, in the shapes the built-in queries read: podinfo-style
//! `http_request_duration_seconds` histograms per pod, Istio's `istio_requests_total` and
//! `istio_request_duration_milliseconds` per workload, Linkerd's `response_total` and `response_latency_ms`
//! per deployment, and the simulator's own per-backend counter.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;

use crate::model::ProxySeries;

/// Prometheus client libraries' default buckets, which podinfo uses (seconds).
const SECONDS_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Istio's default duration buckets (milliseconds).
const MILLISECONDS_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    /// Non-cumulative count per bucket; the last entry is the +Inf bucket.
    counts: Vec<u64>,
    sum: f64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    fn observe(&mut self, v: f64) {
        let i = self
            .bounds
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i] += 1;
        self.sum += v;
    }

    /// Adds another histogram of the same buckets.
    fn add(&mut self, other: &Histogram) {
        for (c, o) in self.counts.iter_mut().zip(&other.counts) {
            *c += o;
        }
        self.sum += other.sum;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c;
            let le = self
                .bounds
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

/// Linkerd proxy's latency buckets (milliseconds).
const LINKERD_BUCKETS: &[f64] = &[
    1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 100.0, 200.0, 300.0, 400.0, 500.0,
    1000.0, 2000.0, 3000.0, 4000.0, 5000.0, 10000.0, 20000.0, 30000.0, 40000.0, 50000.0,
];

/// Envoy's default histogram buckets (milliseconds).
const ENVOY_BUCKETS: &[f64] = &[
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];
/// Traefik's default duration buckets (seconds).
const TRAEFIK_BUCKETS: &[f64] = &[0.1, 0.3, 1.2, 5.0];

/// One simulated request as the metrics see it.
#[derive(Debug, Clone, Copy)]
pub struct Served<'a> {
    pub namespace: &'a str,
    pub pod: &'a str,
    pub workload: &'a str,
    pub status: u16,
    pub latency_ms: f64,
}

/// A request through an ingress controller, as ingress-nginx counts it.
#[derive(Debug, Clone, Copy)]
pub struct IngressServed<'a> {
    pub namespace: &'a str,
    /// The Ingress the host's traffic comes through (the user's, not the canary's copy).
    pub ingress: &'a str,
    pub service: &'a str,
    /// Served by a canary backend.
    pub canary: bool,
    pub status: u16,
    pub latency_ms: f64,
}

/// A request through a proxy that counts it per backend (Contour's Envoy, Traefik).
#[derive(Debug, Clone, Copy)]
pub struct ProxyServed<'a> {
    pub series: &'a ProxySeries,
    /// The proxy's name for the backend ([`ProxySeries::backend_name`]).
    pub backend: &'a str,
    pub status: u16,
    pub latency_ms: f64,
}

/// Where the simulator sent a request, for its own counter; backend is "" when no backend was chosen.
#[derive(Debug, Clone, Copy)]
pub struct Routed<'a> {
    pub namespace: &'a str,
    pub route: &'a str,
    pub backend: &'a str,
    pub status: u16,
}

/// (namespace, ingress, service, canary upstream or "", status) of ingress-nginx's series; the value is
/// the request time histogram (seconds, Prometheus' default buckets, as ingress-nginx's).
type NginxKey = (String, String, String, String, u16);

#[derive(Debug, Default)]
pub struct Metrics {
    /// (namespace, pod, status)
    podinfo: BTreeMap<(String, String, u16), Histogram>,
    /// (namespace, workload, status)
    istio: BTreeMap<(String, String, u16), Histogram>,
    /// (namespace, workload, status): Linkerd's inbound series of the workload's proxies.
    linkerd: BTreeMap<(String, String, u16), Histogram>,
    /// (namespace, route, backend, status)
    routed: BTreeMap<(String, String, String, u16), u64>,
    /// (namespace, route, from backend, to backend): a client's request served by another backend than
    /// its previous one.
    switches: BTreeMap<(String, String, String, String), u64>,
    nginx: BTreeMap<NginxKey, Histogram>,
    /// (Envoy cluster, status): Contour's Envoy.
    envoy: BTreeMap<(String, u16), Histogram>,
    /// (Traefik service, status).
    traefik: BTreeMap<(String, u16), Histogram>,
}

impl Metrics {
    pub fn record_served(&mut self, s: Served<'_>) {
        self.podinfo
            .entry((s.namespace.to_string(), s.pod.to_string(), s.status))
            .or_insert_with(|| Histogram::new(SECONDS_BUCKETS))
            .observe(s.latency_ms / 1000.0);
        self.istio
            .entry((s.namespace.to_string(), s.workload.to_string(), s.status))
            .or_insert_with(|| Histogram::new(MILLISECONDS_BUCKETS))
            .observe(s.latency_ms);
        self.linkerd
            .entry((s.namespace.to_string(), s.workload.to_string(), s.status))
            .or_insert_with(|| Histogram::new(LINKERD_BUCKETS))
            .observe(s.latency_ms);
    }

    pub fn record_ingress(&mut self, r: IngressServed<'_>) {
        // ingress-nginx names an upstream <namespace>-<service>-<port>; the port is left out here.
        let upstream = if r.canary {
            format!("{}-{}", r.namespace, r.service)
        } else {
            String::new()
        };
        let entry = self
            .nginx
            .entry((
                r.namespace.to_string(),
                r.ingress.to_string(),
                r.service.to_string(),
                upstream,
                r.status,
            ))
            .or_insert_with(|| Histogram::new(SECONDS_BUCKETS));
        entry.observe(r.latency_ms / 1000.0);
    }

    pub fn record_proxy(&mut self, r: ProxyServed<'_>) {
        let key = (r.backend.to_string(), r.status);
        match r.series {
            ProxySeries::Envoy { .. } => self
                .envoy
                .entry(key)
                .or_insert_with(|| Histogram::new(ENVOY_BUCKETS))
                .observe(r.latency_ms),
            ProxySeries::Traefik { .. } => self
                .traefik
                .entry(key)
                .or_insert_with(|| Histogram::new(TRAEFIK_BUCKETS))
                .observe(r.latency_ms / 1000.0),
            ProxySeries::Nginx { .. } => {}
        }
    }

    pub fn record_routed(&mut self, r: Routed<'_>) {
        *self
            .routed
            .entry((
                r.namespace.to_string(),
                r.route.to_string(),
                r.backend.to_string(),
                r.status,
            ))
            .or_default() += 1;
    }

    /// A client of `route` sent by the route to `to` after `from`.
    pub fn record_switch(&mut self, namespace: &str, route: &str, from: &str, to: &str) {
        *self
            .switches
            .entry((namespace.into(), route.into(), from.into(), to.into()))
            .or_default() += 1;
    }

    /// A route's requests so far: (answered below 400, answered 400 or above).
    pub fn route_outcomes(&self, namespace: &str, route: &str) -> (u64, u64) {
        self.routed
            .iter()
            .filter(|((ns, r, _, _), _)| ns == namespace && r == route)
            .fold((0, 0), |(ok, failed), ((_, _, _, code), n)| {
                if *code < 400 {
                    (ok + n, failed)
                } else {
                    (ok, failed + n)
                }
            })
    }

    /// Drops the per-pod series of pods that are gone, as their scrape target would vanish.
    pub fn retain_pods(&mut self, live: &HashSet<(String, String)>) {
        self.podinfo
            .retain(|(ns, pod, _), _| live.contains(&(ns.clone(), pod.clone())));
    }

    /// The Prometheus text exposition format (0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP http_request_duration_seconds Duration of HTTP requests (simulated, podinfo style).\n");
        out.push_str("# TYPE http_request_duration_seconds histogram\n");
        for ((ns, pod, status), h) in &self.podinfo {
            let labels = format!(
                "kubernetes_namespace=\"{}\",kubernetes_pod_name=\"{}\",method=\"GET\",path=\"/\",status=\"{status}\"",
                escape(ns),
                escape(pod)
            );
            h.render(&mut out, "http_request_duration_seconds", &labels);
        }
        out.push_str("# HELP istio_requests_total Requests received by a workload (simulated, Istio style).\n");
        out.push_str("# TYPE istio_requests_total counter\n");
        for ((ns, workload, code), h) in &self.istio {
            let _ = writeln!(
                out,
                "istio_requests_total{{{}}} {}",
                istio_labels(ns, workload, *code),
                h.counts.iter().sum::<u64>()
            );
        }
        out.push_str("# HELP istio_request_duration_milliseconds Request duration (simulated, Istio style).\n");
        out.push_str("# TYPE istio_request_duration_milliseconds histogram\n");
        for ((ns, workload, code), h) in &self.istio {
            h.render(
                &mut out,
                "istio_request_duration_milliseconds",
                &istio_labels(ns, workload, *code),
            );
        }
        out.push_str(
            "# HELP response_total Responses of a workload's proxies (simulated, Linkerd style).\n",
        );
        out.push_str("# TYPE response_total counter\n");
        for ((ns, workload, code), h) in &self.linkerd {
            let _ = writeln!(
                out,
                "response_total{{{}}} {}",
                linkerd_labels(ns, workload, *code),
                h.counts.iter().sum::<u64>()
            );
        }
        out.push_str("# HELP response_latency_ms Response latency (simulated, Linkerd style).\n");
        out.push_str("# TYPE response_latency_ms histogram\n");
        for ((ns, workload, code), h) in &self.linkerd {
            h.render(
                &mut out,
                "response_latency_ms",
                &linkerd_labels(ns, workload, *code),
            );
        }
        out.push_str("# HELP nginx_ingress_controller_requests Requests through an Ingress (simulated, ingress-nginx style).\n");
        out.push_str("# TYPE nginx_ingress_controller_requests counter\n");
        for ((ns, ingress, service, canary, status), h) in &self.nginx {
            let n: u64 = h.counts.iter().sum();
            let _ = writeln!(
                out,
                "nginx_ingress_controller_requests{{{}}} {n}",
                nginx_labels(ns, ingress, service, canary, *status)
            );
        }
        out.push_str("# HELP nginx_ingress_controller_response_duration_seconds Response time (simulated).\n");
        out.push_str("# TYPE nginx_ingress_controller_response_duration_seconds summary\n");
        for ((ns, ingress, service, canary, status), h) in &self.nginx {
            let labels = nginx_labels(ns, ingress, service, canary, *status);
            let n: u64 = h.counts.iter().sum();
            let _ = writeln!(
                out,
                "nginx_ingress_controller_response_duration_seconds_sum{{{labels}}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "nginx_ingress_controller_response_duration_seconds_count{{{labels}}} {n}"
            );
        }
        out.push_str("# HELP nginx_ingress_controller_request_duration_seconds Request processing time (simulated).\n");
        out.push_str("# TYPE nginx_ingress_controller_request_duration_seconds histogram\n");
        for ((ns, ingress, service, canary, status), h) in &self.nginx {
            h.render(
                &mut out,
                "nginx_ingress_controller_request_duration_seconds",
                &nginx_labels(ns, ingress, service, canary, *status),
            );
        }
        // Envoy's cluster series: a request counter by response code, and the time histogram by cluster.
        out.push_str("# HELP envoy_cluster_upstream_rq Requests to an upstream cluster (simulated, Contour's Envoy).\n");
        out.push_str("# TYPE envoy_cluster_upstream_rq counter\n");
        for ((cluster, code), h) in &self.envoy {
            let n: u64 = h.counts.iter().sum();
            let _ = writeln!(
                out,
                "envoy_cluster_upstream_rq{{envoy_cluster_name=\"{}\",envoy_response_code=\"{code}\"}} {n}",
                escape(cluster)
            );
        }
        out.push_str("# HELP envoy_cluster_upstream_rq_time Upstream request time (simulated).\n");
        out.push_str("# TYPE envoy_cluster_upstream_rq_time histogram\n");
        let mut by_cluster: BTreeMap<&str, Histogram> = BTreeMap::new();
        for ((cluster, _), h) in &self.envoy {
            by_cluster
                .entry(cluster)
                .or_insert_with(|| Histogram::new(ENVOY_BUCKETS))
                .add(h);
        }
        for (cluster, h) in &by_cluster {
            h.render(
                &mut out,
                "envoy_cluster_upstream_rq_time",
                &format!("envoy_cluster_name=\"{}\"", escape(cluster)),
            );
        }
        out.push_str("# HELP traefik_service_request_duration_seconds Request duration by service (simulated, Traefik).\n");
        out.push_str("# TYPE traefik_service_request_duration_seconds histogram\n");
        for ((service, code), h) in &self.traefik {
            h.render(
                &mut out,
                "traefik_service_request_duration_seconds",
                &format!(
                    "service=\"{}\",code=\"{code}\",method=\"GET\",protocol=\"http\"",
                    escape(service)
                ),
            );
        }
        out.push_str(
            "# HELP trafficsim_requests_total Requests the simulator sent, by route and backend.\n",
        );
        out.push_str("# TYPE trafficsim_requests_total counter\n");
        for ((ns, route, backend, code), n) in &self.routed {
            let _ = writeln!(
                out,
                "trafficsim_requests_total{{namespace=\"{}\",route=\"{}\",backend=\"{}\",code=\"{code}\"}} {n}",
                escape(ns),
                escape(route),
                escape(backend)
            );
        }
        out.push_str("# HELP trafficsim_client_switches_total Requests of a route's clients served by another backend than their previous request.\n");
        out.push_str("# TYPE trafficsim_client_switches_total counter\n");
        for ((ns, route, from, to), n) in &self.switches {
            let _ = writeln!(
                out,
                "trafficsim_client_switches_total{{namespace=\"{}\",route=\"{}\",from=\"{}\",to=\"{}\"}} {n}",
                escape(ns),
                escape(route),
                escape(from),
                escape(to)
            );
        }
        out
    }
}

fn nginx_labels(ns: &str, ingress: &str, service: &str, canary: &str, status: u16) -> String {
    format!(
        "namespace=\"{}\",ingress=\"{}\",service=\"{}\",canary=\"{}\",status=\"{status}\"",
        escape(ns),
        escape(ingress),
        escape(service),
        escape(canary)
    )
}

/// Linkerd classifies 5xx answers as failures.
fn linkerd_labels(ns: &str, workload: &str, code: u16) -> String {
    let classification = if code >= 500 { "failure" } else { "success" };
    format!(
        "direction=\"inbound\",namespace=\"{}\",deployment=\"{}\",status_code=\"{code}\",classification=\"{classification}\"",
        escape(ns),
        escape(workload)
    )
}

fn istio_labels(ns: &str, workload: &str, code: u16) -> String {
    format!(
        "reporter=\"destination\",destination_workload=\"{}\",destination_workload_namespace=\"{}\",response_code=\"{code}\"",
        escape(workload),
        escape(ns)
    )
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(pod: &str, status: u16, latency_ms: f64) -> Served<'_> {
        Served {
            namespace: "ns",
            pod,
            workload: "app",
            status,
            latency_ms,
        }
    }

    #[test]
    fn envoy_counts_by_code_and_times_by_cluster_and_traefik_by_service() {
        let mut m = Metrics::default();
        let envoy = ProxySeries::Envoy { ports: vec![] };
        let traefik = ProxySeries::Traefik { ports: vec![] };
        for (status, ms) in [(200, 3.0), (200, 30.0), (500, 30.0)] {
            let served = |series| ProxyServed {
                series,
                backend: "b",
                status,
                latency_ms: ms,
            };
            m.record_proxy(served(&envoy));
            m.record_proxy(served(&traefik));
        }
        let text = m.render();
        let has = |l: &str| text.lines().any(|x| x == l);
        assert!(
            has(r#"envoy_cluster_upstream_rq{envoy_cluster_name="b",envoy_response_code="200"} 2"#),
            "{text}"
        );
        assert!(has(
            r#"envoy_cluster_upstream_rq{envoy_cluster_name="b",envoy_response_code="500"} 1"#
        ));
        assert!(has(
            r#"envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="b",le="5"} 1"#
        ));
        assert!(has(
            r#"envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="b",le="50"} 3"#
        ));
        assert!(has(
            r#"traefik_service_request_duration_seconds_bucket{service="b",code="200",method="GET",protocol="http",le="+Inf"} 2"#
        ));
        assert!(has(
            r#"traefik_service_request_duration_seconds_bucket{service="b",code="500",method="GET",protocol="http",le="0.1"} 1"#
        ));
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_at_the_count() {
        let mut m = Metrics::default();
        for ms in [3.0, 20.0, 20.0, 900.0] {
            m.record_served(served("app-1-a", 200, ms));
        }
        let text = m.render();
        let line = |needle: &str| {
            text.lines()
                .find(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("{needle} in {text}"))
        };
        let pod = "kubernetes_pod_name=\"app-1-a\"";
        assert!(
            line(&format!(
                "{pod},method=\"GET\",path=\"/\",status=\"200\",le=\"0.005\""
            ))
            .ends_with(" 1")
        );
        assert!(
            line(&format!(
                "{pod},method=\"GET\",path=\"/\",status=\"200\",le=\"0.025\""
            ))
            .ends_with(" 3")
        );
        assert!(
            line(&format!(
                "{pod},method=\"GET\",path=\"/\",status=\"200\",le=\"0.5\""
            ))
            .ends_with(" 3")
        );
        assert!(
            line(&format!(
                "{pod},method=\"GET\",path=\"/\",status=\"200\",le=\"1\""
            ))
            .ends_with(" 4")
        );
        assert!(
            line(&format!(
                "{pod},method=\"GET\",path=\"/\",status=\"200\",le=\"+Inf\""
            ))
            .ends_with(" 4")
        );
        assert!(line("http_request_duration_seconds_count{").ends_with(" 4"));
        assert!(line("istio_requests_total{").contains("destination_workload=\"app\""));
        assert!(line("istio_requests_total{").ends_with(" 4"));
        assert!(line("istio_request_duration_milliseconds_bucket{").contains("le=\"1\""));
    }

    #[test]
    fn series_of_gone_pods_are_dropped_but_workload_counters_stay() {
        let mut m = Metrics::default();
        m.record_served(served("app-1-a", 200, 5.0));
        m.record_served(served("app-1-b", 500, 5.0));
        m.retain_pods(&HashSet::from([("ns".to_string(), "app-1-b".to_string())]));
        let text = m.render();
        assert!(!text.contains("app-1-a"));
        assert!(text.contains("kubernetes_pod_name=\"app-1-b\""));
        assert!(text.contains("response_code=\"200\"} 1"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
