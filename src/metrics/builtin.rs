//! The built-in checks, request-success-rate (percent) and request-duration (milliseconds, p99), with the
//! query each provider's telemetry answers them with, as Flagger defines them (whitespace collapsed).

use crate::api::Provider;
pub use crate::vocabulary::Builtin;

/// Whose telemetry the built-in queries read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// podinfo-style app metrics (`http_request_duration_seconds`), for gatewayapi and kubernetes.
    Http,
    Istio,
    Linkerd,
    Nginx,
    /// Envoy's cluster series, as Contour's Envoy exports them.
    Contour,
    Traefik,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the built-in checks have no queries for provider {0} yet (they have for gatewayapi, kubernetes, istio, linkerd, nginx, contour, traefik): use a MetricTemplate"
)]
pub struct NoQueries(pub Provider);

impl Family {
    /// The family a routing provider's canaries are measured with, as Flagger chooses it.
    pub fn of(provider: Provider) -> Result<Family, NoQueries> {
        use Provider::*;
        match provider {
            Kubernetes | GatewayApi | GatewayApiV1 | GatewayApiV1beta1 => Ok(Family::Http),
            Istio => Ok(Family::Istio),
            Linkerd => Ok(Family::Linkerd),
            Nginx => Ok(Family::Nginx),
            Contour => Ok(Family::Contour),
            Traefik => Ok(Family::Traefik),
            other => Err(NoQueries(other)),
        }
    }

