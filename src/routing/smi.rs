//! SMI TrafficSplit (split.smi-spec.io), for provider `linkerd` (v1alpha1, as Flagger drives Linkerd) and
//! `smi:v1alpha1`, `smi:v1alpha2`, `smi:v1alpha3`: a TrafficSplit `<service>` for the root service (the
//! first of `service.hosts`, else the apex Service) splitting between `<service>-canary` and
//! `<service>-primary` by weight. A TrafficSplit has no request matching Flagger uses, so A/B is refused.
//! v1alpha1's weights are quantities (an integer or a string such as "500m"); later versions' are integers.

use kube::api::{ApiResource, DynamicObject, ObjectMeta};
use kube::core::GroupVersionKind;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use super::{Router, RoutingError, ServiceNames};
use crate::api::Canary;
use crate::api::canary::TOTAL_WEIGHT;
use crate::vocabulary::{Traffic, Weights};

/// The TrafficSplit API versions Serin writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SmiVersion {
    V1alpha1,
    V1alpha2,
    V1alpha3,
}

impl SmiVersion {
    fn as_str(self) -> &'static str {
        match self {
            SmiVersion::V1alpha1 => "v1alpha1",
            SmiVersion::V1alpha2 => "v1alpha2",
            SmiVersion::V1alpha3 => "v1alpha3",
        }
    }
}

pub struct SmiRouter {
    pub version: SmiVersion,
    /// The provider's name, for messages ("linkerd", "smi:v1alpha2").
    pub provider: &'static str,
}

pub static LINKERD: SmiRouter = SmiRouter {
    version: SmiVersion::V1alpha1,
    provider: "linkerd",
};
pub static SMI_V1ALPHA1: SmiRouter = SmiRouter {
    version: SmiVersion::V1alpha1,
    provider: "smi:v1alpha1",
};
pub static SMI_V1ALPHA2: SmiRouter = SmiRouter {
    version: SmiVersion::V1alpha2,
    provider: "smi:v1alpha2",
};
pub static SMI_V1ALPHA3: SmiRouter = SmiRouter {
    version: SmiVersion::V1alpha3,
    provider: "smi:v1alpha3",
};

pub fn traffic_splits(version: SmiVersion) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("split.smi-spec.io", version.as_str(), "TrafficSplit"),
        "trafficsplits",
    )
}

/// A weight as written in any version: a number, or (v1alpha1) a quantity string ("100", "500m").
fn weight(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.strip_suffix('m') {
            Some(milli) => milli.parse::<f64>().ok().map(|m| m / 1000.0),
            None => s.parse().ok(),
        },
        _ => None,
    }
}

impl SmiRouter {
    fn split(&self, canary: &Canary, w: Weights) -> Value {
        let names = ServiceNames::of(canary);
        let root = canary
            .spec
            .service
            .hosts
            .first()
            .cloned()
            .unwrap_or(names.apex);
        json!({"service": root, "backends": [
            {"service": names.canary, "weight": w.canary},
            {"service": names.primary, "weight": w.primary}]})
    }

    fn object(&self, canary: &Canary, spec: Value) -> DynamicObject {
        let name = ServiceNames::of(canary).apex;
        let mut split = DynamicObject::new(&name, &traffic_splits(self.version));
        split.metadata = ObjectMeta {
            name: Some(name),
            namespace: canary.namespace(),
            owner_references: canary.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        };
        split.data = json!({ "spec": spec });
        split
    }
}

