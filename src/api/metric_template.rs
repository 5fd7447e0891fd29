//! MetricTemplate: a named query for canary checks, rendered with the canary's variables (Flagger v1beta1).

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::status::Condition;

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "serin.dev",
    version = "v1beta1",
    kind = "MetricTemplate",
    category = "all",
    namespaced,
    status = "TemplateStatus",
    printcolumn(name = "Provider", type_ = "string", json_path = ".spec.provider.type")
)]
#[serde(rename_all = "camelCase")]
pub struct MetricTemplateSpec {
    pub provider: MetricProvider,
    /// The query, with Go-template variables: name, namespace, target, service, ingress, route, interval,
    /// variables.<key>.
    #[x_kube(validation = Rule::new("self != ''").message("a MetricTemplate needs a query"))]
    pub query: String,
    /// Serin: the template's counts per variant, for `compareToPrimary`: each query is run once for the
    /// canary and once for the primary, with `{{ workload }}` the variant's workload (`<target>` or
    /// `<target>-primary`) and `{{ variant }}` `canary` or `primary`, and `{{ interval }}` the window
    /// judged; each must return one number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<VariantCounts>,
}

/// Two counts over a window, whose ratio is the rate compared.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VariantCounts {
    /// Every event in the window ending at the query's time (e.g. requests): the counters' change over
    /// exactly `{{ interval }}` (`x - x offset {{ interval }}`, or `x` for a series new in it; see the
    /// README), not `increase()`, which rounds sparse events away in short windows.
    #[x_kube(validation = Rule::new("self != ''").message("counts.total needs a query"))]
    pub total: String,
    /// The bad events among them (e.g. 5xx answers).
    #[x_kube(validation = Rule::new("self != ''").message("counts.bad needs a query"))]
    pub bad: String,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MetricProvider {
    #[serde(rename = "type")]
    pub provider_type: MetricProviderType,
    /// The provider's URL (for Prometheus, its base URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// HTTP headers sent with each query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, Vec<String>>>,
    /// A Secret in the template's namespace with credentials (Prometheus: token, or username and password;
    /// certFile-style CA bundle under caCert).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_verify: bool,
}

#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[serde(rename_all = "lowercase")]
pub enum MetricProviderType {
    #[default]
    Prometheus,
    Influxdb,
    Datadog,
    Externalmetrics,
    Stackdriver,
    Cloudwatch,
    Newrelic,
    Graphite,
    Dynatrace,
    Keptn,
    Splunk,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct SecretRef {
    pub name: String,
}

/// Status of a MetricTemplate or AlertProvider: conditions only.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct TemplateStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
