//! The Canary resource: Flagger v1beta1's fields, names, defaults and meanings, in group serin.dev.

// Each printcolumn(...) of the kube attribute repeats the keys type_ and priority, which clippy takes for
// duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::analysis::Analysis;
use super::schema::{any_object, any_object_list, int_or_string};
use super::status::CanaryStatus;

/// Flagger's default progress deadline.
pub const DEFAULT_PROGRESS_DEADLINE_SECONDS: i32 = 600;
/// Flagger's default analysis interval.
pub const DEFAULT_INTERVAL: &str = "60s";
/// Flagger's default range of a metric's query.
pub const DEFAULT_METRIC_INTERVAL: &str = "1m";
/// Flagger's default readiness thresholds: every updated replica available.
pub const DEFAULT_READY_THRESHOLD: i32 = 100;
/// The weight that is all of the traffic.
pub const TOTAL_WEIGHT: i32 = 100;

/// A Canary runs each new revision of its target beside the stable primary, shifts traffic to it step by
/// step, and promotes or rolls it back on what its checks say.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "serin.dev",
    version = "v1beta1",
    kind = "Canary",
    plural = "canaries",
    singular = "canary",
    category = "all",
    namespaced,
    status = "CanaryStatus",
    printcolumn(name = "Status", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Weight", type_ = "integer", json_path = ".status.canaryWeight"),
    printcolumn(
        name = "FailedChecks",
        type_ = "integer",
        json_path = ".status.failedChecks"
    ),
    printcolumn(
        name = "LastTransition",
        type_ = "date",
        json_path = ".status.lastTransitionTime"
    ),
    printcolumn(name = "Target", type_ = "string", json_path = ".spec.targetRef.kind"),
    printcolumn(
        name = "Interval",
        type_ = "string",
        json_path = ".spec.analysis.interval",
        priority = 1
    ),
    printcolumn(
        name = "StepWeight",
        type_ = "integer",
        json_path = ".spec.analysis.stepWeight",
        priority = 1
    ),
    printcolumn(
        name = "MaxWeight",
        type_ = "integer",
        json_path = ".spec.analysis.maxWeight",
        priority = 1
    ),
    printcolumn(
        name = "Git",
        type_ = "string",
        json_path = ".status.writeBack.phase",
        priority = 1
    ),
    printcolumn(
        name = "Suspended",
        type_ = "boolean",
        json_path = ".spec.suspend",
        priority = 1
    )
)]
#[serde(rename_all = "camelCase")]
pub struct CanarySpec {
    /// The traffic provider that routes between primary and canary; defaults to the controller's --provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<Provider>,
    /// The Prometheus address for this canary's checks; defaults to the controller's --metrics-server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_server: Option<String>,
    /// The workload whose new revisions are run as canaries.
    pub target_ref: TargetRef,
    /// The HorizontalPodAutoscaler or KEDA ScaledObject of the target, copied for the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaler_ref: Option<AutoscalerRef>,
    /// The Ingress that routes to the target (provider nginx).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_ref: Option<ObjectRef>,
    /// The APISIX route (provider apisix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_ref: Option<ObjectRef>,
    /// The Gloo upstream (provider gloo).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_ref: Option<CrossNamespaceRef>,
    /// The Services and route Serin manages for the target.
    pub service: CanaryService,
    /// How each new revision is analysed and how traffic moves to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<Analysis>,
    /// Deprecated spelling of `analysis`, read when `analysis` is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_analysis: Option<Analysis>,
    /// Seconds a canary or primary may take to become ready (and a check may hold for lack of data) before
    /// the canary fails; default 600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("progressDeadlineSeconds must be at least 1"))]
    pub progress_deadline_seconds: Option<i32>,
    /// Promote new revisions at once, without analysis.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_analysis: bool,
    /// When the Canary is deleted, give the target back its replicas and the apex Service its selector.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revert_on_deletion: bool,
    /// Pause: no new analysis starts and a running one stops where it is.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
    /// Serin: when a canary fails, commit the images the primary runs back to the git repository the
    /// target is applied from (README "Roll forward in git"). Absent: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_back: Option<super::write_back::WriteBack>,
}

/// Routing providers, spelled as Flagger spells them. Which ones Serin can drive yet is the routing
/// module's to say; an unknown name is refused by the API server.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Provider {
    #[serde(rename = "kubernetes")]
    Kubernetes,
    #[serde(rename = "gatewayapi")]
    GatewayApi,
    #[serde(rename = "gatewayapi:v1")]
    GatewayApiV1,
    #[serde(rename = "gatewayapi:v1beta1")]
    GatewayApiV1beta1,
    #[serde(rename = "istio")]
    Istio,
    #[serde(rename = "linkerd")]
    Linkerd,
    #[serde(rename = "smi:v1alpha1")]
    SmiV1alpha1,
    #[serde(rename = "smi:v1alpha2")]
    SmiV1alpha2,
    #[serde(rename = "smi:v1alpha3")]
    SmiV1alpha3,
    #[serde(rename = "nginx")]
    Nginx,
    #[serde(rename = "contour")]
    Contour,
    #[serde(rename = "traefik")]
    Traefik,
    #[serde(rename = "gloo")]
    Gloo,
    #[serde(rename = "skipper")]
    Skipper,
    #[serde(rename = "appmesh")]
    AppMesh,
    #[serde(rename = "appmesh:v1beta2")]
    AppMeshV1beta2,
    #[serde(rename = "osm")]
    Osm,
    #[serde(rename = "kuma")]
    Kuma,
    #[serde(rename = "knative")]
    Knative,
    #[serde(rename = "apisix")]
    Apisix,
}

