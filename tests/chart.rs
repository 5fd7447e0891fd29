//! The Helm chart (charts/serin) rendered by a real helm (built from the Go module proxy into the cache):
//! lint, the values schema, the CRDs against `serin crds`, no secret in arguments, least-privilege RBAC,
//! Pod Security "restricted", and the alerts under promtool. tests/chart_install.rs installs it.

use std::time::Duration;

use serde_json::{Value, json};
use serin::api::crds::{crds, crds_yaml};
use serin_e2e::helm::{chart_dir, helm, of_kind, output_text, render};

fn rendered(args: &[&str]) -> Vec<Value> {
    render(args).unwrap_or_else(|e| panic!("helm template {args:?}: {e}"))
}

fn deployment(objects: &[Value]) -> &Value {
    let d = of_kind(objects, "Deployment");
    assert_eq!(d.len(), 1, "one Deployment");
    d[0]
}

fn container(objects: &[Value]) -> &Value {
    &deployment(objects)["spec"]["template"]["spec"]["containers"][0]
}

fn args(objects: &[Value]) -> Vec<String> {
    container(objects)["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string args").to_string())
        .collect()
}

#[test]
fn the_chart_lints_strict_with_every_ci_values_file() {
    let dir = chart_dir();
    let mut files: Vec<_> = std::fs::read_dir(dir.join("ci"))
        .expect("charts/serin/ci")
        .map(|e| e.expect("an entry").path())
        .collect();
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    for file in files {
        let out = helm(
            &[
                "lint",
                "--strict",
                dir.to_str().unwrap(),
                "-f",
                file.to_str().unwrap(),
            ],
            None,
        );
        assert!(
            out.status.success(),
            "{}: {}",
            file.display(),
            output_text(&out)
        );
    }
}

#[test]
fn the_schema_refuses_typos_and_nonsense() {
    for (set, says) in [
        // Flagger's chart reads slack.proxyUrl where its values say slack.proxy: both silently do nothing.
        (
            "slack.proxyUrl=http://proxy:3128",
            "additional properties 'proxyUrl' not allowed",
        ),
        (
            "replicaCount=3",
            "additional properties 'replicaCount' not allowed",
        ),
        ("meshProvider=envoy", "/meshProvider"),
        ("minInterval=ten", "/minInterval"),
        (
            "leaderElection.replicaCount=0",
            "/leaderElection/replicaCount",
        ),
        ("metricsServer=prometheus:9090", "/metricsServer"),
        (
            "rbac.providers.gloo=true",
            "additional properties 'gloo' not allowed",
        ),
    ] {
        let err = render(&["--set", set]).expect_err(set);
        assert!(err.contains(says), "{set}: {err}");
    }
    let err = render(&["--set", "slack.url=https://hooks.slack.com/x"]).expect_err("no channel");
    assert!(err.contains("slack.channel is required"), "{err}");
}

/// Every number as a float: helm's toYaml writes `minimum: 0.0` as `0`, the same number.
fn numbers_as_floats(v: &mut Value) {
    match v {
        Value::Number(n) => *v = json!(n.as_f64().expect("a finite number")),
        Value::Array(items) => items.iter_mut().for_each(numbers_as_floats),
        Value::Object(map) => map.values_mut().for_each(numbers_as_floats),
        _ => {}
    }
}

/// The CRD objects as `serin crds` makes them: what the chart adds (labels, the keep annotation) aside.
fn crd_specs(objects: &[Value]) -> Vec<Value> {
    of_kind(objects, "CustomResourceDefinition")
        .into_iter()
        .map(|crd| {
            let mut crd = crd.clone();
            let meta = crd["metadata"].as_object_mut().unwrap();
            meta.remove("labels");
            meta.remove("annotations");
            numbers_as_floats(&mut crd);
            crd
        })
        .collect()
}

