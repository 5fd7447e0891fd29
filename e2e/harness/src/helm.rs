//! The chart's tests: helm (built once into the cache by e2e/cluster/build-tools), the chart rendered to
//! objects, and a kubeconfig holding a ServiceAccount's token, to run Serin with exactly the chart's RBAC.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::Value;

use crate::repo_dir;

/// The chart's directory.
pub fn chart_dir() -> PathBuf {
    repo_dir().join("charts/serin")
}

/// helm's path: builds it from the Go module proxy the first time (about 2 minutes), then reuses it.
pub fn helm_bin() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        let script = repo_dir().join("e2e/cluster/build-tools");
        let out = std::process::Command::new(&script)
            .stderr(std::process::Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
        assert!(out.status.success(), "{} failed", script.display());
        let path = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .map(PathBuf::from)
            .expect("build-tools prints helm's path");
        assert!(path.is_file(), "{} is not helm", path.display());
        path
    })
}

/// Runs helm with `args` (against the cluster of `kubeconfig`, if given).
pub fn helm(args: &[&str], kubeconfig: Option<&str>) -> Output {
    let mut cmd = std::process::Command::new(helm_bin());
    cmd.args(args).stdin(std::process::Stdio::null());
    // A private helm home: no user repositories, plugins or cache leak in, and nothing is left behind.
    let home = std::env::temp_dir().join("serin-helm-home");
    cmd.env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"));
    match kubeconfig {
        Some(k) => cmd.env("KUBECONFIG", k),
        None => cmd.env_remove("KUBECONFIG"),
    };
    cmd.output()
        .unwrap_or_else(|e| panic!("running helm {args:?}: {e}"))
}

/// helm's combined output, for assertions and failure messages.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `helm template` of the chart with `--set`/`-f` style `args`, as JSON objects (Err: helm's message).
pub fn render(args: &[&str]) -> Result<Vec<Value>, String> {
    let chart = chart_dir();
    let mut all = vec!["template", "serin", chart.to_str().expect("a UTF-8 path")];
    all.extend(["--namespace", "serin-system"]);
    all.extend(args);
    let out = helm(&all, None);
    if !out.status.success() {
        return Err(output_text(&out));
    }
    let text = String::from_utf8(out.stdout).expect("helm prints UTF-8");
    Ok(split_documents(&text)
        .into_iter()
        .filter_map(|doc| serde_json::from_str::<Value>(&yaml_to_json(doc)).ok())
        .filter(|v| !v.is_null())
        .collect())
}

/// The YAML documents of a stream (helm separates them with `---` lines).
fn split_documents(text: &str) -> Vec<&str> {
    let mut docs = Vec::new();
    let mut start = 0;
    for (at, _) in text.match_indices("\n---") {
        docs.push(&text[start..at]);
        start = at + 4;
    }
    docs.push(&text[start..]);
    docs.into_iter().filter(|d| !d.trim().is_empty()).collect()
}

fn yaml_to_json(doc: &str) -> String {
    let value: Value = serde_saphyr::from_str(doc)
        .unwrap_or_else(|e| panic!("helm rendered YAML that does not parse ({e}):\n{doc}"));
    value.to_string()
}

/// The rendered objects of `kind`.
pub fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// A kubeconfig for the local cluster that authenticates as ServiceAccount `sa` of `namespace`, with a
/// token from the TokenRequest API (an hour long), written to `path`.
pub async fn service_account_kubeconfig(
    admin: &Client,
    namespace: &str,
    sa: &str,
    path: &Path,
) -> PathBuf {
    let api: Api<ServiceAccount> = Api::namespaced(admin.clone(), namespace);
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: None,
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let token: TokenRequest = api
        .create_subresource("token", sa, &PostParams::default(), &request)
        .await
        .unwrap_or_else(|e| panic!("a token for {namespace}/{sa}: {e}"));
    let token = token
        .status
        .and_then(|s| s.token)
        .expect("the TokenRequest's token");
    let env = crate::cluster().await;
    let admin_config = std::fs::read_to_string(env.kubeconfig()).expect("the cluster's kubeconfig");
    let field = |key: &str| {
        admin_config
            .lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .map(str::trim)
            .unwrap_or_else(|| panic!("{key} in the cluster's kubeconfig"))
            .to_string()
    };
    let (server, ca) = (field("server:"), field("certificate-authority:"));
    let config = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: {sa}\n  user:\n    token: {token}\ncontexts:\n- name: {sa}\n  context: {{cluster: local, user: {sa}, namespace: {namespace}}}\ncurrent-context: {sa}\n"
    );
    // The token is a credential: readable by this user only.
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    file.write_all(config.as_bytes())
        .expect("writing the kubeconfig");
    path.to_path_buf()
}
