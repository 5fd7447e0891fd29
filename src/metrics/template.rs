//! Flagger's query templates: Go text/template actions over zero-argument functions, rendered with
//! missing keys as errors. Serin reads the actions Flagger's templates use — `{{ name }}`, `{{ namespace }}`,
//! `{{ target }}`, `{{ service }}`, `{{ ingress }}`, `{{ route }}`, `{{ interval }}`,
//! `{{ variables.<key> }}` and `{{ index variables "<key>" }}`, with `{{-`/`-}}` trimming — and refuses any
//! other action with an error, so a half-rendered query is never run.

use std::collections::BTreeMap;

/// The values a query is rendered with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Variables {
    /// The Canary's name.
    pub name: String,
    pub namespace: String,
    /// spec.targetRef.name.
    pub target: String,
    /// spec.service.name, else the target.
    pub service: String,
    /// spec.ingressRef.name, else the target.
    pub ingress: String,
    /// spec.routeRef.name, else the target.
    pub route: String,
    /// The metric's interval (default 1m).
    pub interval: String,
    /// The metric's templateVariables.
    pub variables: BTreeMap<String, String>,
    /// In a template's counts queries only: the variant's workload (`<target>` or `<target>-primary`) and
    /// the variant (`canary` or `primary`).
    pub variant: Option<(String, &'static str)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("{{{{ opened at byte {at} is never closed")]
    Unclosed { at: usize },
    #[error("no variable {key:?} in templateVariables (has: {known})")]
    MissingVariable { key: String, known: String },
    #[error(
        "unknown function {name:?} in {{{{ {action} }}}}: known are name, namespace, target, service, ingress, route, interval, variables.<key>"
    )]
    UnknownFunction { name: String, action: String },
    #[error(
        "{{{{ {name} }}}} is only known in a MetricTemplate's counts queries, which are run once per variant"
    )]
    OnlyInCounts { name: String },
    #[error(
        "unsupported action {{{{ {action} }}}}: Serin renders name, namespace, target, service, ingress, route, interval, variables.<key> and index variables \"<key>\""
    )]
    Unsupported { action: String },
}