#[test]
fn the_charts_crds_are_serin_crds_at_the_charts_min_interval() {
    let copy =
        std::fs::read_to_string(chart_dir().join("files/crds.yaml")).expect("files/crds.yaml");
    assert_eq!(
        copy,
        crds_yaml(Duration::from_secs(10)).unwrap(),
        "charts/serin/files/crds.yaml is stale: run `make crds` and commit it"
    );
    for (min_interval, duration) in [("10s", 10), ("45s", 45), ("2m", 120)] {
        let objects = rendered(&["--set", &format!("minInterval={min_interval}")]);
        let want: Vec<Value> = crds(Duration::from_secs(duration))
            .iter()
            .map(|c| {
                let mut c = serde_json::to_value(c).unwrap();
                numbers_as_floats(&mut c);
                c
            })
            .collect();
        assert_eq!(crd_specs(&objects), want, "minInterval {min_interval}");
        assert!(args(&objects).contains(&format!("--min-interval={min_interval}")));
        let canary = of_kind(&objects, "CustomResourceDefinition")[0];
        assert_eq!(
            canary["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
            "uninstalling the chart leaves the CRDs, and so every Canary"
        );
    }
    let none = rendered(&["--set", "crds.install=false"]);
    assert!(of_kind(&none, "CustomResourceDefinition").is_empty());
}

#[test]
fn notification_urls_and_tokens_never_reach_the_arguments() {
    let slack = "https://hooks.slack.com/services/T0/B0/slack-secret-part";
    let token = "xoxb-token-secret-part";
    let hook = "https://events.example.com/hook-secret-part";
    let proxy = "http://user:proxy-secret-part@proxy:3128";
    let objects = rendered(&[
        "--set",
        &format!("slack.url={slack},slack.token={token},slack.channel=deploys,slack.proxy={proxy}"),
        "--set",
        &format!("eventWebhook={hook},msteams.existingSecret=teams"),
    ]);
    let deployment = deployment(&objects).to_string();
    for secret in [
        "slack-secret-part",
        "token-secret-part",
        "hook-secret-part",
        "proxy-secret-part",
    ] {
        assert!(
            !deployment.contains(secret),
            "{secret} in the Deployment: {deployment}"
        );
    }
    let secrets = of_kind(&objects, "Secret");
    assert_eq!(secrets.len(), 1);
    let data = &secrets[0]["stringData"];
    assert_eq!(data["slack-url"], slack);
    assert_eq!(data["slack-token"], token);
    assert_eq!(data["event-webhook"], hook);
    assert_eq!(data["slack-proxy"], proxy);
    assert!(
        data.get("msteams-url").is_none(),
        "Teams' URL comes from the existing Secret"
    );
    let env = container(&objects)["env"].as_array().unwrap().clone();
    let from = |name: &str| {
        env.iter()
            .find(|e| e["name"] == name)
            .map(|e| e["valueFrom"]["secretKeyRef"].clone())
            .unwrap_or_else(|| panic!("{name} in {env:?}"))
    };
    let ours = secrets[0]["metadata"]["name"].as_str().unwrap();
    assert_eq!(from("SLACK_URL"), json!({"name": ours, "key": "slack-url"}));
    assert_eq!(
        from("SLACK_TOKEN"),
        json!({"name": ours, "key": "slack-token", "optional": true})
    );
    assert_eq!(
        from("SLACK_PROXY_URL"),
        json!({"name": ours, "key": "slack-proxy"})
    );
    assert_eq!(
        from("EVENT_WEBHOOK_URL"),
        json!({"name": ours, "key": "event-webhook"})
    );
    assert_eq!(from("MSTEAMS_URL"), json!({"name": "teams", "key": "url"}));
    let args = args(&objects);
    assert!(
        args.contains(&"--slack-channel=deploys".to_string()),
        "{args:?}"
    );
    // Arguments are quoted: a value with YAML's own characters arrives whole.
    let odd = rendered(&["--set", "clusterName=eu: prod #1"]);
    assert!(self::args(&odd).contains(&"--cluster-name=eu: prod #1".to_string()));
    let err = render(&["--set", "metricsServer=http://user:pass@prometheus:9090"])
        .expect_err("credentials in an argument");
    assert!(err.contains("/metricsServer"), "{err}");

    // Nothing set: no Secret, no notification variables.
    let plain = rendered(&[]);
    assert!(of_kind(&plain, "Secret").is_empty());
    assert!(
        !container(&plain)["env"]
            .to_string()
            .contains("secretKeyRef")
    );
}

/// The rules of the controller's own role, as (apiGroup, resource, verbs) per resource.
fn rules_of(role: &Value) -> Vec<(String, String, Vec<String>)> {
    let mut out = Vec::new();
    for rule in role["rules"].as_array().expect("rules") {
        let strings = |key: &str| -> Vec<String> {
            rule[key]
                .as_array()
                .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
                .unwrap_or_default()
        };
        for group in strings("apiGroups") {
            for resource in strings("resources") {
                out.push((group.clone(), resource, strings("verbs")));
            }
        }
    }
    out.sort();
    out
}

fn golden(extra: &[(&str, &str, &str)]) -> Vec<(String, String, Vec<String>)> {
    let base = [
        ("serin.dev", "canaries", "list watch patch"),
        ("serin.dev", "canaries/status", "patch"),
        ("serin.dev", "metrictemplates", "list watch"),
        ("serin.dev", "alertproviders", "list watch"),
        ("apps", "deployments", "list watch create patch"),
        ("apps", "daemonsets", "list watch create patch"),
        ("apps", "statefulsets", "list watch create patch"),
        ("", "services", "list watch create patch"),
        ("", "configmaps", "list watch create patch"),
        ("", "secrets", "list watch create patch"),
        ("events.k8s.io", "events", "create patch"),
        (
            "autoscaling",
            "horizontalpodautoscalers",
            "list watch create patch",
        ),
        (
            "gateway.networking.k8s.io",
            "httproutes",
            "list watch create patch",
        ),
        (
            "gateway.networking.k8s.io",
            "grpcroutes",
            "list watch create patch",
        ),
    ];
    let mut out: Vec<_> = base
        .iter()
        .chain(extra)
        .map(|(g, r, v)| {
            (
                g.to_string(),
                r.to_string(),
                v.split(' ').map(String::from).collect(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn rbac_grants_what_the_controller_does_and_nothing_more() {
    let objects = rendered(&[]);
    let cluster_roles = of_kind(&objects, "ClusterRole");
    let own = cluster_roles
        .iter()
        .find(|r| r["metadata"]["name"] == "serin")
        .expect("the controller's ClusterRole");
    assert_eq!(rules_of(own), golden(&[]));
    for role in of_kind(&objects, "ClusterRole")
        .into_iter()
        .chain(of_kind(&objects, "Role"))
        .filter(|r| !r["metadata"]["name"].as_str().unwrap().ends_with("-edit"))
    {
        let text = role["rules"].to_string();
        for verb in [
            "\"delete\"",
            "\"deletecollection\"",
            "\"*\"",
            "\"escalate\"",
            "\"bind\"",
        ] {
            assert!(!text.contains(verb), "{verb} in {role}");
        }
    }
    let lease = of_kind(&objects, "Role")
        .into_iter()
        .find(|r| r["metadata"]["name"] == "serin-leader-election")
        .expect("the Lease's Role");
    assert_eq!(lease["metadata"]["namespace"], "serin-system");
    assert_eq!(
        lease["rules"],
        json!([{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
               {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["serin-leader"], "verbs": ["get", "update"]}])
    );
    // The aggregated roles: view reads, edit writes Canaries; neither is bound to anyone by the chart.
    let view = cluster_roles
        .iter()
        .find(|r| r["metadata"]["name"] == "serin-view")
        .unwrap();
    assert_eq!(
        view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"],
        "true"
    );
    assert_eq!(view["rules"][0]["verbs"], json!(["get", "list", "watch"]));
    let bindings = of_kind(&objects, "ClusterRoleBinding");
    assert_eq!(bindings.len(), 1);
    assert_eq!(bindings[0]["roleRef"]["name"], "serin");

    // The default provider's group is granted whatever its toggle says: without it every Canary waits.
    let istio = rendered(&["--set", "meshProvider=istio"]);
    let own_istio = of_kind(&istio, "ClusterRole")
        .into_iter()
        .find(|r| r["metadata"]["name"] == "serin")
        .unwrap()
        .clone();
    assert_eq!(
        rules_of(&own_istio),
        golden(&[
            (
                "networking.istio.io",
                "virtualservices",
                "list watch create patch"
            ),
            (
                "networking.istio.io",
                "destinationrules",
                "list watch create patch"
            ),
        ])
    );
    // view reads Serin's events (events.k8s.io, which the built-in view role leaves out).
    assert_eq!(
        view["rules"][1],
        json!({"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["get", "list", "watch"]})
    );

    // Each provider's group only when asked for.
    let all = rendered(&[
        "-f",
        chart_dir()
            .join("ci/providers-values.yaml")
            .to_str()
            .unwrap(),
    ]);
    let own = of_kind(&all, "ClusterRole")
        .into_iter()
        .find(|r| r["metadata"]["name"] == "serin")
        .unwrap()
        .clone();
    let write = "list watch create patch";
    assert_eq!(
        rules_of(&own),
        golden(&[
            ("keda.sh", "scaledobjects", write),
            ("networking.istio.io", "virtualservices", write),
            ("networking.istio.io", "destinationrules", write),
            ("split.smi-spec.io", "trafficsplits", write),
            ("networking.k8s.io", "ingresses", write),
            ("projectcontour.io", "httpproxies", write),
            ("traefik.io", "traefikservices", write),
            (
                "kustomize.toolkit.fluxcd.io",
                "kustomizations",
                "get list watch"
            ),
            ("source.toolkit.fluxcd.io", "gitrepositories", "get patch"),
            ("argoproj.io", "applications", "get list watch patch"),
        ])
    );
    // The write-back's defaults reach the controller's flags.
    let flags = args(&all);
    for flag in [
        "--write-back-default=on",
        "--write-back-author-name=release-bot",
        "--write-back-author-email=release-bot@example.com",
        "--no-cross-namespace-refs",
    ] {
        assert!(flags.iter().any(|a| a == flag), "{flag} in {flags:?}");
    }
}

#[test]
fn namespaced_mode_renders_roles_of_that_namespace_only() {
    let objects = rendered(&["--set", "namespace=apps"]);
    assert!(args(&objects).contains(&"--namespace=apps".to_string()));
    assert!(of_kind(&objects, "ClusterRoleBinding").is_empty());
    let cluster_roles: Vec<_> = of_kind(&objects, "ClusterRole")
        .iter()
        .map(|r| r["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        cluster_roles,
        ["serin-view", "serin-edit"],
        "only the aggregated, unbound ones"
    );
    let role = of_kind(&objects, "Role")
        .into_iter()
        .find(|r| r["metadata"]["name"] == "serin")
        .expect("the controller's Role");
    assert_eq!(role["metadata"]["namespace"], "apps");
    assert_eq!(rules_of(role), golden(&[]));
    let binding = of_kind(&objects, "RoleBinding")
        .into_iter()
        .find(|r| r["metadata"]["name"] == "serin")
        .unwrap();
    assert_eq!(binding["metadata"]["namespace"], "apps");
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "serin", "namespace": "serin-system"}])
    );
}

#[test]
fn the_pods_pass_pod_security_restricted_and_probe_health_and_readiness() {
    let objects = rendered(&[]);
    let d = deployment(&objects);
    assert_eq!(d["spec"]["replicas"], 2);
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let c = container(&objects);
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["ports"][0]["containerPort"], 8080);
    let env = c["env"].to_string();
    assert!(
        env.contains("POD_NAME") && env.contains("POD_NAMESPACE"),
        "each replica's identity and the Lease's namespace: {env}"
    );
    // Flagger's default pod annotations inject a mesh's sidecar into the controller.
    let annotations = d["spec"]["template"]["metadata"]["annotations"].to_string();
    assert!(!annotations.contains("inject"), "{annotations}");
    let pdb = of_kind(&objects, "PodDisruptionBudget");
    assert_eq!(pdb.len(), 1);
    assert_eq!(pdb[0]["spec"]["minAvailable"], 1);
    let a = args(&objects);
    for want in [
        "run",
        "--provider=gatewayapi",
        "--leader-elect=true",
        "--metrics-server=http://prometheus:9090",
    ] {
        assert!(a.contains(&want.to_string()), "{want} in {a:?}");
    }

    // Without leader election: one replica, never two at once, no budget to keep.
    let single = rendered(&["--set", "leaderElection.enabled=false,provider=istio"]);
    let d = deployment(&single);
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(d["spec"]["strategy"]["type"], "Recreate");
    assert!(of_kind(&single, "PodDisruptionBudget").is_empty());
    assert!(
        of_kind(&single, "Role").is_empty(),
        "no Lease, no Role for it"
    );
    let a = args(&single);
    assert!(
        a.contains(&"--leader-elect=false".to_string())
            && a.contains(&"--provider=istio".to_string()),
        "{a:?}"
    );

    // Sharding: three replicas, all acting, each with a Lease of its own in the release namespace.
    let sharded = rendered(&["--set", "sharding.enabled=true"]);
    let d = deployment(&sharded);
    assert_eq!(d["spec"]["replicas"], 3);
    assert!(
        d["spec"]["strategy"].is_null(),
        "rolling updates: members come and go"
    );
    let a = args(&sharded);
    assert!(a.contains(&"--sharding".to_string()), "{a:?}");
    assert!(!a.iter().any(|x| x.starts_with("--leader-elect")), "{a:?}");
    let roles = of_kind(&sharded, "Role");
    assert_eq!(roles.len(), 1, "{roles:#?}");
    assert_eq!(roles[0]["metadata"]["namespace"], "serin-system");
    assert_eq!(
        roles[0]["rules"],
        json!([{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
            "verbs": ["create", "get", "list", "update", "delete"]}])
    );
    assert_eq!(of_kind(&sharded, "PodDisruptionBudget").len(), 1);
}

#[test]
fn monitors_land_in_their_namespaces_and_keep_the_canarys_labels() {
    let objects = rendered(&[
        "-f",
        chart_dir()
            .join("ci/monitoring-values.yaml")
            .to_str()
            .unwrap(),
    ]);
    let sm = of_kind(&objects, "ServiceMonitor");
    assert_eq!(sm.len(), 1);
    // Flagger's chart ignores serviceMonitor.namespace.
    assert_eq!(sm[0]["metadata"]["namespace"], "monitoring");
    assert_eq!(sm[0]["spec"]["endpoints"][0]["honorLabels"], true);
    assert_eq!(
        sm[0]["spec"]["namespaceSelector"]["matchNames"],
        json!(["serin-system"])
    );
    assert_eq!(of_kind(&objects, "Service").len(), 1);
    let pm = of_kind(&objects, "PodMonitor");
    assert_eq!(pm[0]["metadata"]["namespace"], "serin-system");
    let rule = of_kind(&objects, "PrometheusRule");
    assert_eq!(rule.len(), 1);
    let stuck = rule[0]["spec"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["alert"] == "SerinCanaryStuck")
        .unwrap();
    assert_eq!(stuck["for"], "2h");
}

/// The chart's alerts, as the PrometheusRule carries them, through `promtool check rules` and the unit
/// tests of tests/fixtures/chart/alerts-test.yaml (synthetic series: each alert fires when it should and
/// not before).
#[test]
fn the_alerts_pass_promtool() {
    let objects = rendered(&[
        "--set",
        "prometheusRule.enabled=true,prometheusRule.stuckFor=1h",
    ]);
    let rule = of_kind(&objects, "PrometheusRule")[0];
    let dir = std::env::temp_dir().join(format!("serin-alerts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rules = serde_json::to_string(&rule["spec"]).unwrap();
    // JSON is YAML.
    std::fs::write(dir.join("alerts.yaml"), rules).unwrap();
    std::fs::copy(
        serin_e2e::repo_dir().join("tests/fixtures/chart/alerts-test.yaml"),
        dir.join("alerts-test.yaml"),
    )
    .unwrap();
    for args in [
        ["check", "rules", "alerts.yaml"],
        ["test", "rules", "alerts-test.yaml"],
    ] {
        let out = std::process::Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("promtool (Debian's prometheus package, e2e/cluster/install-deps)");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
