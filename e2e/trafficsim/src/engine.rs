//! The simulation: each step sends every route its share of requests for the elapsed time, picks the rule by
//! the request's headers, the backend by the rule's weights, and the pod in turn, and records how the pod
//! answered. Pure: the same seed and the same sequence of worlds and steps give the same series.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use crate::metrics::{IngressServed, Metrics, ProxyServed, Routed, Served};
use crate::model::{
    BackendTarget, Precedence, ProxySeries, RequestMatch, ServiceKey, SimPod, SimRoute,
    WeightedBackend, World,
};
use crate::rng::SplitMix64;

pub struct Engine {
    seed: u64,
    /// The most requests a second simulated over all routes together (see [`Engine::with_max_rps`]).
    max_rps: f64,
    routes: HashMap<String, RouteState>,
    /// Simulated seconds since the start (cookies expire by it).
    clock: f64,
    pub metrics: Metrics,
}

struct RouteState {
    rng: SplitMix64,
    /// Fraction of a request owed from earlier steps, so the rate holds whatever the step length.
    owed: f64,
    rules: Vec<Balancer>,
    next_pod: HashMap<ServiceKey, usize>,
    /// The route's clients, when it has some, and the one sending the next request.
    clients: Vec<Client>,
    next_client: usize,
}

/// A client as a browser is one: it keeps the cookies answers set, and sends them back.
#[derive(Default)]
struct Client {
    /// Cookie name -> (value, expiry in simulated seconds; None: for the session).
    jar: BTreeMap<String, (String, Option<f64>)>,
    /// The backend Service that served its previous request.
    last_backend: Option<String>,
}

impl Client {
    /// The `cookie` header it sends: the class's own cookies, then its live ones.
    fn cookie_header(&self, class_cookie: Option<&String>, now: f64) -> Option<String> {
        let live = self
            .jar
            .iter()
            .filter(|(_, (_, expiry))| expiry.is_none_or(|e| e > now))
            .map(|(name, (value, _))| format!("{name}={value}"));
        let all: Vec<String> = class_cookie.cloned().into_iter().chain(live).collect();
        (!all.is_empty()).then(|| all.join("; "))
    }

    /// Keeps (or, with a Max-Age of 0 or less, drops) the cookie a `Set-Cookie` value sets.
    fn set_cookie(&mut self, set_cookie: &str, now: f64) {
        let mut parts = set_cookie.split(';').map(str::trim);
        let Some((name, value)) = parts.next().and_then(|p| p.split_once('=')) else {
            return;
        };
        let max_age = parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.eq_ignore_ascii_case("max-age"))
            .and_then(|(_, v)| v.parse::<f64>().ok());
        match max_age {
            Some(age) if age <= 0.0 => {
                self.jar.remove(name);
            }
            age => {
                self.jar
                    .insert(name.to_string(), (value.to_string(), age.map(|a| now + a)));
            }
        }
    }
}

/// Smooth weighted round-robin (as nginx balances): over any window the split follows the weights as
/// closely as whole requests allow, with no randomness in the split itself.
#[derive(Default)]
struct Balancer {
    backends: Vec<WeightedBackend>,
    current: Vec<i64>,
}

impl Balancer {
    fn pick(&mut self, backends: &[WeightedBackend]) -> Option<usize> {
        if self.backends != backends {
            self.backends = backends.to_vec();
            self.current = vec![0; backends.len()];
        }
        let total: i64 = backends.iter().map(|b| i64::from(b.weight)).sum();
        if total == 0 {
            return None;
        }
        for (c, b) in self.current.iter_mut().zip(backends) {
            *c += i64::from(b.weight);
        }
        // The first of the largest wins ties, so the order of backends breaks them deterministically.
        let best = (0..self.current.len()).fold(0, |best, i| {
            if self.current[i] > self.current[best] {
                i
            } else {
                best
            }
        });
        self.current[best] -= total;
        Some(best)
    }
}