/// Renders `query` with `vars`; the first action it can't render is an error.
pub fn render(query: &str, vars: &Variables) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(query.len());
    let mut rest = query;
    let mut offset = 0;
    while let Some(open) = rest.find("{{") {
        let mut literal = &rest[..open];
        let after_open = &rest[open + 2..];
        let close = after_open
            .find("}}")
            .ok_or(TemplateError::Unclosed { at: offset + open })?;
        let mut action = &after_open[..close];
        // `{{- ` trims the whitespace before the action, ` -}}` the whitespace after it.
        if let Some(a) = action.strip_prefix("- ") {
            action = a;
            literal = literal.trim_end();
        }
        let trim_after = action.ends_with(" -");
        if trim_after {
            action = &action[..action.len() - 2];
        }
        out.push_str(literal);
        out.push_str(&evaluate(action.trim(), vars)?);
        let consumed = open + 2 + close + 2;
        offset += consumed;
        rest = &rest[consumed..];
        if trim_after {
            let trimmed = rest.trim_start();
            offset += rest.len() - trimmed.len();
            rest = trimmed;
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn evaluate(action: &str, vars: &Variables) -> Result<String, TemplateError> {
    let variable = |key: &str| {
        vars.variables
            .get(key)
            .cloned()
            .ok_or_else(|| TemplateError::MissingVariable {
                key: key.to_string(),
                known: if vars.variables.is_empty() {
                    "none".to_string()
                } else {
                    vars.variables
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            })
    };
    let words: Vec<&str> = action.split_whitespace().collect();
    match words.as_slice() {
        [word] => {
            if let Some(key) = word.strip_prefix("variables.") {
                if is_identifier(key) {
                    return variable(key);
                }
                return Err(TemplateError::Unsupported {
                    action: action.to_string(),
                });
            }
            Ok(match *word {
                "name" => vars.name.clone(),
                "namespace" => vars.namespace.clone(),
                "target" => vars.target.clone(),
                "service" => vars.service.clone(),
                "ingress" => vars.ingress.clone(),
                "route" => vars.route.clone(),
                "interval" => vars.interval.clone(),
                "workload" | "variant" => {
                    let Some((workload, variant)) = &vars.variant else {
                        return Err(TemplateError::OnlyInCounts {
                            name: word.to_string(),
                        });
                    };
                    if *word == "workload" {
                        workload.clone()
                    } else {
                        variant.to_string()
                    }
                }
                w if is_identifier(w) => {
                    return Err(TemplateError::UnknownFunction {
                        name: w.to_string(),
                        action: action.to_string(),
                    });
                }
                _ => {
                    return Err(TemplateError::Unsupported {
                        action: action.to_string(),
                    });
                }
            })
        }
        // Go's index on a map yields "" for a missing key, without an error.
        ["index", "variables", key]
            if key.len() >= 2 && key.starts_with('"') && key.ends_with('"') =>
        {
            Ok(vars
                .variables
                .get(&key[1..key.len() - 1])
                .cloned()
                .unwrap_or_default())
        }
        _ => Err(TemplateError::Unsupported {
            action: action.to_string(),
        }),
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Variables {
        Variables {
            name: "podinfo-canary-spec".into(),
            namespace: "test".into(),
            target: "podinfo".into(),
            service: "podinfo-svc".into(),
            ingress: "podinfo-ing".into(),
            route: "podinfo-route".into(),
            interval: "2m".into(),
            variables: BTreeMap::from([
                ("direction".into(), "inbound".into()),
                ("code".into(), "5..".into()),
            ]),
            variant: None,
        }
    }

    #[test]
    fn workload_and_variant_render_only_in_counts() {
        let q = "{{ workload }}/{{ variant }}";
        assert_eq!(
            render(q, &vars()),
            Err(TemplateError::OnlyInCounts {
                name: "workload".into()
            })
        );
        let primary = Variables {
            variant: Some(("podinfo-primary".into(), "primary")),
            ..vars()
        };
        assert_eq!(render(q, &primary).unwrap(), "podinfo-primary/primary");
    }

    #[test]
    fn every_variable_renders() {
        let q = "{{ name }}|{{ namespace }}|{{target}}|{{ service }}|{{ ingress }}|{{ route }}|{{ interval }}|{{ variables.direction }}|{{ index variables \"code\" }}";
        assert_eq!(
            render(q, &vars()).unwrap(),
            "podinfo-canary-spec|test|podinfo|podinfo-svc|podinfo-ing|podinfo-route|2m|inbound|5.."
        );
    }

    #[test]
    fn a_flagger_template_renders() {
        let q = r#"sum(rate(istio_requests_total{reporter="destination", destination_workload_namespace="{{ namespace }}", destination_workload="{{ target }}", response_code=~"{{ variables.code }}"}[{{ interval }}]))"#;
        assert_eq!(
            render(q, &vars()).unwrap(),
            r#"sum(rate(istio_requests_total{reporter="destination", destination_workload_namespace="test", destination_workload="podinfo", response_code=~"5.."}[2m]))"#
        );
    }

    #[test]
    fn trim_markers_trim_the_whitespace_beside_them() {
        assert_eq!(
            render("a  {{- target -}}  b", &vars()).unwrap(),
            "apodinfob"
        );
        assert_eq!(
            render("a {{ target -}}\n b", &vars()).unwrap(),
            "a podinfob"
        );
    }

    #[test]
    fn a_missing_variable_is_an_error_naming_it() {
        let err = render("x{{ variables.nope }}", &vars()).unwrap_err();
        assert_eq!(
            err,
            TemplateError::MissingVariable {
                key: "nope".into(),
                known: "code, direction".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "no variable \"nope\" in templateVariables (has: code, direction)"
        );
        let none = Variables::default();
        assert!(
            render("{{ variables.a }}", &none)
                .unwrap_err()
                .to_string()
                .contains("(has: none)")
        );
    }

    #[test]
    fn index_of_a_missing_key_is_empty_as_in_go() {
        assert_eq!(
            render("[{{ index variables \"nope\" }}]", &vars()).unwrap(),
            "[]"
        );
    }

    #[test]
    fn malformed_templates_are_errors() {
        assert_eq!(
            render("rate(x[{{ interval ]))", &vars()).unwrap_err(),
            TemplateError::Unclosed { at: 7 }
        );
        assert!(matches!(
            render("{{ .Namespace }}", &vars()).unwrap_err(),
            TemplateError::Unsupported { .. }
        ));
        let err = render("{{ nmespace }}", &vars()).unwrap_err();
        assert!(
            matches!(err, TemplateError::UnknownFunction { ref name, .. } if name == "nmespace")
        );
        assert!(err.to_string().contains("{{ nmespace }}"), "{err}");
        assert!(matches!(
            render("{{ printf \"%s\" target }}", &vars()).unwrap_err(),
            TemplateError::Unsupported { .. }
        ));
        assert!(matches!(
            render("{{ variables.a.b }}", &vars()).unwrap_err(),
            TemplateError::Unsupported { .. }
        ));
    }

    #[test]
    fn text_without_actions_is_unchanged() {
        assert_eq!(render("up == 1", &vars()).unwrap(), "up == 1");
        // A lone closing brace pair is text, as in Go.
        assert_eq!(render("a }} b", &vars()).unwrap(), "a }} b");
    }
}
