//! The load tester's API, answered by the simulator: Serin's own load tester (its routes and gates), with a
//! runner that turns each `hey` or `ghz` command into simulated requests to the Service the command names,
//! for as long as the command says. Flagger manifests whose webhooks call a load tester run unchanged in the
//! test world, and the canary's pods see the load in their series as they would a real one.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use serin::loadtester::command::{LoadSpec, Tool};
use serin::loadtester::load::{LoadReport, LoadRunner};

use crate::engine::Engine;
use crate::model::{
    BackendTarget, Precedence, RequestClass, ServiceKey, SimRoute, SimRule, WeightedBackend,
};

/// The provider name of the routes a load makes (the simulator's own counter carries it).
pub const PROVIDER: &str = "loadtester";

/// Requests per second per worker when a command sets no rate: "as fast as they go", made finite.
const UNLIMITED_RPS_PER_WORKER: f64 = 20.0;

/// The loads running now, as routes straight to their Service.
#[derive(Default)]
pub struct Loads {
    routes: Mutex<BTreeMap<String, SimRoute>>,
}

impl Loads {
    pub fn routes(&self) -> Vec<SimRoute> {
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn set(&self, route: Option<SimRoute>, name: &str) {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        match route {
            Some(r) => routes.insert(name.to_string(), r),
            None => routes.remove(name),
        };
    }
}

/// Simulated load: a route of its own to the named Service while the command runs.
pub struct SimulatedLoad {
    pub loads: Arc<Loads>,
    pub engine: Arc<Mutex<Engine>>,
    next: AtomicU64,
}

impl SimulatedLoad {
    pub fn new(loads: Arc<Loads>, engine: Arc<Mutex<Engine>>) -> Self {
        SimulatedLoad {
            loads,
            engine,
            next: AtomicU64::new(1),
        }
    }
}

/// The Service a load's target names: `name.namespace[.svc[.cluster.local]][:port][/path]`, with hey's
/// scheme. A bare name resolves in the load tester's own namespace in a real cluster; the simulator has none.
pub fn service_of(spec: &LoadSpec) -> Result<ServiceKey, String> {
    let rest = match spec.tool {
        Tool::Hey => spec
            .target
            .split_once("://")
            .map(|(_, r)| r)
            .ok_or_else(|| format!("{:?} is not a URL", spec.target))?,
        Tool::Ghz => spec.target.as_str(),
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    let host = host
        .strip_suffix(".cluster.local")
        .unwrap_or(host)
        .trim_end_matches(".svc");
    match host.split('.').collect::<Vec<_>>()[..] {
        [name, namespace] if !name.is_empty() && !namespace.is_empty() => Ok(ServiceKey {
            namespace: namespace.into(),
            name: name.into(),
        }),
        _ => Err(format!(
            "{:?}: the simulator needs the Service as <name>.<namespace> in the target",
            spec.target
        )),
    }
}

/// The route a load makes, its rate, and how long it runs.
pub fn load_route(spec: &LoadSpec, name: String) -> Result<(SimRoute, Duration), String> {
    let service = service_of(spec)?;
    let rps = spec
        .rate
        .unwrap_or(f64::from(spec.concurrency) * UNLIMITED_RPS_PER_WORKER);
    let duration = spec
        .duration
        .unwrap_or_else(|| Duration::from_secs_f64(spec.requests as f64 / rps));
    let headers: BTreeMap<String, String> = spec
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    let route = SimRoute {
        provider: PROVIDER,
        namespace: service.namespace.clone(),
        name,
        rules: vec![SimRule {
            mirrors: vec![],
            matches: vec![],
            backends: vec![WeightedBackend {
                target: BackendTarget::Service(service),
                weight: 1,
                set_cookie: None,
            }],
            set_cookie: None,
        }],
        rps,
        request_mix: if headers.is_empty() {
            vec![]
        } else {
            vec![RequestClass {
                share: 1.0,
                headers,
            }]
        },
        precedence: Precedence::MostSpecific,
        proxy: None,
        clients: 0,
    };
    Ok((route, duration))
}

impl LoadRunner for SimulatedLoad {
    fn run(&self, spec: LoadSpec) -> BoxFuture<'static, Result<LoadReport, String>> {
        let name = format!("load-{}", self.next.fetch_add(1, Ordering::Relaxed));
        let (loads, engine) = (self.loads.clone(), self.engine.clone());
        Box::pin(async move {
            let (route, duration) = load_route(&spec, name.clone())?;
            let namespace = route.namespace.clone();
            loads.set(Some(route), &name);
            tokio::time::sleep(duration).await;
            loads.set(None, &name);
            let (ok, failed) = engine
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .metrics
                .route_outcomes(&namespace, &name);
            Ok(LoadReport {
                requests: ok + failed,
                ok,
                failed,
                errors: 0,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serin::loadtester::command::parse;

    #[test]
    fn flaggers_load_command_becomes_a_route_to_the_canary_service() {
        let spec = parse("hey -z 1m -q 10 -c 2 http://podinfo-canary.test:9898/").unwrap();
        let (route, duration) = load_route(&spec, "load-1".into()).unwrap();
        assert_eq!(duration, Duration::from_secs(60));
        assert_eq!(route.rps, 20.0);
        assert_eq!(route.namespace, "test");
        assert_eq!(
            route.rules[0].backends[0].target,
            BackendTarget::Service(ServiceKey {
                namespace: "test".into(),
                name: "podinfo-canary".into()
            })
        );
    }

    #[test]
    fn a_count_runs_for_as_long_as_the_rate_takes_and_headers_are_sent() {
        let spec =
            parse("hey -n 100 -q 5 -c 2 -H 'X-Canary: insider' http://app.ns.svc.cluster.local/")
                .unwrap();
        let (route, duration) = load_route(&spec, "l".into()).unwrap();
        assert_eq!(duration, Duration::from_secs(10));
        assert_eq!(route.request_mix[0].headers["x-canary"], "insider");
        let ghz = parse("ghz -n 40 -q 20 --insecure grpc.ns:9999").unwrap();
        assert_eq!(
            load_route(&ghz, "g".into()).unwrap().1,
            Duration::from_secs(2)
        );
    }

    #[test]
    fn a_target_without_a_namespace_is_refused_with_the_reason() {
        let spec = parse("hey -z 1m http://podinfo-canary:9898/").unwrap();
        let err = load_route(&spec, "l".into()).unwrap_err();
        assert!(err.contains("<name>.<namespace>"), "{err}");
    }
}