impl Engine {
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            max_rps: f64::INFINITY,
            routes: HashMap::new(),
            clock: 0.0,
            metrics: Metrics::default(),
        }
    }

    /// Caps the requests simulated a second over all routes: when the routes ask for more, each route's
    /// rate is scaled down in proportion. A world of thousands of routes (the scale benchmark's fleets,
    /// whose routes carry no rate annotation) would otherwise ask for hundreds of thousands a second and
    /// take the simulator's whole core, which the API server needs.
    pub fn with_max_rps(mut self, max_rps: f64) -> Self {
        self.max_rps = max_rps;
        self
    }

    pub fn step(&mut self, world: &World, elapsed: Duration) {
        let mut routes: Vec<(String, &SimRoute)> =
            world.routes.iter().map(|r| (r.key(), r)).collect();
        routes.sort_by(|a, b| a.0.cmp(&b.0));
        let live_routes: HashSet<&str> = routes.iter().map(|(k, _)| k.as_str()).collect();
        self.routes.retain(|k, _| live_routes.contains(k.as_str()));
        let asked: f64 = routes.iter().map(|(_, r)| r.rps.max(0.0)).sum();
        let scale = if asked > self.max_rps {
            self.max_rps / asked
        } else {
            1.0
        };
        for (key, route) in routes {
            let seed = self.seed;
            let state = self.routes.entry(key).or_insert_with_key(|key| RouteState {
                rng: SplitMix64::for_stream(seed, key),
                owed: 0.0,
                rules: Vec::new(),
                next_pod: HashMap::new(),
                clients: Vec::new(),
                next_client: 0,
            });
            let due = route.rps.max(0.0) * scale * elapsed.as_secs_f64() + state.owed;
            let n = due.floor();
            state.owed = due - n;
            state
                .clients
                .resize_with(route.clients as usize, Client::default);
            for _ in 0..n as u64 {
                simulate_request(route, state, world, self.clock, &mut self.metrics);
            }
        }
        self.clock += elapsed.as_secs_f64();
        let live_pods: HashSet<(String, String)> = world
            .endpoints
            .values()
            .flatten()
            .map(|p| (p.namespace.clone(), p.name.clone()))
            .collect();
        self.metrics.retain_pods(&live_pods);
    }
}

fn simulate_request(
    route: &SimRoute,
    state: &mut RouteState,
    world: &World,
    now: f64,
    metrics: &mut Metrics,
) {
    let draw = state.rng.next_f64();
    let mut cumulative = 0.0;
    let mut headers = route
        .request_mix
        .iter()
        .find(|class| {
            cumulative += class.share;
            draw < cumulative
        })
        .map(|class| class.headers.clone())
        .unwrap_or_default();
    // The clients take turns; each sends the cookies it was given.
    let client = (!state.clients.is_empty()).then(|| {
        let i = state.next_client % state.clients.len();
        state.next_client = state.next_client.wrapping_add(1);
        i
    });
    if let Some(i) = client
        && let Some(cookie) = state.clients[i].cookie_header(headers.get("cookie"), now)
    {
        headers.insert("cookie".into(), cookie);
    }
    let headers = &headers;

    // Of the rules that match, the one whose match names the most headers wins (Gateway API precedence,
    // reduced to the conditions the simulator models), ties going to the earlier rule; or, for a route
    // whose rules are taken in order, the first.
    let specificity = |m: &RequestMatch| match route.precedence {
        Precedence::MostSpecific => m.headers.len(),
        Precedence::FirstMatch => 0,
    };
    let chosen = route
        .rules
        .iter()
        .enumerate()
        .filter_map(|(i, rule)| {
            if rule.matches.is_empty() {
                return Some((i, 0));
            }
            rule.matches
                .iter()
                .filter(|m| m.holds(headers))
                .map(specificity)
                .max()
                .map(|s| (i, s))
        })
        .fold(None, |best: Option<(usize, usize)>, (i, s)| match best {
            Some((_, bs)) if bs >= s => best,
            _ => Some((i, s)),
        });
    let Some((rule_index, _)) = chosen else {
        metrics.record_routed(routed(route, "", 404));
        return;
    };
    if state.rules.len() < route.rules.len() {
        state
            .rules
            .resize_with(route.rules.len(), Balancer::default);
    }
    // Copies to the rule's mirrors go out beside the request; their answers reach no user, so they are
    // counted where the mirror's pods and proxy count them, never in the route's outcomes.
    for m in &route.rules[rule_index].mirrors {
        if state.rng.next_f64() * 100.0 < m.percent
            && let Some(answer) = answer(state, world, &m.service)
        {
            record_pod_and_proxy(route, &m.service, &answer, metrics);
        }
    }
    let backends = &route.rules[rule_index].backends;
    let Some(b) = state.rules[rule_index].pick(backends) else {
        // Every weight is zero: Gateway API answers 500.
        metrics.record_routed(routed(route, "", 500));
        return;
    };
    let service = match &backends[b].target {
        BackendTarget::Service(service) => service,
        BackendTarget::Unsupported(what) => {
            metrics.record_routed(routed(route, what, 500));
            return;
        }
    };
    // The proxy adds the rule's and the backend's cookies to the answer; the client keeps them.
    if let Some(i) = client {
        let c = &mut state.clients[i];
        for set in [&route.rules[rule_index].set_cookie, &backends[b].set_cookie]
            .into_iter()
            .flatten()
        {
            c.set_cookie(set, now);
        }
        if let Some(previous) = c.last_backend.replace(service.name.clone())
            && previous != service.name
        {
            metrics.record_switch(&route.namespace, &route.name, &previous, &service.name);
        }
    }
    let Some(answer) = answer(state, world, service) else {
        // No ready endpoints: the gateway's "no healthy upstream".
        metrics.record_routed(routed(route, &service.name, 503));
        return;
    };
    metrics.record_routed(routed(route, &service.name, answer.status));
    record_pod_and_proxy(route, service, &answer, metrics);
}

