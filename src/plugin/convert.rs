//! `kubectl serin convert`: Flagger manifests for Serin. Only `apiVersion` changes (Serin keeps Flagger's
//! field names and meaning); the text is rewritten line by line, so comments and layout stay. The warnings
//! name what would behave differently.

use serde_json::Value;

use crate::api::metric_template::MetricProviderType;
use crate::api::{Canary, MetricTemplate, Provider};
use crate::decision::ControllerDefaults;
use crate::routing::router_for;

pub struct Converted {
    pub text: String,
    pub warnings: Vec<String>,
}

const FLAGGER: &str = "flagger.app/v1beta1";
const SERIN: &str = "serin.dev/v1beta1";

/// Rewrites every `apiVersion: flagger.app/v1beta1` (as written, quoted or not) to serin.dev/v1beta1.
pub fn convert(text: &str) -> Converted {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        // A list item's first key too (`- apiVersion: ...` in a List's items).
        let trimmed = line.trim_start().trim_start_matches("- ").trim_start();
        let is_api_version = trimmed.strip_prefix("apiVersion:").is_some_and(|value| {
            // The value, without a trailing comment or quotes.
            let value = value.split(" #").next().unwrap_or_default();
            value.trim().trim_matches(['"', '\'']) == FLAGGER
        });
        if is_api_version {
            out.push_str(&line.replacen(FLAGGER, SERIN, 1));
        } else {
            out.push_str(line);
        }
    }
    let warnings = warnings(&out);
    Converted {
        text: out,
        warnings,
    }
}

fn warnings(converted: &str) -> Vec<String> {
    let documents: Vec<Value> = match serde_saphyr::from_multiple(converted) {
        Ok(d) => d,
        Err(e) => return vec![format!("not YAML, left as it was: {e}")],
    };
    let mut warnings = Vec::new();
    if documents.iter().any(|d| d["apiVersion"] == FLAGGER) {
        warnings.push(format!(
            "some {FLAGGER} objects are written in a way this rewrite does not change (JSON, flow style): change their apiVersion by hand"
        ));
    }
    for doc in documents.iter().filter(|d| d["apiVersion"] == SERIN) {
        let name = doc["metadata"]["name"].as_str().unwrap_or("(no name)");
        match doc["kind"].as_str() {
            Some("Canary") => match serde_json::from_value::<Canary>(doc.clone()) {
                Err(e) => warnings.push(format!("Canary {name}: Serin cannot read it: {e}")),
                Ok(canary) => canary_warnings(name, &canary, &mut warnings),
            },
            Some("MetricTemplate") => match serde_json::from_value::<MetricTemplate>(doc.clone()) {
                Err(e) => warnings.push(format!("MetricTemplate {name}: Serin cannot read it: {e}")),
                Ok(t) if t.spec.provider.provider_type != MetricProviderType::Prometheus => warnings.push(format!(
                    "MetricTemplate {name}: provider {:?} is not supported yet (Prometheus is): checks using it report an Error and hold the canary",
                    t.spec.provider.provider_type
                )),
                Ok(_) => {}
            },
            _ => {}
        }
    }
    warnings
}

fn canary_warnings(name: &str, canary: &Canary, warnings: &mut Vec<String>) {
    match canary.spec.provider {
        None => warnings.push(format!(
            "Canary {name}: no spec.provider: Serin uses the controller's --provider (gatewayapi unless set), where Flagger's default mesh provider is istio; set spec.provider to keep the one you use"
        )),
        Some(p) if router_for(p).is_none() => warnings.push(format!(
            "Canary {name}: provider {p} has no router in Serin yet: the Canary would be reported NotSupported and never progress"
        )),
        Some(_) => {}
    }
    let defaults = ControllerDefaults {
        provider: canary.spec.provider.unwrap_or(Provider::GatewayApi),
        min_interval: std::time::Duration::ZERO,
    };
    if let Err(problems) = crate::decision::settings::Settings::resolve(&canary.spec, &defaults) {
        for p in problems {
            warnings.push(format!("Canary {name}: {}: {}", p.path, p.message));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_api_versions_change_and_comments_stay() {
        let flagger = "# podinfo's canary\napiVersion: flagger.app/v1beta1 # Flagger\nkind: Canary\nmetadata:\n  name: podinfo\nspec:\n  provider: istio\n  targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}\n  service: {port: 9898}\n  analysis: {interval: 1m, threshold: 5, maxWeight: 50, stepWeight: 10}\n---\napiVersion: \"flagger.app/v1beta1\"\nkind: MetricTemplate\nmetadata: {name: errors}\nspec:\n  provider: {type: prometheus, address: http://prometheus:9090}\n  query: up\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: podinfo, annotations: {note: flagger.app/v1beta1}}\n";
        let c = convert(flagger);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let want = flagger
            .replacen(
                "apiVersion: flagger.app/v1beta1 # Flagger",
                "apiVersion: serin.dev/v1beta1 # Flagger",
                1,
            )
            .replacen(
                "apiVersion: \"flagger.app/v1beta1\"",
                "apiVersion: \"serin.dev/v1beta1\"",
                1,
            );
        assert_eq!(c.text, want);
        assert!(
            c.text.contains("note: flagger.app/v1beta1"),
            "other text is left alone"
        );
    }

    #[test]
    fn list_items_are_rewritten_and_what_is_left_is_told() {
        let list = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: flagger.app/v1beta1\n  kind: AlertProvider\n  metadata: {name: slack}\n  spec: {type: slack, address: https://hooks.slack.com/x}\n";
        let c = convert(list);
        assert!(
            c.text.contains("- apiVersion: serin.dev/v1beta1"),
            "{}",
            c.text
        );
        let json = r#"{"apiVersion": "flagger.app/v1beta1", "kind": "AlertProvider", "metadata": {"name": "a"}, "spec": {"type": "slack", "address": "https://x"}}"#;
        let c = convert(json);
        assert_eq!(c.text, json, "left alone");
        assert!(c.warnings[0].contains("by hand"), "{:?}", c.warnings);
    }

    #[test]
    fn what_behaves_differently_is_named() {
        let flagger = "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata: {name: web}\nspec:\n  targetRef: {apiVersion: apps/v1, kind: Deployment, name: web}\n  service: {port: 80}\n  analysis: {interval: 1m, stepWeight: 10, maxWeight: 50}\n---\napiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata: {name: api}\nspec:\n  provider: gloo\n  targetRef: {apiVersion: apps/v1, kind: Deployment, name: api}\n  service: {port: 80}\n  analysis: {interval: 1m, stepWeight: 10, maxWeight: 50}\n---\napiVersion: flagger.app/v1beta1\nkind: MetricTemplate\nmetadata: {name: dd}\nspec:\n  provider: {type: datadog}\n  query: avg:latency\n";
        let w = convert(flagger).warnings;
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(w[0].starts_with("Canary web: no spec.provider"), "{w:?}");
        assert!(w[1].contains("provider gloo has no router"), "{w:?}");
        assert!(
            w[2].starts_with("MetricTemplate dd: provider Datadog"),
            "{w:?}"
        );
    }
}
