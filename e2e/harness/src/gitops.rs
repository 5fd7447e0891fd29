//! The write-back tests' world: Flux (source- and kustomize-controller) and a git server on loopback
//! (e2e/cluster/flux), a repository per test holding the app, and Flux's objects applying it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::json;
use tokio::sync::OnceCell;

use crate::{apply, cluster, repo_dir, wait_for};

pub const GOOD: &str = "ghcr.io/stefanprodan/podinfo:6.0.1";
pub const FAULTY: &str = "ghcr.io/stefanprodan/podinfo:6.0.2";
pub const NEWER: &str = "ghcr.io/stefanprodan/podinfo:6.0.3";

/// The app as the team keeps it in git: no replicas (Serin scales it), a comment after the image, and the
/// traffic simulator told that 6.0.2 fails half its requests (the same annotation in every revision, so
/// revisions differ by their image alone, as a CI bump makes them).
pub fn deployment_yaml(image: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: podinfo
spec:
  selector:
    matchLabels:
      app: podinfo
  template:
    metadata:
      labels:
        app: podinfo
      annotations:
        trafficsim.serin.dev/latency-ms: "5"
        trafficsim.serin.dev/error-rate-by-image: "{FAULTY}=0.5,{NEWER}=0.5"
    spec:
      containers:
        - name: podinfod
          image: {image} # the app, bumped by CI
          ports:
            - name: http
              containerPort: 9898
"#
    )
}

pub struct FluxEnv {
    /// http://127.0.0.1:<port>: repositories are <url>/<name>.git.
    pub url: String,
    /// The directory of the bare repositories.
    pub root: PathBuf,
    pub user: String,
    pub password: String,
}

static FLUX: OnceCell<FluxEnv> = OnceCell::const_new();

/// Flux and the git server, started on first use (or found running).
pub async fn flux() -> &'static FluxEnv {
    cluster().await;
    FLUX.get_or_init(|| async {
        let script = repo_dir().join("e2e/cluster/flux");
        let out = tokio::process::Command::new(&script)
            .stderr(std::process::Stdio::inherit())
            .output()
            .await
            .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "e2e/cluster/flux failed:\n{stdout}");
        let get = |key: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .unwrap_or_else(|| panic!("e2e/cluster/flux printed no {key}"))
                .to_string()
        };
        let password = std::fs::read_to_string(get("GIT_PASSWORD_FILE"))
            .expect("the git password")
            .trim()
            .to_string();
        FluxEnv {
            url: get("GIT_URL"),
            root: PathBuf::from(get("GIT_ROOT")),
            user: get("GIT_USER"),
            password,
        }
    })
    .await
}