    /// The query template (rendered with [`super::template::render`]).
    pub fn query(self, check: Builtin) -> &'static str {
        use Builtin::*;
        match (self, check) {
            (Family::Http, RequestSuccessRate) => concat!(
                r#"sum( rate( http_request_duration_seconds_count{ kubernetes_namespace="{{ namespace }}", kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)", status!~"5.*" }[{{ interval }}] ) ) "#,
                r#"/ sum( rate( http_request_duration_seconds_count{ kubernetes_namespace="{{ namespace }}", kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)" }[{{ interval }}] ) ) * 100"#
            ),
            (Family::Http, RequestDuration) => {
                r#"histogram_quantile( 0.99, sum( rate( http_request_duration_seconds_bucket{ kubernetes_namespace="{{ namespace }}", kubernetes_pod_name=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)" }[{{ interval }}] ) ) by (le) )"#
            }
            (Family::Istio, RequestSuccessRate) => concat!(
                r#"sum( rate( istio_requests_total{ reporter="destination", destination_workload_namespace="{{ namespace }}", destination_workload=~"{{ target }}", response_code!~"5.*" }[{{ interval }}] ) ) "#,
                r#"/ sum( rate( istio_requests_total{ reporter="destination", destination_workload_namespace="{{ namespace }}", destination_workload=~"{{ target }}" }[{{ interval }}] ) ) * 100"#
            ),
            (Family::Istio, RequestDuration) => {
                r#"histogram_quantile( 0.99, sum( rate( istio_request_duration_milliseconds_bucket{ reporter="destination", destination_workload_namespace="{{ namespace }}", destination_workload=~"{{ target }}" }[{{ interval }}] ) ) by (le) )"#
            }
            (Family::Linkerd, RequestSuccessRate) => concat!(
                r#"sum( rate( response_total{ namespace="{{ namespace }}", deployment=~"{{ target }}", classification!="failure", direction="inbound" }[{{ interval }}] ) ) "#,
                r#"/ sum( rate( response_total{ namespace="{{ namespace }}", deployment=~"{{ target }}", direction="inbound" }[{{ interval }}] ) ) * 100"#
            ),
            (Family::Linkerd, RequestDuration) => {
                r#"histogram_quantile( 0.99, sum( rate( response_latency_ms_bucket{ namespace="{{ namespace }}", deployment=~"{{ target }}", direction="inbound" }[{{ interval }}] ) ) by (le) )"#
            }
            (Family::Nginx, RequestSuccessRate) => concat!(
                r#"sum( rate( nginx_ingress_controller_requests{ namespace="{{ namespace }}", ingress="{{ ingress }}", canary!="", status!~"5.*" }[{{ interval }}] ) ) "#,
                r#"/ sum( rate( nginx_ingress_controller_requests{ namespace="{{ namespace }}", ingress="{{ ingress }}", canary!="" }[{{ interval }}] ) ) * 100"#
            ),
            (Family::Nginx, RequestDuration) => concat!(
                r#"sum( rate( nginx_ingress_controller_response_duration_seconds_sum{ namespace="{{ namespace }}", ingress="{{ ingress }}", canary!="" }[{{ interval }}] ) ) "#,
                r#"/ sum( rate( nginx_ingress_controller_response_duration_seconds_count{ namespace="{{ namespace }}", ingress="{{ ingress }}", canary!="" }[{{ interval }}] ) ) * 1000"#
            ),
            (Family::Contour, RequestSuccessRate) => concat!(
                r#"sum( rate( envoy_cluster_upstream_rq{ envoy_cluster_name=~"{{ namespace }}_{{ service }}-canary_[0-9a-zA-Z-]+", envoy_response_code!~"5.*" }[{{ interval }}] ) ) "#,
                r#"/ sum( rate( envoy_cluster_upstream_rq{ envoy_cluster_name=~"{{ namespace }}_{{ service }}-canary_[0-9a-zA-Z-]+", }[{{ interval }}] ) ) * 100"#
            ),
            (Family::Contour, RequestDuration) => {
                r#"histogram_quantile( 0.99, sum( rate( envoy_cluster_upstream_rq_time_bucket{ envoy_cluster_name=~"{{ namespace }}_{{ service }}-canary_[0-9a-zA-Z-]+", }[{{ interval }}] ) ) by (le) )"#
            }
            (Family::Traefik, RequestSuccessRate) => concat!(
                r#"sum( rate( traefik_service_request_duration_seconds_bucket{ service=~"{{ namespace }}-{{ target }}-canary-[0-9a-zA-Z-]+@kubernetescrd", code!~"5..", le="+Inf" }[{{ interval }}] ) ) "#,
                r#"/ sum( rate( traefik_service_request_duration_seconds_bucket{ service=~"{{ namespace }}-{{ target }}-canary-[0-9a-zA-Z-]+@kubernetescrd", le="+Inf" }[{{ interval }}] ) ) * 100"#
            ),
            (Family::Traefik, RequestDuration) => {
                r#"histogram_quantile( 0.99, sum( rate( traefik_service_request_duration_seconds_bucket{ service=~"{{ namespace }}-{{ target }}-canary-[0-9a-zA-Z-]+@kubernetescrd" }[{{ interval }}] ) ) by (le) ) * 1000"#
            }
        }
    }

    /// The query's answer in the check's unit: percent, or whole milliseconds (podinfo's histogram is in
    /// seconds). Flagger truncates durations to whole milliseconds before comparing, and so does Serin:
    /// 500.4ms passes a maximum of 500.
    pub fn to_unit(self, check: Builtin, value: f64) -> f64 {
        match (self, check) {
            (Family::Http, Builtin::RequestDuration) => (value * 1000.0).trunc(),
            (_, Builtin::RequestDuration) => value.trunc(),
            (_, Builtin::RequestSuccessRate) => value,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::template::{Variables, render};

    fn rendered(family: Family, check: Builtin, namespace: &str) -> String {
        let vars = Variables {
            name: "podinfo".into(),
            namespace: namespace.into(),
            target: "podinfo".into(),
            service: "podinfo".into(),
            ingress: "podinfo".into(),
            route: "podinfo".into(),
            interval: "1m".into(),
            variables: Default::default(),
            variant: None,
        };
        render(family.query(check), &vars).unwrap()
    }

    // Golden: the queries Flagger sends for namespace default (nginx: nginx), target podinfo, interval 1m,
    // with its whitespace collapsed.
    #[test]
    fn http_queries_are_flaggers() {
        assert_eq!(
            rendered(Family::Http, Builtin::RequestSuccessRate, "default"),
            r#"sum( rate( http_request_duration_seconds_count{ kubernetes_namespace="default", kubernetes_pod_name=~"podinfo-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)", status!~"5.*" }[1m] ) ) / sum( rate( http_request_duration_seconds_count{ kubernetes_namespace="default", kubernetes_pod_name=~"podinfo-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)" }[1m] ) ) * 100"#
        );
        assert_eq!(
            rendered(Family::Http, Builtin::RequestDuration, "default"),
            r#"histogram_quantile( 0.99, sum( rate( http_request_duration_seconds_bucket{ kubernetes_namespace="default", kubernetes_pod_name=~"podinfo-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)" }[1m] ) ) by (le) )"#
        );
    }

    #[test]
    fn istio_queries_are_flaggers() {
        assert_eq!(
            rendered(Family::Istio, Builtin::RequestSuccessRate, "default"),
            r#"sum( rate( istio_requests_total{ reporter="destination", destination_workload_namespace="default", destination_workload=~"podinfo", response_code!~"5.*" }[1m] ) ) / sum( rate( istio_requests_total{ reporter="destination", destination_workload_namespace="default", destination_workload=~"podinfo" }[1m] ) ) * 100"#
        );
        assert_eq!(
            rendered(Family::Istio, Builtin::RequestDuration, "default"),
            r#"histogram_quantile( 0.99, sum( rate( istio_request_duration_milliseconds_bucket{ reporter="destination", destination_workload_namespace="default", destination_workload=~"podinfo" }[1m] ) ) by (le) )"#
        );
    }

    #[test]
    fn linkerd_queries_are_flaggers() {
        assert_eq!(
            rendered(Family::Linkerd, Builtin::RequestSuccessRate, "default"),
            r#"sum( rate( response_total{ namespace="default", deployment=~"podinfo", classification!="failure", direction="inbound" }[1m] ) ) / sum( rate( response_total{ namespace="default", deployment=~"podinfo", direction="inbound" }[1m] ) ) * 100"#
        );
        assert_eq!(
            rendered(Family::Linkerd, Builtin::RequestDuration, "default"),
            r#"histogram_quantile( 0.99, sum( rate( response_latency_ms_bucket{ namespace="default", deployment=~"podinfo", direction="inbound" }[1m] ) ) by (le) )"#
        );
    }

    #[test]
    fn nginx_queries_are_flaggers() {
        assert_eq!(
            rendered(Family::Nginx, Builtin::RequestSuccessRate, "nginx"),
            r#"sum( rate( nginx_ingress_controller_requests{ namespace="nginx", ingress="podinfo", canary!="", status!~"5.*" }[1m] ) ) / sum( rate( nginx_ingress_controller_requests{ namespace="nginx", ingress="podinfo", canary!="" }[1m] ) ) * 100"#
        );
        assert_eq!(
            rendered(Family::Nginx, Builtin::RequestDuration, "nginx"),
            r#"sum( rate( nginx_ingress_controller_response_duration_seconds_sum{ namespace="nginx", ingress="podinfo", canary!="" }[1m] ) ) / sum( rate( nginx_ingress_controller_response_duration_seconds_count{ namespace="nginx", ingress="podinfo", canary!="" }[1m] ) ) * 1000"#
        );
    }

    #[test]
    fn contour_and_traefik_queries_are_flaggers() {
        assert_eq!(
            rendered(Family::Contour, Builtin::RequestSuccessRate, "web"),
            r#"sum( rate( envoy_cluster_upstream_rq{ envoy_cluster_name=~"web_podinfo-canary_[0-9a-zA-Z-]+", envoy_response_code!~"5.*" }[1m] ) ) / sum( rate( envoy_cluster_upstream_rq{ envoy_cluster_name=~"web_podinfo-canary_[0-9a-zA-Z-]+", }[1m] ) ) * 100"#
        );
        assert_eq!(
            rendered(Family::Contour, Builtin::RequestDuration, "web"),
            r#"histogram_quantile( 0.99, sum( rate( envoy_cluster_upstream_rq_time_bucket{ envoy_cluster_name=~"web_podinfo-canary_[0-9a-zA-Z-]+", }[1m] ) ) by (le) )"#
        );
        assert_eq!(
            rendered(Family::Traefik, Builtin::RequestSuccessRate, "web"),
            r#"sum( rate( traefik_service_request_duration_seconds_bucket{ service=~"web-podinfo-canary-[0-9a-zA-Z-]+@kubernetescrd", code!~"5..", le="+Inf" }[1m] ) ) / sum( rate( traefik_service_request_duration_seconds_bucket{ service=~"web-podinfo-canary-[0-9a-zA-Z-]+@kubernetescrd", le="+Inf" }[1m] ) ) * 100"#
        );
        assert_eq!(
            rendered(Family::Traefik, Builtin::RequestDuration, "web"),
            r#"histogram_quantile( 0.99, sum( rate( traefik_service_request_duration_seconds_bucket{ service=~"web-podinfo-canary-[0-9a-zA-Z-]+@kubernetescrd" }[1m] ) ) by (le) ) * 1000"#
        );
    }

    #[test]
    fn families_follow_the_provider() {
        assert_eq!(Family::of(Provider::GatewayApi), Ok(Family::Http));
        assert_eq!(Family::of(Provider::GatewayApiV1beta1), Ok(Family::Http));
        assert_eq!(Family::of(Provider::Kubernetes), Ok(Family::Http));
        assert_eq!(Family::of(Provider::Istio), Ok(Family::Istio));
        assert_eq!(Family::of(Provider::Linkerd), Ok(Family::Linkerd));
        assert_eq!(Family::of(Provider::Nginx), Ok(Family::Nginx));
        assert_eq!(Family::of(Provider::Contour), Ok(Family::Contour));
        assert_eq!(Family::of(Provider::Traefik), Ok(Family::Traefik));
        let err = Family::of(Provider::Gloo).unwrap_err();
        assert!(err.to_string().contains("provider gloo"), "{err}");
    }

    #[test]
    fn podinfo_durations_are_converted_to_milliseconds() {
        let d = Builtin::RequestDuration;
        assert_eq!(Family::Http.to_unit(d, 0.25), 250.0);
        assert_eq!(Family::Http.to_unit(d, 0.5004), 500.0);
        assert_eq!(Family::Istio.to_unit(d, 250.9), 250.0);
        assert_eq!(Family::Istio.to_unit(d, f64::INFINITY), f64::INFINITY);
        assert_eq!(
            Family::Http.to_unit(Builtin::RequestSuccessRate, 99.0),
            99.0
        );
    }
}
