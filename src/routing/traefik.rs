//! Traefik: a TraefikService `<service>` (traefik.io/v1alpha1) with a weighted round robin over
//! `<service>-primary` and `<service>-canary`, as Flagger writes it: the canary is listed only while its
//! weight is above zero. The user's IngressRoute names the TraefikService (`kind: TraefikService`). A
//! TraefikService does not route by request, so A/B is refused.

use kube::api::{ApiResource, DynamicObject, ObjectMeta};
use kube::core::GroupVersionKind;
use kube::{Resource, ResourceExt};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Router, RoutingError, ServiceNames};
use crate::api::Canary;
use crate::api::canary::TOTAL_WEIGHT;
use crate::vocabulary::{Traffic, Weights};

pub struct TraefikRouter;

pub fn traefik_services() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("traefik.io", "v1alpha1", "TraefikService"),
        "traefikservices",
    )
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct TraefikServiceSpec {
    #[serde(default)]
    pub weighted: Option<Weighted>,
    #[serde(default)]
    pub mirroring: Option<Mirroring>,
}

/// Every request to `name`, and a copy of `percent` of them to each mirror (answers dropped).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Mirroring {
    pub name: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub port: i32,
    #[serde(default)]
    pub mirrors: Vec<Mirror>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Mirror {
    pub name: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub port: i32,
    #[serde(default)]
    pub percent: i32,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Weighted {
    #[serde(default)]
    pub services: Vec<WeightedService>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct WeightedService {
    pub name: String,
    pub namespace: String,
    pub port: i32,
    /// Traefik reads a missing weight as 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i64>,
}

impl TraefikRouter {
    fn service(&self, canary: &Canary, name: &str, weight: i32) -> WeightedService {
        WeightedService {
            name: name.to_string(),
            namespace: canary.namespace().unwrap_or_default(),
            port: canary.spec.service.port,
            weight: Some(i64::from(weight)),
        }
    }

    fn object(&self, canary: &Canary, services: Vec<WeightedService>) -> DynamicObject {
        let name = ServiceNames::of(canary).apex;
        let mut object = DynamicObject::new(&name, &traefik_services());
        object.metadata = ObjectMeta {
            name: Some(name),
            namespace: canary.namespace(),
            owner_references: canary.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        };
        object.data = json!({"spec": {"weighted": {"services": services}}});
        object
    }
}

impl Router for TraefikRouter {
    fn name(&self) -> &'static str {
        "traefik"
    }

    fn resources(&self) -> Vec<ApiResource> {
        vec![traefik_services()]
    }

    fn objects(&self, canary: &Canary) -> Vec<(ApiResource, String)> {
        vec![(traefik_services(), ServiceNames::of(canary).apex)]
    }

    fn desired(
        &self,
        canary: &Canary,
        traffic: Traffic,
    ) -> Result<Vec<DynamicObject>, RoutingError> {
        let names = ServiceNames::of(canary);
        let w = match traffic {
            Traffic::Split(w) => w,
            Traffic::Matched => {
                return Err(RoutingError::Unsupported {
                    canary: canary.name_any(),
                    router: "traefik",
                    field: "spec.analysis.match (A/B: a TraefikService can't route by request)"
                        .into(),
                });
            }
            Traffic::Mirrored => {
                let ns = canary.namespace().unwrap_or_default();
                let port = canary.spec.service.port;
                let mirroring = Mirroring {
                    name: names.primary.clone(),
                    namespace: ns.clone(),
                    port,
                    mirrors: vec![Mirror {
                        name: names.canary.clone(),
                        namespace: ns,
                        port,
                        percent: super::mirror_percent(canary),
                    }],
                };
                let mut object = self.object(canary, vec![]);
                object.data = json!({"spec": {"mirroring": mirroring}});
                return Ok(vec![object]);
            }
        };
        let mut services = vec![self.service(canary, &names.primary, w.primary)];
        if w.canary > 0 {
            services.push(self.service(canary, &names.canary, w.canary));
        }
        Ok(vec![self.object(canary, services)])
    }

    fn handed_back(&self, canary: &Canary) -> Result<Vec<DynamicObject>, RoutingError> {
        let apex = ServiceNames::of(canary).apex;
        let mut object = self.object(canary, vec![self.service(canary, &apex, TOTAL_WEIGHT)]);
        object.metadata.owner_references = None;
        Ok(vec![object])
    }

    fn traffic(&self, canary: &Canary, route: &DynamicObject) -> Option<Traffic> {
        let names = ServiceNames::of(canary);
        let spec: TraefikServiceSpec =
            serde_json::from_value(route.data.get("spec")?.clone()).ok()?;
        if let Some(m) = &spec.mirroring {
            let to_canary = m.mirrors.iter().any(|x| x.name == names.canary);
            return (m.name == names.primary && to_canary).then_some(Traffic::Mirrored);
        }
        let services = spec.weighted?.services;
        let weight_of = |name: &str| {
            services
                .iter()
                .filter(|s| s.name == name)
                .map(|s| s.weight.unwrap_or(1).max(0))
                .sum::<i64>()
        };
        Weights::from_relative(
            weight_of(&names.primary) as f64,
            weight_of(&names.canary) as f64,
        )
        .map(Traffic::Split)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn canary() -> Canary {
        serde_json::from_value(json!({
            "apiVersion": "serin.dev/v1beta1", "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "test", "uid": "u1"},
            "spec": {"provider": "traefik", "targetRef": {"name": "podinfo"}, "service": {"port": 9898}}
        }))
        .unwrap()
    }

    fn services(object: &DynamicObject) -> Value {
        object.data["spec"]["weighted"]["services"].clone()
    }

    #[test]
    fn the_canary_is_listed_only_with_a_weight() {
        let c = canary();
        let start = &TraefikRouter
            .desired(&c, Traffic::Split(Weights::canary(0)))
            .unwrap()[0];
        let types = start.types.as_ref().unwrap();
        assert_eq!(
            (types.api_version.as_str(), types.kind.as_str()),
            ("traefik.io/v1alpha1", "TraefikService")
        );
        assert_eq!(
            services(start),
            json!([{"name": "podinfo-primary", "namespace": "test", "port": 9898, "weight": 100}])
        );
        assert_eq!(
            TraefikRouter.traffic(&c, start),
            Some(Traffic::Split(Weights::canary(0)))
        );
        let step = &TraefikRouter
            .desired(&c, Traffic::Split(Weights::canary(40)))
            .unwrap()[0];
        assert_eq!(
            services(step),
            json!([{"name": "podinfo-primary", "namespace": "test", "port": 9898, "weight": 60},
                {"name": "podinfo-canary", "namespace": "test", "port": 9898, "weight": 40}])
        );
        assert_eq!(
            TraefikRouter.traffic(&c, step),
            Some(Traffic::Split(Weights::canary(40)))
        );
    }

    #[test]
    fn a_weight_left_out_is_one() {
        let c = canary();
        let mut object = DynamicObject::new("podinfo", &traefik_services());
        object.data = json!({"spec": {"weighted": {"services": [
            {"name": "podinfo-primary", "namespace": "test", "port": 9898},
            {"name": "podinfo-canary", "namespace": "test", "port": 9898, "weight": 3}]}}});
        assert_eq!(
            TraefikRouter.traffic(&c, &object),
            Some(Traffic::Split(Weights::canary(75)))
        );
        object.data = json!({"spec": {"mirroring": {"name": "other"}}});
        assert_eq!(TraefikRouter.traffic(&c, &object), None);
    }

    #[test]
    fn mirroring_sends_everything_to_the_primary_and_a_copy_to_the_canary() {
        let mut c = canary();
        c.spec.analysis =
            serde_json::from_value(json!({"iterations": 2, "mirror": true, "mirrorWeight": 30}))
                .unwrap();
        let object = &TraefikRouter.desired(&c, Traffic::Mirrored).unwrap()[0];
        assert_eq!(
            object.data["spec"],
            json!({"mirroring": {"name": "podinfo-primary", "namespace": "test", "port": 9898,
                "mirrors": [{"name": "podinfo-canary", "namespace": "test", "port": 9898, "percent": 30}]}})
        );
        assert_eq!(TraefikRouter.traffic(&c, object), Some(Traffic::Mirrored));
    }

    #[test]
    fn ab_is_refused_and_handed_back_goes_to_the_apex() {
        let c = canary();
        let err = TraefikRouter.desired(&c, Traffic::Matched).unwrap_err();
        assert!(err.to_string().contains("traefik"), "{err}");
        let back = &TraefikRouter.handed_back(&c).unwrap()[0];
        assert!(back.metadata.owner_references.is_none());
        assert_eq!(
            services(back),
            json!([{"name": "podinfo", "namespace": "test", "port": 9898, "weight": 100}])
        );
    }
}