impl Router for SmiRouter {
    fn name(&self) -> &'static str {
        self.provider
    }

    fn resources(&self) -> Vec<ApiResource> {
        vec![traffic_splits(self.version)]
    }

    fn objects(&self, canary: &Canary) -> Vec<(ApiResource, String)> {
        vec![(traffic_splits(self.version), ServiceNames::of(canary).apex)]
    }

    fn desired(
        &self,
        canary: &Canary,
        traffic: Traffic,
    ) -> Result<Vec<DynamicObject>, RoutingError> {
        if traffic == Traffic::Mirrored {
            return Err(super::no_mirroring(canary, self.provider));
        }
        let Traffic::Split(w) = traffic else {
            return Err(RoutingError::Unsupported {
                canary: canary.name_any(),
                router: self.provider,
                field: "spec.analysis.match (A/B: a TrafficSplit can't route by request)".into(),
            });
        };
        Ok(vec![self.object(canary, self.split(canary, w))])
    }

    fn handed_back(&self, canary: &Canary) -> Result<Vec<DynamicObject>, RoutingError> {
        let names = ServiceNames::of(canary);
        let mut spec = self.split(canary, Weights::canary(0));
        // Everything to the apex Service, which selects the target's pods once it is handed back.
        spec["backends"] = json!([{"service": names.apex, "weight": TOTAL_WEIGHT}]);
        let mut split = self.object(canary, spec);
        split.metadata.owner_references = None;
        Ok(vec![split])
    }

    fn traffic(&self, canary: &Canary, route: &DynamicObject) -> Option<Traffic> {
        let names = ServiceNames::of(canary);
        let backends = route.data["spec"]["backends"].as_array()?;
        let weight_of = |name: &str| {
            backends
                .iter()
                .filter(|b| b["service"] == name)
                .filter_map(|b| weight(&b["weight"]))
                .sum::<f64>()
        };
        Weights::from_relative(weight_of(&names.primary), weight_of(&names.canary))
            .map(Traffic::Split)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary(service: Value) -> Canary {
        let mut svc = json!({"port": 9898});
        if let (Some(s), Some(extra)) = (svc.as_object_mut(), service.as_object()) {
            s.extend(extra.clone());
        }
        serde_json::from_value(json!({
            "apiVersion": "serin.dev/v1beta1", "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "test", "uid": "u1"},
            "spec": {"provider": "linkerd", "targetRef": {"name": "podinfo"}, "service": svc}
        }))
        .unwrap()
    }

    #[test]
    fn a_split_names_the_root_service_and_both_backends_in_each_version() {
        let c = canary(json!({}));
        for (router, version) in [
            (&LINKERD, "v1alpha1"),
            (&SMI_V1ALPHA2, "v1alpha2"),
            (&SMI_V1ALPHA3, "v1alpha3"),
        ] {
            let split = &router
                .desired(&c, Traffic::Split(Weights::canary(20)))
                .unwrap()[0];
            let types = split.types.as_ref().unwrap();
            assert_eq!(types.api_version, format!("split.smi-spec.io/{version}"));
            assert_eq!(types.kind, "TrafficSplit");
            assert_eq!(
                split.data["spec"],
                json!({"service": "podinfo", "backends": [
                    {"service": "podinfo-canary", "weight": 20},
                    {"service": "podinfo-primary", "weight": 80}]})
            );
            assert_eq!(
                router.traffic(&c, split),
                Some(Traffic::Split(Weights::canary(20)))
            );
        }
        // The root service is the first host when there are hosts.
        let c = canary(json!({"hosts": ["podinfo.test.svc.cluster.local"]}));
        let split = &LINKERD
            .desired(&c, Traffic::Split(Weights::canary(0)))
            .unwrap()[0];
        assert_eq!(
            split.data["spec"]["service"],
            "podinfo.test.svc.cluster.local"
        );
    }

    #[test]
    fn v1alpha1_quantities_are_read_back() {
        let c = canary(json!({}));
        let mut split = DynamicObject::new("podinfo", &traffic_splits(SmiVersion::V1alpha1));
        split.data = json!({"spec": {"service": "podinfo", "backends": [
            {"service": "podinfo-canary", "weight": "250m"},
            {"service": "podinfo-primary", "weight": "750m"}]}});
        assert_eq!(
            LINKERD.traffic(&c, &split),
            Some(Traffic::Split(Weights::canary(25)))
        );
        split.data["spec"]["backends"] = json!([{"service": "podinfo", "weight": 100}]);
        assert_eq!(LINKERD.traffic(&c, &split), None);
    }

    #[test]
    fn ab_is_refused_naming_the_provider() {
        let err = SMI_V1ALPHA2
            .desired(&canary(json!({})), Traffic::Matched)
            .unwrap_err();
        assert!(err.to_string().contains("smi:v1alpha2"), "{err}");
        assert!(err.to_string().contains("spec.analysis.match"), "{err}");
    }

    #[test]
    fn handed_back_sends_everything_to_the_apex_without_the_owner() {
        let split = &LINKERD.handed_back(&canary(json!({}))).unwrap()[0];
        assert!(split.metadata.owner_references.is_none());
        assert_eq!(
            split.data["spec"]["backends"],
            json!([{"service": "podinfo", "weight": 100}])
        );
    }
}
