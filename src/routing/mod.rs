//! Routing: moving traffic between a Canary's primary and canary through the user's ingress or mesh
//! objects. One file per provider behind one trait; the registry says which providers Serin can drive.

pub mod affinity;
pub mod contour;
pub mod gatewayapi;
pub mod istio;
pub mod kubernetes;
pub mod nginx;
pub mod services;
pub mod smi;
pub mod traefik;

use std::sync::{Arc, OnceLock};

use kube::api::{ApiResource, DynamicObject};

use crate::api::Canary;
use crate::vocabulary::Traffic;
pub use crate::vocabulary::{RouterKind, router_for};

impl RouterKind {
    pub fn router(self) -> &'static dyn Router {
        match self {
            RouterKind::GatewayApi => &gatewayapi::V1,
            RouterKind::GatewayApiV1beta1 => &gatewayapi::V1BETA1,
            RouterKind::Istio => &istio::IstioRouter,
            RouterKind::Linkerd => &smi::LINKERD,
            RouterKind::SmiV1alpha1 => &smi::SMI_V1ALPHA1,
            RouterKind::SmiV1alpha2 => &smi::SMI_V1ALPHA2,
            RouterKind::SmiV1alpha3 => &smi::SMI_V1ALPHA3,
            RouterKind::Nginx => NGINX.get_or_init(|| {
                nginx::NginxRouter::with_prefix(
                    flags()
                        .ingress_annotations_prefix
                        .as_deref()
                        .unwrap_or(nginx::PREFIX),
                )
            }),
            RouterKind::Contour => CONTOUR.get_or_init(|| contour::ContourRouter {
                ingress_class: flags().ingress_class.clone(),
            }),
            RouterKind::Traefik => &traefik::TraefikRouter,
            RouterKind::Kubernetes => &kubernetes::KubernetesRouter,
        }
    }
}

/// The controller flags routers take, with Flagger's names: set once at startup, before any router is
/// used.
#[derive(Debug, Clone, Default)]
pub struct RouterFlags {
    /// `--ingress-annotations-prefix`: the annotations' prefix of NGINX ingresses.
    pub ingress_annotations_prefix: Option<String>,
    /// `--ingress-class`: the `ingressClassName` of Contour's HTTPProxies.
    pub ingress_class: Option<String>,
}

static FLAGS: OnceLock<RouterFlags> = OnceLock::new();
static NGINX: OnceLock<nginx::NginxRouter> = OnceLock::new();
static CONTOUR: OnceLock<contour::ContourRouter> = OnceLock::new();

/// Sets the routers' flags; false when they were already set (or a router already built without them).
pub fn configure(flags: RouterFlags) -> bool {
    FLAGS.set(flags).is_ok()
}

fn flags() -> &'static RouterFlags {
    FLAGS.get_or_init(RouterFlags::default)
}

/// The Services a Canary's routes send traffic to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceNames {
    /// `<service.name or target>`: what clients call.
    pub apex: String,
    pub primary: String,
    pub canary: String,
}