/// How one of a Service's ready pods (taken in turn) answers a request; None when it has none.
struct Answer<'w> {
    pod: &'w SimPod,
    status: u16,
    latency_ms: f64,
}

fn answer<'w>(
    state: &mut RouteState,
    world: &'w World,
    service: &ServiceKey,
) -> Option<Answer<'w>> {
    let pods = world
        .endpoints
        .get(service)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if pods.is_empty() {
        return None;
    }
    let cursor = state.next_pod.entry(service.clone()).or_default();
    let pod = &pods[*cursor % pods.len()];
    *cursor = cursor.wrapping_add(1);
    let status = if state.rng.next_f64() < pod.behaviour.error_rate {
        500
    } else {
        200
    };
    let latency_ms = pod.behaviour.latency_ms * (0.8 + 0.4 * state.rng.next_f64());
    Some(Answer {
        pod,
        status,
        latency_ms,
    })
}

/// The answer in the pod's series and in the series of the proxy the route runs in.
fn record_pod_and_proxy(
    route: &SimRoute,
    service: &ServiceKey,
    a: &Answer<'_>,
    metrics: &mut Metrics,
) {
    let (status, latency_ms) = (a.status, a.latency_ms);
    match &route.proxy {
        Some(ProxySeries::Nginx { canaries }) => metrics.record_ingress(IngressServed {
            namespace: &route.namespace,
            ingress: &route.name,
            service: &service.name,
            canary: canaries.contains(service),
            status,
            latency_ms,
        }),
        Some(series) => {
            if let Some(backend) = series.backend_name(service) {
                metrics.record_proxy(ProxyServed {
                    series,
                    backend: &backend,
                    status,
                    latency_ms,
                });
            }
        }
        None => {}
    }
    metrics.record_served(Served {
        namespace: &a.pod.namespace,
        pod: &a.pod.name,
        workload: &a.pod.workload,
        status,
        latency_ms,
    });
}

