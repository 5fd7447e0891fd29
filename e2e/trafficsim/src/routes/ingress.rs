//! ingress-nginx: each Ingress that is not a canary sends its host's requests to its backend Service; a
//! canary Ingress (`nginx.ingress.kubernetes.io/canary: "true"`) for the same host takes the requests its
//! `canary-by-header` (with `-value`, `-pattern`, or the value `always`) or `canary-by-cookie` (value
//! `always`) selects, then `canary-weight` percent of the rest. The requests are counted per the user's
//! Ingress, with `canary` naming the upstream when a canary backend served them, as ingress-nginx does.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::Ingress;
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};
use regex::Regex;

use super::{Rates, RouteSettings, RouteSource};
use crate::cluster::reflect;
use crate::model::{
    BackendTarget, HeaderMatch, Precedence, ProxySeries, RequestMatch, ServiceKey, SimRoute,
    SimRule, WeightedBackend,
};

const PREFIX: &str = "nginx.ingress.kubernetes.io";

fn annotation<'a>(ing: &'a Ingress, name: &str) -> Option<&'a str> {
    ing.annotations()
        .get(&format!("{PREFIX}/{name}"))
        .map(String::as_str)
}

fn is_canary(ing: &Ingress) -> bool {
    annotation(ing, "canary") == Some("true")
}

/// The first rule's host and first path's backend Service.
fn host_and_backend(ing: &Ingress) -> Option<(String, ServiceKey)> {
    let rule = ing.spec.as_ref()?.rules.as_ref()?.first()?;
    let service = rule
        .http
        .as_ref()?
        .paths
        .first()?
        .backend
        .service
        .as_ref()?;
    Some((
        rule.host.clone().unwrap_or_default(),
        ServiceKey {
            namespace: ing.namespace().unwrap_or_default(),
            name: service.name.clone(),
        },
    ))
}

/// The route of `main`, with `canaries` (the canary Ingresses of its host).
pub fn route(
    main: &Ingress,
    canaries: &[&Ingress],
    settings: RouteSettings,
) -> Result<SimRoute, String> {
    let (_, service) = host_and_backend(main).ok_or("no rule with a backend Service")?;
    let mut rules = Vec::new();
    let mut split = vec![WeightedBackend {
        target: BackendTarget::Service(service.clone()),
        weight: 100,
        set_cookie: None,
    }];
    let mut canary_services = Vec::new();
    for canary in canaries {
        let Some((_, canary_service)) = host_and_backend(canary) else {
            continue;
        };
        canary_services.push(canary_service.clone());
        let to_canary = vec![WeightedBackend {
            target: BackendTarget::Service(canary_service.clone()),
            weight: 1,
            set_cookie: None,
        }];
        if let Some(header) = annotation(canary, "canary-by-header") {
            let name = header.to_ascii_lowercase();
            let condition = match (
                annotation(canary, "canary-by-header-value"),
                annotation(canary, "canary-by-header-pattern"),
            ) {
                (Some(v), _) => HeaderMatch::Exact {
                    name,
                    value: v.to_string(),
                },
                (None, Some(p)) => HeaderMatch::Regex {
                    name,
                    regex: Regex::new(p).map_err(|e| format!("canary-by-header-pattern: {e}"))?,
                },
                (None, None) => HeaderMatch::Exact {
                    name,
                    value: "always".into(),
                },
            };
            rules.push(SimRule {
                mirrors: vec![],
                matches: vec![RequestMatch {
                    headers: vec![condition],
                }],
                backends: to_canary.clone(),
                set_cookie: None,
            });
        }
        if let Some(cookie) = annotation(canary, "canary-by-cookie") {
            let regex = Regex::new(&format!("(^|;\\s*){}=always(;|$)", regex::escape(cookie)))
                .map_err(|e| format!("canary-by-cookie: {e}"))?;
            rules.push(SimRule {
                mirrors: vec![],
                matches: vec![RequestMatch {
                    headers: vec![HeaderMatch::Regex {
                        name: "cookie".into(),
                        regex,
                    }],
                }],
                backends: to_canary,
                set_cookie: None,
            });
        }
        let weight: u32 = annotation(canary, "canary-weight")
            .map(|w| {
                w.trim()
                    .parse()
                    .map_err(|_| format!("canary-weight {w:?} is not a number"))
            })
            .transpose()?
            .unwrap_or(0)
            .min(100);
        split[0].weight -= weight.min(split[0].weight);
        split.push(WeightedBackend {
            target: BackendTarget::Service(canary_service),
            weight,
            set_cookie: None,
        });
    }
    rules.push(SimRule {
        mirrors: vec![],
        matches: vec![],
        backends: split,
        set_cookie: None,
    });
    Ok(SimRoute {
        provider: "nginx",
        namespace: main.namespace().unwrap_or_default(),
        name: main.name_any(),
        rules,
        rps: settings.rps,
        request_mix: settings.request_mix,
        precedence: Precedence::FirstMatch,
        proxy: Some(ProxySeries::Nginx {
            canaries: canary_services,
        }),
        clients: settings.clients,
    })
}

