//! Provider kubernetes: no routing object. The apex Service always selects the primary; blue/green tests
//! reach the canary through `<service>-canary`, and promotion updates the primary in place.

use kube::api::{ApiResource, DynamicObject};

use super::{Router, RoutingError};
use crate::api::Canary;
use crate::vocabulary::Traffic;

pub struct KubernetesRouter;

impl Router for KubernetesRouter {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn resources(&self) -> Vec<ApiResource> {
        Vec::new()
    }

    fn objects(&self, _: &Canary) -> Vec<(ApiResource, String)> {
        Vec::new()
    }

    fn desired(&self, _: &Canary, _: Traffic) -> Result<Vec<DynamicObject>, RoutingError> {
        Ok(Vec::new())
    }

    fn handed_back(&self, _: &Canary) -> Result<Vec<DynamicObject>, RoutingError> {
        Ok(Vec::new())
    }

    fn traffic(&self, _: &Canary, _: &DynamicObject) -> Option<Traffic> {
        None
    }
}