fn routed<'a>(route: &'a SimRoute, backend: &'a str, status: u16) -> Routed<'a> {
    Routed {
        namespace: &route.namespace,
        route: &route.name,
        backend,
        status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::MirrorTarget;
    use crate::model::{Behaviour, HeaderMatch, RequestClass, SimPod, SimRule};

    fn svc(name: &str) -> ServiceKey {
        ServiceKey {
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    fn backend(name: &str, weight: u32) -> WeightedBackend {
        WeightedBackend {
            target: BackendTarget::Service(svc(name)),
            weight,
            set_cookie: None,
        }
    }

    fn pods(workload: &str, n: usize, behaviour: Behaviour) -> Vec<SimPod> {
        (0..n)
            .map(|i| SimPod {
                namespace: "ns".into(),
                name: format!("{workload}-5d8f-{i}"),
                workload: workload.into(),
                behaviour: behaviour.clone(),
            })
            .collect()
    }

    fn route(rules: Vec<SimRule>, rps: f64) -> SimRoute {
        SimRoute {
            provider: "test",
            namespace: "ns".into(),
            name: "r".into(),
            rules,
            rps,
            request_mix: vec![],
            precedence: Precedence::MostSpecific,
            proxy: None,
            clients: 0,
        }
    }

    fn world(route: SimRoute) -> World {
        let mut w = World {
            routes: vec![route],
            ..World::default()
        };
        w.endpoints
            .insert(svc("primary"), pods("app-primary", 2, Behaviour::default()));
        w.endpoints.insert(
            svc("canary"),
            pods(
                "app",
                3,
                Behaviour {
                    error_rate: 0.2,
                    latency_ms: 50.0,
                },
            ),
        );
        w
    }

    fn routed_count(engine: &Engine, backend: &str, code: u16) -> u64 {
        let needle = format!("backend=\"{backend}\",code=\"{code}\"}} ");
        engine
            .metrics
            .render()
            .lines()
            .find_map(|l| l.split_once(&needle).map(|(_, n)| n.parse().unwrap()))
            .unwrap_or(0)
    }

    #[test]
    fn routes_asking_more_than_the_cap_share_it_in_proportion() {
        let rule = || SimRule {
            mirrors: vec![],
            matches: vec![],
            backends: vec![backend("primary", 100)],
            set_cookie: None,
        };
        let mut w = world(route(vec![rule()], 100.0));
        w.routes.push(SimRoute {
            name: "r2".into(),
            ..route(vec![rule()], 300.0)
        });
        let served = |e: &Engine, route: &str| -> u64 {
            let needle = format!("route=\"{route}\",backend=\"primary\",code=\"200\"}} ");
            e.metrics
                .render()
                .lines()
                .find_map(|l| l.split_once(&needle).map(|(_, n)| n.parse().unwrap()))
                .unwrap_or(0)
        };
        // 400 asked a second, 100 allowed: each route gets a quarter of its rate.
        let mut capped = Engine::new(1).with_max_rps(100.0);
        let mut free = Engine::new(1).with_max_rps(400.0);
        for _ in 0..10 {
            capped.step(&w, Duration::from_secs(1));
            free.step(&w, Duration::from_secs(1));
        }
        assert_eq!((served(&capped, "r"), served(&capped, "r2")), (250, 750));
        assert_eq!((served(&free, "r"), served(&free, "r2")), (1000, 3000));
    }

    #[test]
    fn weights_split_requests_exactly() {
        let w = world(route(
            vec![SimRule {
                mirrors: vec![],
                matches: vec![],
                backends: vec![backend("primary", 90), backend("canary", 10)],
                set_cookie: None,
            }],
            100.0,
        ));
        let mut e = Engine::new(1);
        // 10 steps of 1s at 100 rps = 1000 requests.
        for _ in 0..10 {
            e.step(&w, Duration::from_secs(1));
        }
        let canary: u64 = [200, 500]
            .iter()
            .map(|c| routed_count(&e, "canary", *c))
            .sum();
        assert_eq!(routed_count(&e, "primary", 200), 900);
        assert_eq!(canary, 100);
    }

    #[test]
    fn mirrored_copies_reach_the_mirror_pods_but_not_the_users() {
        let mut w = world(route(
            vec![SimRule {
                mirrors: vec![MirrorTarget {
                    service: svc("canary"),
                    percent: 50.0,
                }],
                matches: vec![],
                backends: vec![backend("primary", 100), backend("canary", 0)],
                set_cookie: None,
            }],
            100.0,
        ));
        w.endpoints.insert(
            svc("canary"),
            pods(
                "app",
                1,
                Behaviour {
                    error_rate: 1.0,
                    latency_ms: 5.0,
                },
            ),
        );
        let mut e = Engine::new(1);
        for _ in 0..10 {
            e.step(&w, Duration::from_secs(1));
        }
        // Every user got the primary's answer.
        assert_eq!(routed_count(&e, "primary", 200), 1000);
        assert_eq!(routed_count(&e, "canary", 500), 0);
        // About half the requests were copied to the canary, which failed them all.
        let text = e.metrics.render();
        let copies: u64 = text
            .lines()
            .find(|l| {
                l.starts_with("istio_requests_total{")
                    && l.contains("destination_workload=\"app\"")
                    && l.contains("response_code=\"500\"")
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .expect("the canary's series count the copies");
        assert!((400..=600).contains(&copies), "{copies} copies of 1000");
    }

    #[test]
    fn fractional_rates_carry_over_between_steps() {
        let w = world(route(
            vec![SimRule {
                mirrors: vec![],
                matches: vec![],
                backends: vec![backend("primary", 1)],
                set_cookie: None,
            }],
            3.0,
        ));
        let mut e = Engine::new(1);
        for _ in 0..100 {
            e.step(&w, Duration::from_millis(100));
        }
        assert_eq!(routed_count(&e, "primary", 200), 30);
    }

    #[test]
    fn error_rate_and_latency_follow_the_pod_behaviour() {
        let w = world(route(
            vec![SimRule {
                mirrors: vec![],
                matches: vec![],
                backends: vec![backend("canary", 1)],
                set_cookie: None,
            }],
            1000.0,
        ));
        let mut e = Engine::new(42);
        e.step(&w, Duration::from_secs(20));
        let errors = routed_count(&e, "canary", 500) as f64;
        let ok = routed_count(&e, "canary", 200) as f64;
        let rate = errors / (errors + ok);
        assert!((rate - 0.2).abs() < 0.01, "error rate {rate}");
        let text = e.metrics.render();
        // Latency 50ms +-20%: nothing at or under 25ms, everything at or under 100ms.
        let bucket = |le: &str| -> u64 {
            text.lines()
                .filter(|l| {
                    l.starts_with("istio_request_duration_milliseconds_bucket")
                        && l.contains(&format!("le=\"{le}\""))
                })
                .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
                .sum()
        };
        assert_eq!(bucket("25"), 0);
        assert_eq!(bucket("100"), 20_000);
    }

    #[test]
    fn same_seed_same_series_other_seed_other_series() {
        let w = world(route(
            vec![SimRule {
                mirrors: vec![],
                matches: vec![],
                backends: vec![backend("primary", 50), backend("canary", 50)],
                set_cookie: None,
            }],
            500.0,
        ));
        let run = |seed| {
            let mut e = Engine::new(seed);
            for _ in 0..5 {
                e.step(&w, Duration::from_millis(700));
            }
            e.metrics.render()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn header_matches_send_their_share_to_the_matching_rule() {
        let mut r = route(
            vec![
                SimRule {
                    mirrors: vec![],
                    matches: vec![],
                    backends: vec![backend("primary", 1)],
                    set_cookie: None,
                },
                SimRule {
                    mirrors: vec![],
                    matches: vec![RequestMatch {
                        headers: vec![HeaderMatch::Exact {
                            name: "x-canary".into(),
                            value: "insider".into(),
                        }],
                    }],
                    backends: vec![backend("canary", 1)],
                    set_cookie: None,
                },
            ],
            1000.0,
        );
        r.request_mix = vec![RequestClass {
            share: 0.25,
            headers: BTreeMap::from([("x-canary".into(), "insider".into())]),
        }];
        let mut e = Engine::new(3);
        e.step(&world(r), Duration::from_secs(10));
        let canary = (routed_count(&e, "canary", 200) + routed_count(&e, "canary", 500)) as f64;
        let share = canary / 10_000.0;
        assert!((share - 0.25).abs() < 0.02, "share {share}");
    }

    #[test]
    fn no_ready_pods_answer_503_and_zero_weights_500() {
        let mut w = world(route(
            vec![SimRule {
                mirrors: vec![],
                matches: vec![],
                backends: vec![backend("missing", 1)],
                set_cookie: None,
            }],
            10.0,
        ));
        w.routes.push(SimRoute {
            name: "zero".into(),
            ..route(
                vec![SimRule {
                    mirrors: vec![],
                    matches: vec![],
                    backends: vec![backend("primary", 0)],
                    set_cookie: None,
                }],
                10.0,
            )
        });
        let mut e = Engine::new(1);
        e.step(&w, Duration::from_secs(1));
        assert_eq!(routed_count(&e, "missing", 503), 10);
        assert!(
            e.metrics
                .render()
                .contains("route=\"zero\",backend=\"\",code=\"500\"} 10")
        );
    }

    #[test]
    fn pods_take_turns() {
        let w = world(route(
            vec![SimRule {
                mirrors: vec![],
                matches: vec![],
                backends: vec![backend("primary", 1)],
                set_cookie: None,
            }],
            10.0,
        ));
        let mut e = Engine::new(1);
        e.step(&w, Duration::from_secs(1));
        let text = e.metrics.render();
        for pod in ["app-primary-5d8f-0", "app-primary-5d8f-1"] {
            let count = text
                .lines()
                .find(|l| l.starts_with("http_request_duration_seconds_count") && l.contains(pod))
                .unwrap_or_else(|| panic!("no series for {pod}"));
            assert!(count.ends_with(" 5"), "{count}");
        }
    }

    fn switches(engine: &Engine, from: &str, to: &str) -> u64 {
        let needle = format!("from=\"{from}\",to=\"{to}\"}} ");
        engine
            .metrics
            .render()
            .lines()
            .filter(|l| l.starts_with("trafficsim_client_switches_total"))
            .find_map(|l| l.split_once(&needle).map(|(_, n)| n.parse().unwrap()))
            .unwrap_or(0)
    }

    /// Session affinity through the simulator: clients keep the cookie the canary's answers set, and the
    /// rule matching it keeps them there; a Max-Age of 0 drops it and the split takes them back.
    #[test]
    fn clients_keep_the_cookies_answers_set() {
        let sticky = |to: Vec<WeightedBackend>, set_cookie: Option<&str>| SimRule {
            matches: vec![RequestMatch {
                headers: vec![
                    HeaderMatch::whole_value("cookie", "(.*; ?)?canary=abc(;.*)?").unwrap(),
                ],
            }],
            backends: to,
            mirrors: vec![],
            set_cookie: set_cookie.map(str::to_string),
        };
        let split = |canary: u32| SimRule {
            matches: vec![],
            backends: vec![
                backend("primary", 100 - canary),
                WeightedBackend {
                    set_cookie: Some("canary=abc; Max-Age=600; Path=/".into()),
                    ..backend("canary", canary)
                },
            ],
            mirrors: vec![],
            set_cookie: None,
        };
        let mut r = route(
            vec![sticky(vec![backend("canary", 1)], None), split(20)],
            100.0,
        );
        r.precedence = Precedence::FirstMatch;
        r.clients = 20;
        r.request_mix = vec![RequestClass {
            share: 0.5,
            headers: BTreeMap::from([("cookie".to_string(), "theme=dark".to_string())]),
        }];
        let mut e = Engine::new(7);
        e.step(&world(r.clone()), Duration::from_secs(10));
        assert_eq!(
            switches(&e, "canary", "primary"),
            0,
            "a client on the canary stays"
        );
        assert!(switches(&e, "primary", "canary") > 0);
        let on_canary = routed_count(&e, "canary", 200) + routed_count(&e, "canary", 500);
        assert!(
            on_canary > 200 * 2,
            "sticky clients pile up on the canary: {on_canary} of 1000"
        );
        assert_eq!(e.routes.values().next().unwrap().clients.len(), 20);

        // The canary's weight is gone: the cookie is expired on the next answer, and the split (all
        // primary) serves the clients from then on.
        let before = switches(&e, "canary", "primary");
        r.rules = vec![
            sticky(vec![backend("primary", 1)], Some("canary=abc; Max-Age=0")),
            split(0),
        ];
        e.step(&world(r.clone()), Duration::from_secs(1));
        e.step(&world(r), Duration::from_secs(10));
        assert!(switches(&e, "canary", "primary") > before);
        let state = e.routes.values().next().unwrap();
        assert!(
            state.clients.iter().all(|c| c.jar.is_empty()),
            "cookies expired"
        );
    }
}
