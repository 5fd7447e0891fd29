//! `make demo`: Serin at work on the local cluster. Brings the cluster up (or reuses it), installs Serin's
//! CRDs, runs the controller, deploys podinfo behind a Canary with simulated traffic, then rolls out a good
//! version (promoted) and a faulty one (rolled back), printing as it happens the canary's phase, the
//! route's weights, the traffic split that Prometheus sees, and the checks' values; then the Slack messages a
//! loopback receiver got for the promotion and for the rollback.
//!
//! Usage: serin-demo <path to the serin binary> [gatewayapi|istio|linkerd|nginx|contour|traefik]

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::networking::v1::Ingress;
use kube::Client;
use kube::api::{Api, DynamicObject};
use serde_json::{Value, json};
use serin::api::{AlertProvider, Canary, CanaryStatus, Phase};
use serin::decision::Traffic;
use serin_e2e::receiver::Receiver;
use serin_e2e::{SerinProcess, apply, client, cluster, install_crds, prometheus_value, wait_for};

const NS: &str = "serin-demo";

/// podinfo at `version`; its simulated pods fail `error_rate` of requests.
fn podinfo(version: &str, error_rate: f64) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "podinfo"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "podinfo"}},
            "template": {"metadata": {"labels": {"app": "podinfo"}, "annotations": {"trafficsim.serin.dev/latency-ms": "20", "trafficsim.serin.dev/error-rate": error_rate.to_string()}},
                "spec": {"containers": [{"name": "podinfo", "image": format!("ghcr.io/stefanprodan/podinfo:{version}"),
                    "ports": [{"name": "http", "containerPort": 9898}]}]}}}
    })
}

/// The routing providers the demo runs on: every one Serin routes through.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Provider(serin::api::Provider);

const PROVIDERS: &str = "gatewayapi, istio, linkerd, nginx, contour, traefik";

impl Provider {
    fn parse(name: &str) -> Option<Self> {
        use serin::api::Provider as P;
        let p: P = serde_json::from_value(json!(name)).ok()?;
        matches!(
            p,
            P::GatewayApi | P::Istio | P::Linkerd | P::Nginx | P::Contour | P::Traefik
        )
        .then_some(Provider(p))
    }

    fn name(self) -> &'static str {
        self.0.as_str()
    }

    fn router(self) -> &'static dyn serin::routing::Router {
        serin::routing::router_for(self.0)
            .expect("every demo provider has a router")
            .router()
    }

    /// The routing objects Serin makes, as `kubectl get` names them.
    fn objects(self) -> &'static str {
        use serin::api::Provider as P;
        match self.0 {
            P::Istio => {
                "the VirtualService podinfo and the DestinationRules podinfo-primary and podinfo-canary"
            }
            P::Linkerd => "the TrafficSplit podinfo",
            P::Nginx => {
                "the canary Ingress podinfo-canary (a copy of your Ingress podinfo, which Serin only reads)"
            }
            P::Contour => "the HTTPProxy podinfo",
            P::Traefik => "the TraefikService podinfo",
            _ => "the HTTPRoute podinfo",
        }
    }

    fn kubectl_kinds(self) -> &'static str {
        use serin::api::Provider as P;
        match self.0 {
            P::Istio => "virtualservices,destinationrules",
            P::Linkerd => "trafficsplits",
            P::Nginx => "ingresses",
            P::Contour => "httpproxies",
            P::Traefik => "traefikservices",
            _ => "httproutes",
        }
    }

    fn service(self) -> Value {
        use serin::api::Provider as P;
        match self.0 {
            P::GatewayApi => {
                json!({"port": 9898, "gatewayRefs": [{"name": "public-gateway"}], "hosts": ["podinfo.local"]})
            }
            P::Istio => json!({"port": 9898, "hosts": ["podinfo.local"]}),
            _ => json!({"port": 9898}),
        }
    }

    /// The user's own objects the Canary refers to: with nginx, the Ingress for the apex Service.
    async fn users_objects(self, client: &Client) {
        if self.0 == serin::api::Provider::Nginx {
            apply::<Ingress>(client, NS, json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "metadata": {"name": "podinfo"},
                "spec": {"ingressClassName": "nginx", "rules": [{"host": "podinfo.local", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "podinfo", "port": {"number": 9898}}}}]}}]}}))
            .await;
        }
    }

    /// The primary/canary weights in the route, read back as Serin reads them.
    fn weights(self, canary: &Canary, route: &DynamicObject) -> Option<String> {
        Some(match self.router().traffic(canary, route)? {
            Traffic::Split(w) => format!("{}/{}", w.primary, w.canary),
            Traffic::Matched => "matched".into(),
            Traffic::Mirrored => "mirrored".into(),
        })
    }
}

