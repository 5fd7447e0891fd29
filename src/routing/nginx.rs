//! NGINX ingress: the Ingress `spec.ingressRef` names (the user's, sending the host's traffic to the apex
//! Service) is copied as `<ingress>-canary` with its backend pointed at `<service>-canary` and ingress-nginx's
//! canary annotations: `canary: "true"` and `canary-weight` for a split; for A/B, `canary-by-header` (with
//! `-value` for an exact match or `-pattern` for a regex) or `canary-by-cookie`, as Flagger sets them. The
//! user's Ingress is only read. Annotations use ingress-nginx's default prefix `nginx.ingress.kubernetes.io`,
//! or the one `--ingress-annotations-prefix` gives (ingress-nginx's `--annotations-prefix`, Flagger's flag).

use std::collections::BTreeMap;

use kube::api::{ApiResource, DynamicObject, ObjectMeta};
use kube::core::GroupVersionKind;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use super::{Existing, Router, RoutingError, ServiceNames};
use crate::api::Canary;
use crate::api::canary::TOTAL_WEIGHT;
use crate::vocabulary::{Traffic, Weights};

pub struct NginxRouter {
    /// The annotations' prefix, as the ingress controller reads them.
    prefix: String,
}

/// ingress-nginx's default annotations prefix.
pub const PREFIX: &str = "nginx.ingress.kubernetes.io";

impl Default for NginxRouter {
    fn default() -> Self {
        Self::with_prefix(PREFIX)
    }
}

impl NginxRouter {
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }

    fn key(&self, name: &str) -> String {
        format!("{}/{name}", self.prefix)
    }
}

pub fn ingresses() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.k8s.io", "v1", "Ingress"),
        "ingresses",
    )
}

/// The Ingress the Canary names; Err when spec.ingressRef is missing.
fn reference(canary: &Canary) -> Result<String, RoutingError> {
    canary
        .spec
        .ingress_ref
        .as_ref()
        .map(|r| r.name.clone())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| RoutingError::Invalid {
            canary: canary.name_any(),
            field: "spec.ingressRef".into(),
            message: "provider nginx routes through an Ingress: name it in spec.ingressRef".into(),
        })
}

