//! Writing objects: server-side apply under Serin's field manager, owning only the fields Serin sets, and
//! only when the watch cache shows the object differs from what Serin wants.

use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::ApiResource;
use serde::Serialize;
use serde_json::Value;

/// Serin's field manager.
pub const FIELD_MANAGER: &str = "serin";

/// Whether every field of `want` is in `have` with the same value (server defaults may add more). Lists
/// must match in length, element by element.
pub fn contains(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Object(h), Value::Object(w)) => w
            .iter()
            .all(|(k, wv)| h.get(k).is_some_and(|hv| contains(hv, wv))),
        (Value::Array(h), Value::Array(w)) => {
            h.len() == w.len() && h.iter().zip(w).all(|(hv, wv)| contains(hv, wv))
        }
        (Value::Number(h), Value::Number(w)) => h.as_f64() == w.as_f64(),
        _ => have == want,
    }
}

/// Why a write was refused: another field manager owns a field Serin wants to set.
pub fn conflict_message(e: &kube::Error) -> Option<String> {
    match e {
        kube::Error::Api(status) if status.code == 409 => Some(status.message.clone()),
        _ => None,
    }
}

/// Server-side applies `want` (JSON holding only the fields Serin sets) unless `cached`, the watch cache's
/// copy, already holds them all; returns whether it wrote. `force` takes fields other managers own: only
/// for the target's replicas, which Serin must drive for a canary to run at all.
pub async fn apply(
    client: &Client,
    ar: &ApiResource,
    cached: Option<Value>,
    want: &Value,
    force: bool,
) -> Result<bool, kube::Error> {
    Ok(apply_answered(client, ar, cached, want, force)
        .await?
        .is_some())
}

/// As [`apply`], with the API server's answer when it wrote (the object as stored).
pub async fn apply_answered(
    client: &Client,
    ar: &ApiResource,
    cached: Option<Value>,
    want: &Value,
    force: bool,
) -> Result<Option<DynamicObject>, kube::Error> {
    if let Some(have) = &cached
        && contains(have, &strip_type(want))
        && !drops_fields(have, want)
    {
        return Ok(None);
    }
    let name = want["metadata"]["name"].as_str().unwrap_or_default();
    let namespace = want["metadata"]["namespace"].as_str().unwrap_or_default();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, ar);
    let mut pp = PatchParams::apply(FIELD_MANAGER);
    pp.force = force;
    Ok(Some(api.patch(name, &pp, &Patch::Apply(want)).await?))
}

/// Whether the cached object holds a field Serin applied before and no longer wants (a `retries` removed
/// from the Canary, a mirror once mirroring ends): server-side apply drops the fields a manager stops
/// applying, but only when it applies. Read from the object's managedFields: Serin's last apply, at the
/// maps' keys (a list, atomic or keyed, is compared as a whole by [`contains`]).
pub fn drops_fields(have: &Value, want: &Value) -> bool {
    have["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| {
            m["manager"] == FIELD_MANAGER
                && m["operation"] == "Apply"
                && m["subresource"].as_str().unwrap_or_default().is_empty()
        })
        .any(|m| not_wanted(&m["fieldsV1"], want))
}

/// True when a field of the managed set `fields` (FieldsV1: `f:<name>` per map key) is not in `want`.
fn not_wanted(fields: &Value, want: &Value) -> bool {
    let Some(keys) = fields.as_object() else {
        return false;
    };
    keys.iter().any(|(key, below)| {
        // `.`, and a list's `k:`/`v:`/`i:` entries, are not map keys.
        let Some(name) = key.strip_prefix("f:") else {
            return false;
        };
        match want.get(name) {
            None => true,
            Some(w) => {
                let map = below
                    .as_object()
                    .is_some_and(|o| o.keys().any(|k| k.starts_with("f:")));
                map && w.is_object() && not_wanted(below, w)
            }
        }
    })
}

/// The JSON of a typed object, for [`apply`].
pub fn to_json<K: Serialize>(object: &K) -> Value {
    // Serializing k8s-openapi types and our own into JSON does not fail.
    serde_json::to_value(object).unwrap_or(Value::Null)
}

/// apiVersion and kind are not in reflector caches' copies; compare without them.
fn strip_type(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("apiVersion");
        o.remove("kind");
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn contains_ignores_server_defaults_but_not_differences() {
        let have = json!({"spec": {"rules": [{"backendRefs": [{"name": "a", "weight": 90, "group": "", "kind": "Service"}]}],
            "extra": true}, "metadata": {"name": "r", "resourceVersion": "7"}});
        assert!(contains(
            &have,
            &json!({"spec": {"rules": [{"backendRefs": [{"name": "a", "weight": 90}]}]}})
        ));
        assert!(!contains(
            &have,
            &json!({"spec": {"rules": [{"backendRefs": [{"name": "a", "weight": 80}]}]}})
        ));
        assert!(!contains(
            &have,
            &json!({"spec": {"rules": [{"backendRefs": [{"name": "a"}]}, {"backendRefs": []}]}})
        ));
        assert!(!contains(&have, &json!({"spec": {"hostnames": ["x"]}})));
        assert!(contains(&json!({"n": 3.0}), &json!({"n": 3})));
    }

    #[test]
    fn a_field_serin_applied_and_no_longer_wants_is_a_reason_to_write() {
        let have = json!({"metadata": {"name": "podinfo", "managedFields": [
            {"manager": "serin", "operation": "Apply", "fieldsV1": {
                "f:metadata": {"f:ownerReferences": {"k:{\"uid\":\"u1\"}": {}}},
                "f:spec": {"f:http": {}, "f:hosts": {}, "f:trafficPolicy": {"f:tls": {"f:mode": {}}}}}},
            {"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:spec": {"f:extra": {}}}},
            {"manager": "serin", "operation": "Apply", "subresource": "status", "fieldsV1": {"f:status": {}}}]},
            "spec": {"http": [], "hosts": ["podinfo"], "trafficPolicy": {"tls": {"mode": "DISABLE"}}, "extra": 1}});
        let same = json!({"metadata": {"name": "podinfo", "ownerReferences": [{"uid": "u1"}]},
            "spec": {"http": [], "hosts": ["podinfo"], "trafficPolicy": {"tls": {"mode": "DISABLE"}}}});
        assert!(
            !drops_fields(&have, &same),
            "another manager's and the status' fields are not ours"
        );
        let mut no_policy = same.clone();
        no_policy["spec"]
            .as_object_mut()
            .unwrap()
            .remove("trafficPolicy");
        assert!(drops_fields(&have, &no_policy));
        let mut other_policy = same.clone();
        other_policy["spec"]["trafficPolicy"] =
            json!({"loadBalancer": {"simple": "LEAST_REQUEST"}});
        assert!(drops_fields(&have, &other_policy));
        assert!(
            !drops_fields(&json!({"metadata": {}}), &same),
            "no managedFields: nothing known"
        );
    }
}