/// git in `dir`, as a person of the team (no global or system configuration); its output.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "dev")
        .env("GIT_AUTHOR_EMAIL", "dev@example.com")
        .env("GIT_COMMITTER_NAME", "dev")
        .env("GIT_COMMITTER_EMAIL", "dev@example.com")
        .output()
        .expect("running git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A repository on the git server and a work tree of it (pushing straight to the bare repository: the
/// team's side of the story).
pub struct Repo {
    pub name: String,
    /// The bare repository the server serves.
    pub bare: PathBuf,
    pub work: tempfile::TempDir,
    /// Its URL on the git server.
    pub url: String,
}

impl Repo {
    pub async fn create(name: &str) -> Repo {
        let env = flux().await;
        let bare = env.root.join(format!("{name}.git"));
        let _ = std::fs::remove_dir_all(&bare);
        git(
            &env.root,
            &["init", "-q", "--bare", "-b", "main", &format!("{name}.git")],
        );
        let work = tempfile::tempdir().expect("a work tree");
        git(work.path(), &["init", "-q", "-b", "main"]);
        git(
            work.path(),
            &["remote", "add", "origin", bare.to_str().unwrap()],
        );
        Repo {
            name: name.into(),
            url: format!("{}/{name}.git", env.url),
            bare,
            work,
        }
    }

    pub fn write(&self, path: &str, text: &str) {
        let file = self.work.path().join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, text).unwrap();
    }

    /// Commits everything and pushes main; the new commit.
    pub fn commit_and_push(&self, message: &str) -> String {
        let w = self.work.path();
        git(w, &["add", "-A"]);
        git(w, &["commit", "-q", "-m", message]);
        // On top of what the server has (Serin may have pushed), unless there is nothing there yet.
        let has_main = std::process::Command::new("git")
            .args(["rev-parse", "--verify", "-q", "main"])
            .current_dir(&self.bare)
            .output()
            .is_ok_and(|o| o.status.success());
        if has_main {
            git(w, &["pull", "-q", "--rebase", "origin", "main"]);
        }
        git(w, &["push", "-q", "origin", "main"]);
        self.head()
    }

    /// The work tree at the server's main (after someone else pushed, Serin say).
    pub fn sync(&self) {
        git(self.work.path(), &["fetch", "-q", "origin", "main"]);
        git(self.work.path(), &["reset", "-q", "--hard", "origin/main"]);
    }

    /// main on the server.
    pub fn head(&self) -> String {
        git(&self.bare, &["rev-parse", "main"]).trim().to_string()
    }

    /// Runs git against the server's copy.
    pub fn bare_git(&self, args: &[&str]) -> String {
        git(&self.bare, args)
    }

    /// An executable run once by the git server just before it advertises the refs of a push (its test
    /// switch), in the bare repository.
    pub fn before_push(&self, script: &str) {
        let path = self.bare.join("before-push");
        std::fs::write(&path, format!("#!/bin/sh\nset -e\n{script}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// A git hook of the bare repository.
    pub fn hook(&self, name: &str, script: &str) {
        let path = self.bare.join("hooks").join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

pub use serin::controller::gitsource::{git_repositories, kustomizations};

/// A Secret in Flux's GitRepository layout (HTTP basic).
pub async fn git_secret(client: &Client, ns: &str, name: &str, user: &str, password: &str) {
    apply::<Secret>(
        client,
        ns,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "stringData": {"username": user, "password": password}}),
    )
    .await;
}

/// The GitRepository `app` (the repository's main, credentials in Secret `git-credentials`) and the
/// Kustomization `app` applying `path` into `ns` with origin annotations.
pub async fn flux_app(client: &Client, ns: &str, repo: &Repo, path: &str) {
    let env = flux().await;
    git_secret(client, ns, "git-credentials", &env.user, &env.password).await;
    let params = PatchParams::apply("serin-e2e").force();
    let repos: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &git_repositories());
    repos
        .patch("app", &params, &Patch::Apply(json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
            "metadata": {"name": "app"},
            "spec": {"url": repo.url, "interval": "1m", "ref": {"branch": "main"}, "secretRef": {"name": "git-credentials"}}})))
        .await
        .expect("applying the GitRepository");
    let ks: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &kustomizations());
    ks.patch(
        "app",
        &params,
        &Patch::Apply(
            json!({"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
            "metadata": {"name": "app"},
            "spec": {"interval": "1m", "path": path, "prune": false, "targetNamespace": ns,
                "sourceRef": {"kind": "GitRepository", "name": "app"},
                "buildMetadata": ["originAnnotations"]}}),
        ),
    )
    .await
    .expect("applying the Kustomization");
}

/// Asks Flux to fetch now (what a git server's webhook does).
pub async fn request_fetch(client: &Client, ns: &str) {
    let repos: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &git_repositories());
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    repos
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": now}}}),
            ),
        )
        .await
        .expect("annotating the GitRepository");
}

/// The Kustomization's status.lastAppliedRevision.
pub async fn last_applied(client: &Client, ns: &str) -> String {
    let ks: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &kustomizations());
    ks.get("app")
        .await
        .ok()
        .and_then(|k| {
            k.data
                .pointer("/status/lastAppliedRevision")?
                .as_str()
                .map(String::from)
        })
        .unwrap_or_default()
}

/// Waits until Flux has applied `commit`.
pub async fn wait_applied(client: &Client, ns: &str, commit: &str, timeout: Duration) {
    wait_for(
        &format!("Flux to apply {commit}"),
        timeout,
        Duration::from_millis(100),
        || async {
            let applied = last_applied(client, ns).await;
            if applied.contains(commit) {
                Ok(())
            } else {
                Err(applied)
            }
        },
    )
    .await;
}
