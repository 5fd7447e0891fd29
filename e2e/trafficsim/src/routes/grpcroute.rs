//! Gateway API GRPCRoute (gateway.networking.k8s.io/v1): the same rules as an HTTPRoute's for what the
//! simulator models (header matches, weighted backends, mirrors, response cookies); a gRPC method match is
//! not simulated (the route is skipped with a warning).

use kube::CustomResource;
use serde::{Deserialize, Serialize};

use super::httproute::{Rule, gateway_route};
use super::{RouteObject, RouteSettings};
use crate::model::SimRoute;

#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "GRPCRoute",
    namespaced,
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct GRPCRouteSpec {
    #[serde(default)]
    pub rules: Vec<Rule>,
}

impl RouteObject for GRPCRoute {
    const PROVIDER: &'static str = "gatewayapi-grpc";

    fn to_sim_route(&self, settings: RouteSettings) -> Result<SimRoute, String> {
        gateway_route(Self::PROVIDER, &self.metadata, &self.spec.rules, settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BackendTarget, ServiceKey};

    fn route(spec: serde_json::Value) -> GRPCRoute {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute",
            "metadata": {"name": "grpc", "namespace": "test"}, "spec": spec
        }))
        .unwrap()
    }

    #[test]
    fn weighted_backends_and_header_matches_are_read() {
        let r = route(serde_json::json!({"rules": [
            {"matches": [{"headers": [{"name": "X-Canary", "value": "insider"}]}],
             "backendRefs": [{"name": "grpc-canary", "weight": 100}]},
            {"backendRefs": [{"name": "grpc-primary", "weight": 75}, {"name": "grpc-canary", "weight": 25}]}]}))
        .to_sim_route(RouteSettings::for_tests())
        .unwrap();
        assert_eq!(r.provider, "gatewayapi-grpc");
        let insider =
            std::collections::BTreeMap::from([("x-canary".to_string(), "insider".to_string())]);
        assert!(r.rules[0].matches[0].holds(&insider));
        assert_eq!(r.rules[1].backends[1].weight, 25);
        assert_eq!(
            r.rules[1].backends[0].target,
            BackendTarget::Service(ServiceKey {
                namespace: "test".into(),
                name: "grpc-primary".into()
            })
        );
    }

    #[test]
    fn a_method_match_is_not_simulated() {
        let e = route(serde_json::json!({"rules": [
            {"matches": [{"method": {"service": "shop.Cart", "method": "Add"}}], "backendRefs": []}]}))
        .to_sim_route(RouteSettings::for_tests())
        .unwrap_err();
        assert!(e.contains("gRPC method"), "{e}");
    }
}
