//! What the caches keep of an object: everything Serin reads, without what only costs memory. A
//! Deployment's managedFields are often larger than its spec, and kubectl's last-applied annotation holds a
//! second copy of the whole object; with ten thousand Canaries (two Deployments, three Services and a route
//! each) they were most of the controller's memory.

use kube::Resource;

use super::apply::FIELD_MANAGER;

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops the managedFields of every manager but Serin's own, and kubectl's last-applied annotation (never
/// copied to a primary). Serin's own entries for the object itself stay: whether it holds a field is read
/// from them (a KEDA pause it set; a field it applied before and no longer wants, controller/apply.rs's
/// drops_fields); its entries for a subresource (a Canary's status) are never read.
pub fn slim<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    if let Some(fields) = meta.managed_fields.as_mut() {
        fields.retain(|m| {
            m.manager.as_deref() == Some(FIELD_MANAGER)
                && m.subresource.as_deref().unwrap_or_default().is_empty()
        });
        if fields.is_empty() {
            meta.managed_fields = None;
        }
    }
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;
    use serde_json::json;

    #[test]
    fn keeps_serins_managed_fields_and_everything_else() {
        let mut d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "podinfo", "annotations": {LAST_APPLIED: "{\"big\": true}", "team": "a"},
                "managedFields": [
                    {"manager": "kubectl", "operation": "Apply", "fieldsV1": {"f:spec": {}}},
                    {"manager": FIELD_MANAGER, "operation": "Apply", "fieldsV1": {"f:metadata": {}}},
                    {"manager": FIELD_MANAGER, "operation": "Apply", "subresource": "status", "fieldsV1": {"f:status": {}}},
                    {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status"}]},
            "spec": {"selector": {"matchLabels": {"app": "podinfo"}},
                "template": {"metadata": {"annotations": {LAST_APPLIED: "kept: not the object's"}}}}}))
        .unwrap();
        let mut want = d.clone();
        slim(&mut d);
        let managers: Vec<_> = d
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .map(|m| m.manager.clone().unwrap())
            .collect();
        assert_eq!(managers, [FIELD_MANAGER]);
        assert_eq!(
            d.metadata
                .annotations
                .as_ref()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ["team"]
        );
        // Nothing else changed.
        want.metadata.managed_fields = d.metadata.managed_fields.clone();
        want.metadata.annotations = d.metadata.annotations.clone();
        assert_eq!(d, want);

        let mut bare: Deployment = serde_json::from_value(json!({"metadata": {"name": "b",
            "managedFields": [{"manager": "kubectl", "operation": "Apply"}]}}))
        .unwrap();
        slim(&mut bare);
        assert_eq!(bare.metadata.managed_fields, None);
    }
}
