//! The CRDs as the API server gets them: the derived schemas, plus the rules that depend on the
//! controller's settings (the minimum analysis interval).

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, ValidationRule,
};
use kube::CustomResourceExt;

use super::analysis::DURATION_PATTERN;
use super::duration::format_duration;
use super::{AlertProvider, Canary, MetricTemplate};

/// Every CRD Serin serves, for a controller whose minimum analysis interval is `min_interval`.
pub fn crds(min_interval: Duration) -> Vec<CustomResourceDefinition> {
    let mut canary = Canary::crd();
    for version in &mut canary.spec.versions {
        let Some(spec) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .and_then(|s| s.properties.as_mut())
            .and_then(|p| p.get_mut("spec"))
            .and_then(|s| s.properties.as_mut())
        else {
            continue;
        };
        for field in ["analysis", "canaryAnalysis"] {
            let Some(analysis) = spec.get_mut(field).and_then(|a| a.properties.as_mut()) else {
                continue;
            };
            if let Some(interval) = analysis.get_mut("interval") {
                interval.max_length = Some(32);
                interval.x_kubernetes_validations = Some(interval_rules(field, min_interval));
            }
            if let Some(max_duration) = analysis.get_mut("maxDuration") {
                max_duration.max_length = Some(32);
                max_duration.x_kubernetes_validations = Some(vec![rule(
                    format!("self.matches('{DURATION_PATTERN}')"),
                    format!("{field}.maxDuration must be a duration such as 30m, 1h or 1h30m"),
                )]);
            }
            let metric_interval = analysis
                .get_mut("metrics")
                .and_then(|m| m.items.as_mut())
                .and_then(|items| match items {
                    k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray::Schema(s) => Some(s),
                    _ => None,
                })
                .and_then(|item| item.properties.as_mut())
                .and_then(|p| p.get_mut("interval"));
            if let Some(interval) = metric_interval {
                interval.max_length = Some(32);
                interval.x_kubernetes_validations = Some(vec![rule(
                    format!("self.matches('{DURATION_PATTERN}')"),
                    format!(
                        "{field}.metrics[].interval must be a duration such as 30s, 1m or 1h30m"
                    ),
                )]);
            }
        }
    }
    vec![canary, MetricTemplate::crd(), AlertProvider::crd()]
}

fn interval_rules(field: &str, min_interval: Duration) -> Vec<ValidationRule> {
    let min = format_duration(min_interval);
    vec![
        rule(
            format!("self.matches('{DURATION_PATTERN}')"),
            format!("{field}.interval must be a duration such as 30s, 1m or 1h30m"),
        ),
        // The pattern guards duration(), which would fail the rule with a parse error on other text.
        rule(
            format!("!self.matches('{DURATION_PATTERN}') || duration(self) >= duration('{min}')"),
            format!("{field}.interval must be at least {min}, the controller's minimum interval"),
        ),
    ]
}

fn rule(rule: String, message: String) -> ValidationRule {
    ValidationRule {
        rule,
        message: Some(message),
        ..ValidationRule::default()
    }
}

/// The CRDs as one YAML stream.
pub fn crds_yaml(min_interval: Duration) -> Result<String, serde_saphyr::SerializeError> {
    let mut out = String::new();
    for crd in crds(min_interval) {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&crd)?);
    }
    Ok(out)
}
