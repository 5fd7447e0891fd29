//! SMI TrafficSplit (split.smi-spec.io): requests to the root service split among the backends by weight.
//! Watched at v1alpha2: the API server serves every stored TrafficSplit at each version (the schemas are
//! the same), so one watch sees those written at v1alpha1 and v1alpha3 too. v1alpha1's weights may be
//! quantities ("500m"): weights are read as numbers and scaled to whole thousandths.

use kube::CustomResource;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{RouteObject, RouteSettings};
use crate::model::{BackendTarget, Precedence, ServiceKey, SimRoute, SimRule, WeightedBackend};

#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default)]
#[kube(
    group = "split.smi-spec.io",
    version = "v1alpha2",
    kind = "TrafficSplit",
    namespaced,
    schema = "disabled"
)]
pub struct TrafficSplitSpec {
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub backends: Vec<Backend>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default)]
pub struct Backend {
    pub service: String,
    #[serde(default)]
    pub weight: Value,
}

fn thousandths(v: &Value) -> Result<u32, String> {
    let w = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.strip_suffix('m') {
            Some(milli) => milli.parse::<f64>().ok().map(|m| m / 1000.0),
            None => s.parse().ok(),
        },
        _ => None,
    };
    match w {
        Some(w) if w.is_finite() && w >= 0.0 => Ok((w * 1000.0).round() as u32),
        _ => Err(format!("weight {v} is not a number >= 0")),
    }
}

impl RouteObject for TrafficSplit {
    const PROVIDER: &'static str = "smi";

    fn to_sim_route(&self, settings: RouteSettings) -> Result<SimRoute, String> {
        let namespace = self.metadata.namespace.clone().unwrap_or_default();
        let backends = self
            .spec
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| {
                Ok(WeightedBackend {
                    target: BackendTarget::Service(ServiceKey {
                        namespace: namespace.clone(),
                        name: b.service.clone(),
                    }),
                    weight: thousandths(&b.weight)
                        .map_err(|e| format!("spec.backends[{i}]: {e}"))?,
                    set_cookie: None,
                })
            })
            .collect::<Result<_, String>>()?;
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
            proxy: None,
            clients: settings.clients,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_of_every_version_become_one_split() {
        let split: TrafficSplit = serde_json::from_value(serde_json::json!({
            "apiVersion": "split.smi-spec.io/v1alpha2", "kind": "TrafficSplit",
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {"service": "podinfo", "backends": [
                {"service": "podinfo-canary", "weight": "250m"},
                {"service": "podinfo-primary", "weight": 0.75}]}
        }))
        .unwrap();
        let r = split
            .to_sim_route(RouteSettings {
                rps: 10.0,
                request_mix: vec![],
                clients: 0,
            })
            .unwrap();
        let weights: Vec<u32> = r.rules[0].backends.iter().map(|b| b.weight).collect();
        assert_eq!(weights, [250, 750]);
        assert_eq!(r.provider, "smi");
    }
}
