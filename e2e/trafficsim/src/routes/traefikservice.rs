//! Traefik's TraefikService (traefik.io/v1alpha1): a weighted round robin over Services (a missing weight
//! is 1), or a mirroring (every request to the main Service, a copy of `percent` of them to each mirror),
//! counted in Traefik's service series, a service per backend Service and port. A TraefikService naming
//! other TraefikServices is not simulated.

use kube::CustomResource;
use serde::{Deserialize, Serialize};

use super::{RouteObject, RouteSettings};
use crate::model::{
    BackendTarget, MirrorTarget, Precedence, ProxySeries, ServiceKey, SimRoute, SimRule,
    WeightedBackend,
};

#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default)]
#[kube(
    group = "traefik.io",
    version = "v1alpha1",
    kind = "TraefikService",
    namespaced,
    schema = "disabled"
)]
pub struct TraefikServiceSpec {
    #[serde(default)]
    pub weighted: Option<Weighted>,
    #[serde(default)]
    pub mirroring: Option<Mirroring>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default)]
pub struct Mirroring {
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub port: i32,
    #[serde(default)]
    pub mirrors: Vec<Mirror>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default)]
pub struct Mirror {
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub port: i32,
    #[serde(default)]
    pub percent: f64,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default)]
pub struct Weighted {
    #[serde(default)]
    pub services: Vec<WeightedService>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default)]
pub struct WeightedService {
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub port: i32,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub weight: Option<u32>,
}

impl RouteObject for TraefikService {
    const PROVIDER: &'static str = "traefik";

    fn to_sim_route(&self, settings: RouteSettings) -> Result<SimRoute, String> {
        let namespace = self.metadata.namespace.clone().unwrap_or_default();
        let key = |name: &str, ns: &Option<String>| ServiceKey {
            namespace: ns.clone().unwrap_or_else(|| namespace.clone()),
            name: name.to_string(),
        };
        if let Some(m) = &self.spec.mirroring {
            let main = key(&m.name, &m.namespace);
            let mut ports = vec![(main.clone(), m.port)];
            let mirrors = m
                .mirrors
                .iter()
                .map(|x| {
                    ports.push((key(&x.name, &x.namespace), x.port));
                    MirrorTarget {
                        service: key(&x.name, &x.namespace),
                        percent: x.percent,
                    }
                })
                .collect();
            return Ok(SimRoute {
                provider: Self::PROVIDER,
                name: self.metadata.name.clone().unwrap_or_default(),
                namespace: namespace.clone(),
                rules: vec![SimRule {
                    matches: vec![],
                    backends: vec![WeightedBackend {
                        target: BackendTarget::Service(main),
                        weight: 1,
                        set_cookie: None,
                    }],
                    mirrors,
                    set_cookie: None,
                }],
                rps: settings.rps,
                request_mix: settings.request_mix,
                precedence: Precedence::MostSpecific,
                proxy: Some(ProxySeries::Traefik { ports }),
                clients: settings.clients,
            });
        }
        let Some(weighted) = &self.spec.weighted else {
            return Err("spec: neither weighted nor mirroring".into());
        };
        let mut ports = Vec::new();
        let mut backends = Vec::new();
        for (i, s) in weighted.services.iter().enumerate() {
            if s.kind.as_deref().is_some_and(|k| k != "Service") {
                return Err(format!(
                    "spec.weighted.services[{i}]: kind {:?} is not simulated",
                    s.kind
                ));
            }
            let key = ServiceKey {
                namespace: s.namespace.clone().unwrap_or_else(|| namespace.clone()),
                name: s.name.clone(),
            };
            ports.push((key.clone(), s.port));
            backends.push(WeightedBackend {
                target: BackendTarget::Service(key),
                weight: s.weight.unwrap_or(1),
                set_cookie: None,
            });
        }
        Ok(SimRoute {
            provider: Self::PROVIDER,
            name: self.metadata.name.clone().unwrap_or_default(),
            namespace,
            rules: vec![SimRule {
                mirrors: vec![],
                matches: vec![],
                backends,
                set_cookie: None,
            }],
            rps: settings.rps,
            request_mix: settings.request_mix,
            precedence: Precedence::MostSpecific,
            proxy: Some(ProxySeries::Traefik { ports }),
            clients: settings.clients,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_default_to_one_and_services_are_named_as_traefik_does() {
        let ts: TraefikService = serde_json::from_value(serde_json::json!({
            "apiVersion": "traefik.io/v1alpha1", "kind": "TraefikService",
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {"weighted": {"services": [
                {"name": "podinfo-primary", "namespace": "test", "port": 9898},
                {"name": "podinfo-canary", "port": 9898, "weight": 3}]}}
        }))
        .unwrap();
        let r = ts
            .to_sim_route(RouteSettings {
                rps: 10.0,
                request_mix: vec![],
                clients: 0,
            })
            .unwrap();
        let weights: Vec<u32> = r.rules[0].backends.iter().map(|b| b.weight).collect();
        assert_eq!(weights, [1, 3]);
        let canary = ServiceKey {
            namespace: "test".into(),
            name: "podinfo-canary".into(),
        };
        assert_eq!(
            r.proxy.unwrap().backend_name(&canary).as_deref(),
            Some("test-podinfo-canary-9898@kubernetescrd")
        );
    }
}