impl ServiceNames {
    pub fn of(canary: &Canary) -> Self {
        let apex = canary
            .spec
            .service
            .name
            .clone()
            .unwrap_or_else(|| canary.spec.target_ref.name.clone());
        Self {
            primary: format!("{apex}-primary"),
            canary: format!("{apex}-canary"),
            apex,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RoutingError {
    #[error("Canary {canary}: {field} is not supported yet by the {router} router")]
    Unsupported {
        canary: String,
        router: &'static str,
        field: String,
    },
    #[error("Canary {canary}: {field}: {message}")]
    Invalid {
        canary: String,
        field: String,
        message: String,
    },
}

/// Percent of requests mirrored to the canary: `analysis.mirrorWeight`, all when unset or 0 (as Flagger).
pub fn mirror_percent(canary: &Canary) -> i32 {
    canary
        .spec
        .active_analysis()
        .and_then(|a| a.mirror_weight)
        .filter(|w| *w > 0)
        .unwrap_or(crate::api::canary::TOTAL_WEIGHT)
}

/// The error of a router asked to mirror that can't (the decision core asks only those that can).
pub fn no_mirroring(canary: &Canary, router: &'static str) -> RoutingError {
    use kube::ResourceExt;
    RoutingError::Unsupported {
        canary: canary.name_any(),
        router,
        field: "spec.analysis.mirror".into(),
    }
}

/// The routing objects of a Canary that exist, as the caches hold them, with their kind: those Serin writes
/// and those it reads (nginx's `ingressRef`).
pub type Existing = [(ApiResource, Arc<DynamicObject>)];

/// A provider's way of moving traffic. Routers build objects; the controller applies them with server-side
/// apply under Serin's field manager and reads them back from its watch cache.
pub trait Router: Send + Sync {
    fn name(&self) -> &'static str;
    /// The kinds of routing objects this router writes, the one whose object carries the split first.
    fn resources(&self) -> Vec<ApiResource>;
    /// The routing objects this router writes (or reads) for a Canary, by kind and name; the first
    /// carries the split and is the one [`Router::traffic`] reads.
    fn objects(&self, canary: &Canary) -> Vec<(ApiResource, String)>;
    /// The routing objects for this traffic, holding only the fields Serin owns, each with its type.
    fn desired(
        &self,
        canary: &Canary,
        traffic: Traffic,
    ) -> Result<Vec<DynamicObject>, RoutingError>;
    /// The kind (among [`Router::resources`]) of an object this router built.
    fn resource_of(&self, object: &DynamicObject) -> Option<ApiResource> {
        let kind = object.types.as_ref()?.kind.as_str();
        self.resources().into_iter().find(|ar| ar.kind == kind)
    }
    /// [`Router::desired`] built from the objects that exist; a router whose objects derive from one of
    /// the user's (nginx's copy of the `ingressRef` Ingress) reads it here.
    fn desired_from(
        &self,
        canary: &Canary,
        traffic: Traffic,
        _existing: &Existing,
    ) -> Result<Vec<DynamicObject>, RoutingError> {
        self.desired(canary, traffic)
    }
    /// The routing objects as Serin leaves them when a Canary is deleted with revertOnDeletion: all traffic
    /// to the apex Service, without the Canary as owner (so they outlive it).
    fn handed_back(&self, canary: &Canary) -> Result<Vec<DynamicObject>, RoutingError>;
    /// The traffic a routing object sends now, as the watch cache holds it (the API server's defaults
    /// filled in); None when it can't tell.
    fn traffic(&self, canary: &Canary, route: &DynamicObject) -> Option<Traffic>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Provider;

    /// Every provider with a router has its kinds watched: RouterKind::ALL (which the controller's watches
    /// come from) holds every router `router_for` gives, over every provider the API accepts.
    #[test]
    fn every_router_a_provider_gets_is_watched() {
        let schema = serde_json::to_value(schemars::schema_for!(Provider)).unwrap();
        let names = schema["enum"]
            .as_array()
            .expect("Provider is a string enum");
        assert!(names.len() > 10);
        for name in names {
            let provider: Provider = serde_json::from_value(name.clone()).unwrap();
            if let Some(kind) = router_for(provider) {
                assert!(
                    RouterKind::ALL.contains(&kind),
                    "{provider}'s router {kind:?} is not in RouterKind::ALL"
                );
            }
        }
    }
}

#[cfg(test)]
mod resource_tests {
    use super::*;
    use crate::vocabulary::Weights;

    /// Every router reads back the traffic it wrote from the object carrying the split: the controller
    /// writes that object whenever it reads back otherwise, so a router that could not would write every
    /// tick.
    #[test]
    fn every_router_reads_back_the_traffic_it_writes() {
        let plain: Canary = serde_json::from_value(serde_json::json!({
            "apiVersion": "serin.dev/v1beta1", "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "test", "uid": "u1"},
            "spec": {"targetRef": {"name": "podinfo"}, "service": {"port": 9898},
                "analysis": {"iterations": 2, "mirror": true, "mirrorWeight": 20,
                    "match": [{"headers": {"x-canary": {"exact": "insider"}}}]}}
        }))
        .unwrap();
        // Session affinity's cookie routes, before the split, are not A/B's.
        let mut sticky = plain.clone();
        if let Some(a) = sticky.spec.analysis.as_mut() {
            a.session_affinity = serde_json::from_value(
                serde_json::json!({"cookieName": "canary", "primaryCookieName": "primary"}),
            )
            .unwrap();
        }
        sticky.status = Some(crate::api::CanaryStatus {
            last_applied_spec: Some("r2".into()),
            ..Default::default()
        });
        for canary in [plain, sticky] {
            reads_back_what_it_writes(&canary);
        }
    }

    fn reads_back_what_it_writes(canary: &Canary) {
        let traffics = [
            Traffic::Split(Weights::canary(0)),
            Traffic::Split(Weights::canary(35)),
            Traffic::Split(Weights::canary(100)),
            Traffic::Matched,
            Traffic::Mirrored,
        ];
        let kinds = [
            RouterKind::GatewayApi,
            RouterKind::Istio,
            RouterKind::Linkerd,
            RouterKind::SmiV1alpha3,
            RouterKind::Contour,
            RouterKind::Traefik,
        ];
        for kind in kinds {
            let router = kind.router();
            for traffic in traffics {
                // A router refuses what it can't do, by name; what it writes it must read back.
                let Ok(objects) = router.desired(canary, traffic) else {
                    assert!(
                        traffic != Traffic::Mirrored || !kind.mirrors(),
                        "{kind:?} says it mirrors"
                    );
                    continue;
                };
                assert_eq!(
                    router.traffic(canary, &objects[0]),
                    Some(traffic),
                    "{kind:?} with {traffic:?}"
                );
            }
        }
    }

    /// Every object a router builds is of a kind it lists, so the controller can write it.
    #[test]
    fn every_object_a_router_builds_has_its_resource() {
        let canary: Canary = serde_json::from_value(serde_json::json!({
            "apiVersion": "serin.dev/v1beta1", "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "test", "uid": "u1"},
            "spec": {"targetRef": {"name": "podinfo"}, "service": {"port": 9898}}
        }))
        .unwrap();
        for kind in [
            RouterKind::GatewayApi,
            RouterKind::Istio,
            RouterKind::SmiV1alpha3,
            RouterKind::Contour,
            RouterKind::Traefik,
        ] {
            let router = kind.router();
            let objects = router
                .desired(&canary, Traffic::Split(Weights::canary(10)))
                .unwrap()
                .into_iter()
                .chain(router.handed_back(&canary).unwrap());
            for o in objects {
                let ar = router.resource_of(&o).expect("a listed kind");
                assert_eq!(
                    Some(ar.kind.as_str()),
                    o.types.as_ref().map(|t| t.kind.as_str())
                );
            }
        }
    }
}