/// The A/B annotations for the analysis' match, as Flagger reads it: a `cookie` header's exact value is
/// the cookie's name; another header's exact value or regex selects by that header.
fn match_annotations(
    canary: &Canary,
    key: impl Fn(&str) -> String,
) -> Result<BTreeMap<String, String>, RoutingError> {
    let mut out = BTreeMap::new();
    let given = canary
        .spec
        .active_analysis()
        .and_then(|a| a.r#match.clone())
        .unwrap_or_default();
    for m in &given {
        let headers = m.get("headers").and_then(Value::as_object);
        for (name, condition) in headers.into_iter().flatten() {
            let text = |k: &str| condition.get(k).and_then(Value::as_str).map(String::from);
            if name.eq_ignore_ascii_case("cookie") {
                if let Some(cookie) = text("exact") {
                    out.insert(key("canary-by-cookie"), cookie);
                }
                continue;
            }
            out.insert(key("canary-by-header"), name.clone());
            if let Some(v) = text("exact") {
                out.insert(key("canary-by-header-value"), v);
            } else if let Some(v) = text("regex") {
                out.insert(key("canary-by-header-pattern"), v);
            } else {
                return Err(RoutingError::Unsupported {
                    canary: canary.name_any(),
                    router: "nginx",
                    field: format!(
                        "spec.analysis.match header {name}: only exact and regex (ingress-nginx has no prefix or suffix match)"
                    ),
                });
            }
        }
    }
    if out.is_empty() {
        return Err(RoutingError::Invalid {
            canary: canary.name_any(),
            field: "spec.analysis.match".into(),
            message: "A/B through nginx needs a header or cookie match".into(),
        });
    }
    Ok(out)
}

impl Router for NginxRouter {
    fn name(&self) -> &'static str {
        "nginx"
    }

    fn resources(&self) -> Vec<ApiResource> {
        vec![ingresses()]
    }

    fn objects(&self, canary: &Canary) -> Vec<(ApiResource, String)> {
        match reference(canary) {
            Ok(name) => vec![(ingresses(), format!("{name}-canary")), (ingresses(), name)],
            Err(_) => Vec::new(),
        }
    }

    fn desired(
        &self,
        canary: &Canary,
        traffic: Traffic,
    ) -> Result<Vec<DynamicObject>, RoutingError> {
        self.desired_from(canary, traffic, &[])
    }

    fn desired_from(
        &self,
        canary: &Canary,
        traffic: Traffic,
        existing: &Existing,
    ) -> Result<Vec<DynamicObject>, RoutingError> {
        let name = reference(canary)?;
        let ns = canary.namespace().unwrap_or_default();
        let invalid = |message: String| RoutingError::Invalid {
            canary: canary.name_any(),
            field: "spec.ingressRef".into(),
            message,
        };
        let source = existing
            .iter()
            .find(|(ar, o)| ar.kind == "Ingress" && o.name_any() == name)
            .map(|(_, o)| o)
            .ok_or_else(|| invalid(format!("Ingress {ns}/{name} not found")))?;
        let names = ServiceNames::of(canary);
        let mut spec = source.data["spec"].clone();
        let mut pointed = false;
        for rule in spec["rules"].as_array_mut().into_iter().flatten() {
            for path in rule["http"]["paths"].as_array_mut().into_iter().flatten() {
                if path["backend"]["service"]["name"] == names.apex.as_str() {
                    path["backend"]["service"]["name"] = json!(names.canary);
                    pointed = true;
                }
            }
        }
        if !pointed {
            return Err(invalid(format!(
                "Ingress {ns}/{name} has no backend on Service {}",
                names.apex
            )));
        }
        let mut annotations: BTreeMap<String, String> = source
            .annotations()
            .iter()
            .filter(|(k, _)| {
                !k.starts_with(&self.key("canary"))
                    && *k != "kubectl.kubernetes.io/last-applied-configuration"
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        annotations.insert(self.key("canary"), "true".into());
        match traffic {
            Traffic::Split(w) => {
                annotations.insert(self.key("canary-weight"), w.canary.to_string());
            }
            Traffic::Matched => annotations.extend(match_annotations(canary, |k| self.key(k))?),
            Traffic::Mirrored => return Err(super::no_mirroring(canary, "nginx")),
        }
        let canary_name = format!("{name}-canary");
        let mut object = DynamicObject::new(&canary_name, &ingresses());
        object.metadata = ObjectMeta {
            name: Some(canary_name),
            namespace: Some(ns),
            labels: source.metadata.labels.clone(),
            annotations: Some(annotations),
            owner_references: canary.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        };
        object.data = json!({ "spec": spec });
        Ok(vec![object])
    }

    /// The user's Ingress always sends the host's traffic to the apex Service; the canary Ingress, owned
    /// by the Canary, goes with it.
    fn handed_back(&self, _: &Canary) -> Result<Vec<DynamicObject>, RoutingError> {
        Ok(Vec::new())
    }

    fn traffic(&self, _: &Canary, route: &DynamicObject) -> Option<Traffic> {
        let annotations = route.annotations();
        if annotations.get(&self.key("canary")).map(String::as_str) != Some("true") {
            return Some(Traffic::Split(Weights::canary(0)));
        }
        if annotations.contains_key(&self.key("canary-by-header"))
            || annotations.contains_key(&self.key("canary-by-cookie"))
        {
            return Some(Traffic::Matched);
        }
        let weight: i32 = annotations
            .get(&self.key("canary-weight"))?
            .trim()
            .parse()
            .ok()?;
        Some(Traffic::Split(Weights::canary(
            weight.clamp(0, TOTAL_WEIGHT),
        )))
    }
}

#[cfg(test)]
mod tests;