fn canary(provider: Provider) -> Value {
    json!({
        "apiVersion": "serin.dev/v1beta1", "kind": "Canary", "metadata": {"name": "podinfo"},
        "spec": {"provider": provider.name(), "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "ingressRef": (provider.0 == serin::api::Provider::Nginx).then(|| json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "podinfo"})),
            "service": provider.service(),
            "analysis": {"interval": "3s", "stepWeight": 10, "maxWeight": 50, "threshold": 2,
                "alerts": [{"name": "deploys", "severity": "info", "providerRef": {"name": "slack"}}],
                "metrics": [
                {"name": "request-success-rate", "compareToPrimary": {}},
                {"name": "request-duration", "interval": "15s", "thresholdRange": {"max": 500}}
            ]}}
    })
}

/// A Slack AlertProvider whose webhook is the loopback receiver (in a real cluster, the address comes
/// from a Secret).
fn slack(receiver: &Receiver) -> Value {
    json!({"apiVersion": "serin.dev/v1beta1", "kind": "AlertProvider", "metadata": {"name": "slack"},
        "spec": {"type": "slack", "channel": "deploys", "username": "serin", "address": format!("{}/slack", receiver.url)}})
}

/// Prints the Slack message the receiver got whose text starts with `text`, byte for byte as Slack
/// received it.
async fn print_slack(receiver: &Receiver, text: &str) {
    let body = wait_for(
        &format!("the Slack message {text:?}"),
        Duration::from_secs(20),
        Duration::from_millis(200),
        || async {
            let got = receiver.received("/slack");
            got.iter()
                .find(|r| {
                    serde_json::from_str::<Value>(&r.body).is_ok_and(|b| {
                        b["attachments"][0]["text"]
                            .as_str()
                            .is_some_and(|t| t.starts_with(text))
                    })
                })
                .map(|r| r.body.clone())
                .ok_or_else(|| format!("{} messages so far", got.len()))
        },
    )
    .await;
    println!("{body}");
}