/// Every non-canary Ingress as a route, with the canary Ingresses of its namespace and host.
pub fn source(client: &Client, rates: Rates) -> RouteSource {
    let store: Store<Ingress> = reflect(Api::all(client.clone()));
    Box::new(move |warnings| {
        let all = store.state();
        let mut canaries: BTreeMap<(String, String), Vec<&Ingress>> = BTreeMap::new();
        for ing in all.iter().filter(|i| is_canary(i)) {
            if let Some((host, _)) = host_and_backend(ing) {
                canaries
                    .entry((ing.namespace().unwrap_or_default(), host))
                    .or_default()
                    .push(ing);
            }
        }
        all.iter()
            .filter(|i| !is_canary(i))
            .filter_map(|main| {
                let host = host_and_backend(main).map(|(h, _)| h).unwrap_or_default();
                let theirs = canaries
                    .get(&(main.namespace().unwrap_or_default(), host))
                    .cloned()
                    .unwrap_or_default();
                let default_rps = rates.default_for(main.namespace(), warnings);
                let made = RouteSettings::from_annotations(&main.metadata, default_rps)
                    .and_then(|s| route(main, &theirs, s));
                match made {
                    Ok(r) => Some(r),
                    Err(e) => {
                        let who = format!(
                            "Ingress {}/{}",
                            main.namespace().unwrap_or_default(),
                            main.name_any()
                        );
                        warnings.once(
                            &format!("{who}@{}", main.resource_version().unwrap_or_default()),
                            &format!("{who} is not simulated: {e}"),
                        );
                        None
                    }
                }
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nginx_canaries(r: &SimRoute) -> &[ServiceKey] {
        match &r.proxy {
            Some(ProxySeries::Nginx { canaries }) => canaries,
            other => panic!("not ingress-nginx's series: {other:?}"),
        }
    }

    fn ingress(name: &str, service: &str, annotations: &[(&str, &str)]) -> Ingress {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "test",
                "annotations": annotations.iter().map(|(k, v)| (format!("{PREFIX}/{k}"), v.to_string())).collect::<BTreeMap<_, _>>()},
            "spec": {"rules": [{"host": "app.example.com", "http": {"paths": [{"path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": service, "port": {"number": 9898}}}}]}}]}
        }))
        .unwrap()
    }

    #[test]
    fn a_weighted_canary_takes_its_share_of_the_main_ingress() {
        let main = ingress("podinfo", "podinfo", &[]);
        let canary = ingress(
            "podinfo-canary",
            "podinfo-canary",
            &[("canary", "true"), ("canary-weight", "30")],
        );
        let r = route(&main, &[&canary], RouteSettings::for_tests()).unwrap();
        assert_eq!(r.name, "podinfo");
        let weights: Vec<u32> = r.rules[0].backends.iter().map(|b| b.weight).collect();
        assert_eq!(weights, [70, 30]);
        assert_eq!(nginx_canaries(&r)[0].name, "podinfo-canary");
    }

    #[test]
    fn header_and_cookie_canaries_come_first() {
        let main = ingress("podinfo", "podinfo", &[]);
        let canary = ingress(
            "podinfo-canary",
            "podinfo-canary",
            &[
                ("canary", "true"),
                ("canary-by-header", "X-Canary"),
                ("canary-by-header-value", "insider"),
                ("canary-by-cookie", "canary"),
            ],
        );
        let r = route(&main, &[&canary], RouteSettings::for_tests()).unwrap();
        assert_eq!(r.rules.len(), 3);
        let header = BTreeMap::from([("x-canary".to_string(), "insider".to_string())]);
        let cookie = BTreeMap::from([("cookie".to_string(), "a=b; canary=always".to_string())]);
        assert!(r.rules[0].matches[0].holds(&header));
        assert!(r.rules[1].matches[0].holds(&cookie));
        assert!(!r.rules[1].matches[0].holds(&BTreeMap::from([(
            "cookie".to_string(),
            "canary=never".to_string()
        )])));
        // Without a weight the rest stays on the main backend.
        let weights: Vec<u32> = r.rules[2].backends.iter().map(|b| b.weight).collect();
        assert_eq!(weights, [100, 0]);
    }
}
