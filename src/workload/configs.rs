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
    visit(&mut spec.clone(), &mut |kind, name| {
        refs.insert(ConfigRef {
            kind,
            name: name.clone(),
        });
    });
    refs
}

/// Points the pod spec at the primary's copies of its configs.
pub fn rewire_to_primary(spec: &mut PodSpec) {
    visit(spec, &mut |_, name| name.push_str(PRIMARY_SUFFIX));
}

fn visit(spec: &mut PodSpec, f: &mut dyn FnMut(ConfigKind, &mut String)) {
    for v in spec.volumes.iter_mut().flatten() {
        if let Some(name) = v.config_map.as_mut().map(|c| &mut c.name) {
            f(ConfigKind::ConfigMap, name);
        }
        if let Some(name) = v.secret.as_mut().and_then(|s| s.secret_name.as_mut()) {
            f(ConfigKind::Secret, name);
        }
        for source in v
            .projected
            .iter_mut()
            .flat_map(|p| p.sources.iter_mut().flatten())
        {
            if let Some(name) = source.config_map.as_mut().map(|c| &mut c.name) {
                f(ConfigKind::ConfigMap, name);
            }
            if let Some(name) = source.secret.as_mut().map(|s| &mut s.name) {
                f(ConfigKind::Secret, name);
            }
        }
    }
    let containers = spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten());
    for c in containers {
        for from in c.env_from.iter_mut().flatten() {
            if let Some(name) = from.config_map_ref.as_mut().map(|r| &mut r.name) {
                f(ConfigKind::ConfigMap, name);
            }
            if let Some(name) = from.secret_ref.as_mut().map(|r| &mut r.name) {
                f(ConfigKind::Secret, name);
            }
        }
        for env in c.env.iter_mut().flatten() {
            let Some(source) = env.value_from.as_mut() else {
                continue;
            };
            if let Some(name) = source.config_map_key_ref.as_mut().map(|r| &mut r.name) {
                f(ConfigKind::ConfigMap, name);
            }
            if let Some(name) = source.secret_key_ref.as_mut().map(|r| &mut r.name) {
                f(ConfigKind::Secret, name);
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
