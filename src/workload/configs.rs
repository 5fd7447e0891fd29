//! The ConfigMaps and Secrets a pod template uses: tracked for new revisions, copied as `<name>-primary` for
//! the primary, which is rewired to its copies (as Flagger does), so a config change reaches the primary only
//! through promotion.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::PodSpec;

use super::PRIMARY_SUFFIX;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConfigKind {
    ConfigMap,
    Secret,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConfigRef {
    pub kind: ConfigKind,
    pub name: String,
}

impl ConfigRef {
    /// The key in status.trackedConfigs.
    pub fn key(&self) -> String {
        match self.kind {
            ConfigKind::ConfigMap => format!("configmap/{}", self.name),
            ConfigKind::Secret => format!("secret/{}", self.name),
        }
    }
}

/// Every ConfigMap and Secret the pod spec names (volumes, projected volumes, envFrom, env valueFrom).
pub fn referenced(spec: &PodSpec) -> BTreeSet<ConfigRef> {
    let mut refs = BTreeSet::new();
    visit(&mut spec.clone(), &mut |kind, name, _| {
        refs.insert(ConfigRef {
            kind,
            name: name.clone(),
        });
    });
    refs
}

/// The configs the pods can't start without: named somewhere without `optional: true`.
pub fn required(spec: &PodSpec) -> BTreeSet<ConfigRef> {
    let mut refs = BTreeSet::new();
    visit(&mut spec.clone(), &mut |kind, name, optional| {
        if !optional {
            refs.insert(ConfigRef {
                kind,
                name: name.clone(),
            });
        }
    });
    refs
}

/// Points the pod spec at the primary's copies of its configs.
pub fn rewire_to_primary(spec: &mut PodSpec) {
    visit(spec, &mut |_, name, _| name.push_str(PRIMARY_SUFFIX));
}

/// Calls `f` with each config reference's kind, name and whether it is optional.
fn visit(spec: &mut PodSpec, f: &mut dyn FnMut(ConfigKind, &mut String, bool)) {
    let optional = |o: Option<bool>| o == Some(true);
    for v in spec.volumes.iter_mut().flatten() {
        if let Some(c) = v.config_map.as_mut() {
            f(ConfigKind::ConfigMap, &mut c.name, optional(c.optional));
        }
        if let Some(s) = v.secret.as_mut() {
            let o = optional(s.optional);
            if let Some(name) = s.secret_name.as_mut() {
                f(ConfigKind::Secret, name, o);
            }
        }
        for source in v
            .projected
            .iter_mut()
            .flat_map(|p| p.sources.iter_mut().flatten())
        {
            if let Some(c) = source.config_map.as_mut() {
                f(ConfigKind::ConfigMap, &mut c.name, optional(c.optional));
            }
            if let Some(s) = source.secret.as_mut() {
                f(ConfigKind::Secret, &mut s.name, optional(s.optional));
            }
        }
    }
    let containers = spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten());
    for c in containers {
        for from in c.env_from.iter_mut().flatten() {
            if let Some(r) = from.config_map_ref.as_mut() {
                f(ConfigKind::ConfigMap, &mut r.name, optional(r.optional));
            }
            if let Some(r) = from.secret_ref.as_mut() {
                f(ConfigKind::Secret, &mut r.name, optional(r.optional));
            }
        }
        for env in c.env.iter_mut().flatten() {
            let Some(source) = env.value_from.as_mut() else {
                continue;
            };
            if let Some(r) = source.config_map_key_ref.as_mut() {
                f(ConfigKind::ConfigMap, &mut r.name, optional(r.optional));
            }
            if let Some(r) = source.secret_key_ref.as_mut() {
                f(ConfigKind::Secret, &mut r.name, optional(r.optional));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod_spec() -> PodSpec {
        serde_json::from_value(json!({
            "containers": [{"name": "app",
                "envFrom": [{"configMapRef": {"name": "env-cm"}}, {"secretRef": {"name": "env-secret"}}],
                "env": [{"name": "K", "valueFrom": {"configMapKeyRef": {"name": "key-cm", "key": "k"}}},
                        {"name": "S", "valueFrom": {"secretKeyRef": {"name": "key-secret", "key": "s"}}},
                        {"name": "PLAIN", "value": "x"}]}],
            "initContainers": [{"name": "init", "envFrom": [{"configMapRef": {"name": "init-cm"}}]}],
            "volumes": [{"name": "a", "configMap": {"name": "vol-cm"}}, {"name": "b", "secret": {"secretName": "vol-secret"}},
                {"name": "c", "projected": {"sources": [{"configMap": {"name": "proj-cm"}}, {"secret": {"name": "proj-secret"}}]}},
                {"name": "d", "emptyDir": {}}]
        }))
        .unwrap()
    }

    #[test]
    fn finds_every_reference() {
        let keys: Vec<String> = referenced(&pod_spec()).iter().map(ConfigRef::key).collect();
        assert_eq!(
            keys,
            [
                "configmap/env-cm",
                "configmap/init-cm",
                "configmap/key-cm",
                "configmap/proj-cm",
                "configmap/vol-cm",
                "secret/env-secret",
                "secret/key-secret",
                "secret/proj-secret",
                "secret/vol-secret"
            ]
        );
    }

    #[test]
    fn optional_references_are_not_required() {
        let mut spec = pod_spec();
        spec.volumes.as_mut().unwrap()[0]
            .config_map
            .as_mut()
            .unwrap()
            .optional = Some(true);
        let keys: Vec<String> = required(&spec).iter().map(ConfigRef::key).collect();
        assert!(!keys.contains(&"configmap/vol-cm".to_string()), "{keys:?}");
        assert_eq!(keys.len(), 8);
    }

    #[test]
    fn rewires_every_reference_to_the_primary_copy() {
        let mut spec = pod_spec();
        rewire_to_primary(&mut spec);
        let refs = referenced(&spec);
        assert_eq!(refs.len(), 9);
        assert!(
            refs.iter().all(|r| r.name.ends_with("-primary")),
            "{refs:?}"
        );
    }
}