impl Provider {
    /// The name as written in a Canary.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Kubernetes => "kubernetes",
            Provider::GatewayApi => "gatewayapi",
            Provider::GatewayApiV1 => "gatewayapi:v1",
            Provider::GatewayApiV1beta1 => "gatewayapi:v1beta1",
            Provider::Istio => "istio",
            Provider::Linkerd => "linkerd",
            Provider::SmiV1alpha1 => "smi:v1alpha1",
            Provider::SmiV1alpha2 => "smi:v1alpha2",
            Provider::SmiV1alpha3 => "smi:v1alpha3",
            Provider::Nginx => "nginx",
            Provider::Contour => "contour",
            Provider::Traefik => "traefik",
            Provider::Gloo => "gloo",
            Provider::Skipper => "skipper",
            Provider::AppMesh => "appmesh",
            Provider::AppMeshV1beta2 => "appmesh:v1beta2",
            Provider::Osm => "osm",
            Provider::Kuma => "kuma",
            Provider::Knative => "knative",
            Provider::Apisix => "apisix",
        }
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Deployment (default), DaemonSet, or StatefulSet (Serin's addition: Flagger has no StatefulSet
    /// targets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "Deployment"))]
    pub kind: Option<TargetKind>,
    #[x_kube(validation = Rule::new("self != ''").message("targetRef.name must name the workload to run canaries of"))]
    pub name: String,
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetKind {
    Deployment,
    DaemonSet,
    StatefulSet,
    Service,
}

/// A reference to an object in the Canary's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub name: String,
}

/// A reference to an object in any namespace (the Canary's by default).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CrossNamespaceRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalerRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// HorizontalPodAutoscaler (autoscaling/v2; the default) or ScaledObject (KEDA, keda.sh/v1alpha1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<AutoscalerKind>,
    #[x_kube(validation = Rule::new("self != ''").message("autoscalerRef.name must name the target's autoscaler"))]
    pub name: String,
    /// KEDA: queries of the primary's ScaledObject, by trigger name (default: each trigger's `query` with
    /// the target's name replaced by the primary's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_scaler_queries: Option<BTreeMap<String, String>>,
    /// Replica bounds of the primary's scaler, when they differ from the target's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_scaler_replicas: Option<ScalerReplicas>,
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoscalerKind {
    HorizontalPodAutoscaler,
    ScaledObject,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScalerReplicas {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<i32>,
}

/// The Gateway API route kind a Canary's traffic goes through.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum RouteKind {
    #[default]
    #[serde(rename = "HTTPRoute")]
    HttpRoute,
    #[serde(rename = "GRPCRoute")]
    GrpcRoute,
}

/// The Services (apex `<name>`, `<name>-primary`, `<name>-canary`) and the route Serin manages.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CanaryService {
    /// The apex Service's name; defaults to the target's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The Services' port.
    #[x_kube(validation = Rule::new("self >= 1 && self <= 65535").message("service.port must be a port number, 1 to 65535"))]
    pub port: i32,
    /// The port's name; default "http".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_name: Option<String>,
    /// The container port (number or name); defaults to `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "int_or_string")]
    pub target_port: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_distribution: Option<String>,
    /// Expose every container port of the target, not only `port`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub port_discovery: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub headless: bool,
    /// Request timeout on the route (e.g. "30s").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_timeout: Option<String>,
    /// Istio gateways.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// Gateway API parents of the HTTPRoute.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateway_refs: Vec<ParentRef>,
    /// Serin: the Gateway API route Serin writes, HTTPRoute (the default, as Flagger) or GRPCRoute (for
    /// gRPC services); providers gatewayapi and gatewayapi:v1 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_kind: Option<RouteKind>,
    /// Hostnames of the route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delegation: bool,
    /// Istio traffic policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub traffic_policy: Option<Value>,
    /// Request matches of the route (Istio HTTPMatchRequest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object_list")]
    pub r#match: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<HttpRewrite>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub retries: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub headers: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object_list")]
    pub mirror: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub cors_policy: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<String>,
    /// Labels and annotations for the apex Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apex: Option<CustomMetadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<CustomMetadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CustomMetadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmanaged_metadata: Option<UnmanagedMetadata>,
}

/// A Gateway API parent reference.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ParentRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpRewrite {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub rewrite_type: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct CustomMetadata {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Label and annotation keys on the generated objects that other controllers own.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct UnmanagedMetadata {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub annotations: Vec<String>,
}

impl CanarySpec {
    /// The analysis in force: `analysis`, else the deprecated `canaryAnalysis`.
    pub fn active_analysis(&self) -> Option<&Analysis> {
        self.analysis.as_ref().or(self.canary_analysis.as_ref())
    }
}
