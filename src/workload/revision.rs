//! A workload's revision: SHA-256 over canonical JSON of its pod template and the data of the ConfigMaps
//! and Secrets it uses. Canonical (keys sorted at every level, no whitespace, unset fields absent), so the
//! same template gives the same revision whatever Serin version computes it: upgrading Serin never starts
//! a rollout.

use std::collections::BTreeMap;
use std::fmt::Write;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Hex digits of a revision: 64 bits, plenty to tell revisions of one workload apart.
const REVISION_LEN: usize = 16;

/// The revision of a pod template running with these tracked configs (`<kind>/<name>` -> checksum).
pub fn revision(template: &PodTemplateSpec, configs: &BTreeMap<String, String>) -> String {
    let mut text = String::new();
    canonical(
        &serde_json::to_value(template).unwrap_or(Value::Null),
        &mut text,
    );
    text.push('\n');
    canonical(
        &serde_json::to_value(configs).unwrap_or(Value::Null),
        &mut text,
    );
    let digest = Sha256::digest(text.as_bytes());
    let mut out = String::with_capacity(REVISION_LEN);
    for byte in digest.iter().take(REVISION_LEN / 2) {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// The checksum of a ConfigMap's or Secret's data, as tracked in status.trackedConfigs.
pub fn checksum(data: &BTreeMap<String, Value>) -> String {
    let mut text = String::new();
    canonical(
        &serde_json::to_value(data).unwrap_or(Value::Null),
        &mut text,
    );
    let digest = Sha256::digest(text.as_bytes());
    digest
        .iter()
        .take(REVISION_LEN / 2)
        .fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// JSON with object keys sorted at every level: serde_json's map order depends on its features, which any
/// crate in the tree may turn on.
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(v: Value) -> PodTemplateSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_same_template_has_the_same_revision_however_it_is_written() {
        let a = template(
            json!({"metadata": {"labels": {"app": "podinfo", "tier": "web"}},
            "spec": {"containers": [{"name": "app", "image": "podinfo:1", "env": [{"name": "A", "value": "1"}]}]}}),
        );
        let b = template(
            json!({"spec": {"containers": [{"env": [{"value": "1", "name": "A"}], "image": "podinfo:1", "name": "app"}]},
            "metadata": {"labels": {"tier": "web", "app": "podinfo"}}}),
        );
        assert_eq!(
            revision(&a, &BTreeMap::new()),
            revision(&b, &BTreeMap::new())
        );
        assert_eq!(revision(&a, &BTreeMap::new()).len(), 16);
    }

    #[test]
    fn a_pinned_revision_does_not_move() {
        // Pinned: if this changes, upgrading Serin would start a rollout of every Canary.
        let t = template(json!({"metadata": {"labels": {"app": "podinfo"}},
            "spec": {"containers": [{"name": "podinfo", "image": "ghcr.io/stefanprodan/podinfo:6.0.0"}]}}));
        let configs = BTreeMap::from([(
            "configmap/podinfo-config".to_string(),
            "0123456789abcdef".to_string(),
        )]);
        assert_eq!(revision(&t, &configs), "a2c72eb5641fee9b");
        let mut text = String::new();
        canonical(&serde_json::to_value(&t).unwrap(), &mut text);
        assert_eq!(
            text,
            r#"{"metadata":{"labels":{"app":"podinfo"}},"spec":{"containers":[{"image":"ghcr.io/stefanprodan/podinfo:6.0.0","name":"podinfo"}]}}"#
        );
    }

    #[test]
    fn image_and_config_changes_are_new_revisions() {
        let t1 = template(json!({"spec": {"containers": [{"name": "app", "image": "podinfo:1"}]}}));
        let t2 = template(json!({"spec": {"containers": [{"name": "app", "image": "podinfo:2"}]}}));
        let none = BTreeMap::new();
        assert_ne!(revision(&t1, &none), revision(&t2, &none));
        let c1 = BTreeMap::from([(
            "configmap/cfg".to_string(),
            checksum(&BTreeMap::from([("k".to_string(), json!("v1"))])),
        )]);
        let c2 = BTreeMap::from([(
            "configmap/cfg".to_string(),
            checksum(&BTreeMap::from([("k".to_string(), json!("v2"))])),
        )]);
        assert_ne!(revision(&t1, &c1), revision(&t1, &c2));
        assert_ne!(revision(&t1, &none), revision(&t1, &c1));
    }
}