/// A fresh namespace: the demo's objects from an earlier run are removed first.
async fn line(client: &Client, clock: &Instant, provider: Provider) -> (CanaryStatus, String) {
    let canary = Api::<Canary>::namespaced(client.clone(), NS)
        .get("podinfo")
        .await
        .ok();
    let mut weights = "-".to_string();
    if let Some(c) = &canary
        && let Some((ar, name)) = provider.router().objects(c).into_iter().next()
        && let Ok(route) = Api::<DynamicObject>::namespaced_with(client.clone(), NS, &ar)
            .get(&name)
            .await
    {
        weights = provider.weights(c, &route).unwrap_or(weights);
    }
    let status = canary.and_then(|c| c.status).unwrap_or_default();
    let sel = |re: &str| format!(r#"kubernetes_namespace="{NS}",kubernetes_pod_name=~"{re}""#);
    let canary_rps = format!(
        "sum(rate(http_request_duration_seconds_count{{{}}}[5s]))",
        sel("podinfo-[0-9a-z]+-[0-9a-z]+")
    );
    let all_rps = format!(
        "sum(rate(http_request_duration_seconds_count{{{}}}[5s]))",
        sel("podinfo-.*")
    );
    let share = match (
        prometheus_value(&canary_rps).await,
        prometheus_value(&all_rps).await,
    ) {
        (Ok(c), Ok(a)) if a > 0.0 => format!("{:5.1}% of {:5.1} req/s", 100.0 * c / a, a),
        (Err(_), Ok(a)) => format!("{:5.1}% of {:5.1} req/s", 0.0, a),
        _ => "no traffic yet".into(),
    };
    let s = clock.elapsed().as_secs();
    let phase = status.phase.map_or("-".to_string(), |p| p.to_string());
    let checks = status
        .checks
        .iter()
        .map(|c| {
            let value = match (c.value, c.name.as_str()) {
                (Some(v), "request-duration") => format!("{v:.0}ms"),
                (Some(v), "request-success-rate") => format!("{v:.1}%"),
                (Some(v), _) => format!("{v:.2}"),
                (None, _) => "-".into(),
            };
            format!("{} {value} {:?}", c.name, c.verdict)
        })
        .collect::<Vec<_>>()
        .join(", ");
    // The judge's e-value against the bar a regression is proven at, per compared metric.
    let judged = status
        .evidence
        .iter()
        .filter(|e| status.last_applied_spec.as_deref() == Some(e.revision.as_str()))
        .map(|e| {
            format!(
                "{} e-value {} of {} {:?}",
                e.name,
                serin::metrics::compare::show_e(e.e_value),
                serin::metrics::compare::show_e(e.fail_at),
                e.verdict
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let text = format!(
        "[{:02}:{:02}] {phase:<12} weight {:>3}  route {weights:<7}  canary serves {share}  checks: {}  judge: {}",
        s / 60,
        s % 60,
        status.canary_weight,
        if checks.is_empty() { "-" } else { &checks },
        if judged.is_empty() { "-" } else { &judged }
    );
    (status, text)
}

/// Prints a line a second until the rollout of a revision other than `previous` ends (Succeeded or
/// Failed), and returns the last status.
async fn follow(
    client: &Client,
    clock: &Instant,
    provider: Provider,
    previous: Option<String>,
) -> CanaryStatus {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (status, text) = line(client, clock, provider).await;
        println!("{text}");
        let ended = status.last_applied_spec != previous
            && matches!(status.phase, Some(Phase::Succeeded | Phase::Failed));
        if ended || Instant::now() > deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn primary_image(client: &Client) -> String {
    Api::<Deployment>::namespaced(client.clone(), NS)
        .get("podinfo-primary")
        .await
        .ok()
        .and_then(|d| d.spec)
        .and_then(|s| s.template.spec)
        .and_then(|s| s.containers.first().and_then(|c| c.image.clone()))
        .unwrap_or_default()
}

#[tokio::main]
async fn main() {
    let Some(serin_bin) = std::env::args().nth(1) else {
        eprintln!("usage: serin-demo <path to the serin binary> [PROVIDER: {PROVIDERS}]");
        std::process::exit(2);
    };
    let provider_name = std::env::args()
        .nth(2)
        .unwrap_or_else(|| "gatewayapi".into());
    let Some(provider) = Provider::parse(&provider_name) else {
        eprintln!(
            "serin-demo: provider {provider_name:?} is not one the demo runs on ({PROVIDERS})"
        );
        std::process::exit(2);
    };
    let env = cluster().await;
    let client = client().await;
    println!(
        "\nThe local cluster: KUBECONFIG={}  PROMETHEUS={}",
        env.kubeconfig(),
        env.prometheus()
    );
    install_crds(&client).await;
    serin_e2e::fresh_namespace(&client, NS).await;
    let receiver = Receiver::start().await;
    apply::<AlertProvider>(&client, NS, slack(&receiver)).await;
    let serin = SerinProcess::start(&serin_bin, NS, "demo").await;
    println!("serin run --namespace {NS} (log: {})", serin.log.display());
    let clock = Instant::now();

    println!(
        "\npodinfo 6.0.0 (3 replicas) with a Canary (provider {}): interval 3s, stepWeight 10, maxWeight 50, threshold 2,\nrequest-success-rate compared with the primary's by the sequential judge, request-duration <= 500ms over 15s,\nalerts to Slack (a loopback receiver stands in for it)",
        provider.name()
    );
    apply::<Deployment>(&client, NS, podinfo("6.0.0", 0.0)).await;
    provider.users_objects(&client).await;
    apply::<Canary>(&client, NS, canary(provider)).await;
    loop {
        let (status, text) = line(&client, &clock, provider).await;
        println!("{text}");
        if status.phase == Some(Phase::Initialized) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    println!(
        "\nSerin made podinfo-primary, the Services podinfo, podinfo-primary, podinfo-canary and {};",
        provider.objects()
    );
    println!(
        "the traffic simulator sends 50 req/s through the route. Letting Prometheus see a few seconds of it ..."
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    println!("{}", line(&client, &clock, provider).await.1);

    println!("\nRolling out podinfo 6.0.1 (healthy: no errors, 20ms):");
    let before = line(&client, &clock, provider).await.0.last_applied_spec;
    apply::<Deployment>(&client, NS, podinfo("6.0.1", 0.0)).await;
    let before = follow(&client, &clock, provider, before)
        .await
        .last_applied_spec;
    println!("podinfo-primary now runs {}.", primary_image(&client).await);
    println!("\nThe promotion, as Slack received it:");
    print_slack(&receiver, "Canary analysis completed successfully").await;

    // The built-in queries select the target's pods by name, which 6.0.1's canary pods share with 6.0.2's:
    // until they are out of the checks' window, their clean requests would dilute 6.0.2's errors.
    println!(
        "\nWaiting 15s, the checks' window, so that 6.0.1's canary pods (whose names match the same pattern) are out of it ..."
    );
    tokio::time::sleep(Duration::from_secs(15)).await;
    println!("\nRolling out podinfo 6.0.2 (faulty: 20% of its requests fail):");
    apply::<Deployment>(&client, NS, podinfo("6.0.2", 0.2)).await;
    let status = follow(&client, &clock, provider, before).await;
    let why = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .and_then(|c| c.message.clone())
        .unwrap_or_default();
    println!("Rolled back: {why}");
    println!(
        "podinfo-primary still runs {}.",
        primary_image(&client).await
    );
    println!("\nThe rollback, as Slack received it:");
    print_slack(&receiver, "Canary proven worse than the primary").await;
    println!(
        "Look around: {}/kubectl --kubeconfig {} -n {NS} get canaries.serin.dev,deploy,svc,{},events",
        env.get("SERIN_BIN"),
        env.kubeconfig(),
        provider.kubectl_kinds()
    );
    println!("The cluster stays up for the next run; e2e/cluster/down stops it.");
    drop(serin);
}
