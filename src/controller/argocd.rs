//! Where an Argo CD-applied target comes from: Argo CD 3.x tracks what it applies with the annotation
//! `argocd.argoproj.io/tracking-id: <app>:<group>/<kind>:<namespace>/<name>`, whose Application names the
//! repository (`spec.source.repoURL`, `path`, `targetRevision`); the Application's `status.sync.revision`
//! says when a commit is live, and `argocd.argoproj.io/refresh` asks for a refresh. Small typed views of
//! just those fields.

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use serde::Deserialize;

use super::gitsource::{Source, SourceError, auth_of, normalize, spec_of};
use crate::api::write_back::WriteBack;
use crate::writeback::git::{Auth, Remote};

pub const TRACKING_ID_ANNOTATION: &str = "argocd.argoproj.io/tracking-id";
const REFRESH_ANNOTATION: &str = "argocd.argoproj.io/refresh";
/// Where Argo CD keeps its Applications unless apps in any namespace are on (`<namespace>_<app>` then).
pub const DEFAULT_NAMESPACE: &str = "argocd";

pub fn applications() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "argoproj.io",
        "v1alpha1",
        "Application",
    ))
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ApplicationSpec {
    source: Option<AppSource>,
    #[serde(default)]
    sources: Vec<AppSource>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(rename_all = "camelCase")]
struct AppSource {
    #[serde(rename = "repoURL")]
    repo_url: String,
    path: Option<String>,
    target_revision: Option<String>,
}

/// The Application (namespace, name) a tracking id names.
pub fn application_of(tracking_id: &str) -> Option<(String, String)> {
    let (app, _) = tracking_id.split_once(':')?;
    if app.is_empty() {
        return None;
    }
    Some(match app.split_once('_') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() => {
            (ns.to_string(), name.to_string())
        }
        _ => (DEFAULT_NAMESPACE.to_string(), app.to_string()),
    })
}

/// A branch to write to from an Application's targetRevision: a branch name as it is; HEAD, empty, a tag
/// that looks like a version, or a commit id say nothing (the writeBack's branch, else main).
fn branch_of(target_revision: Option<&str>) -> Option<String> {
    let r = target_revision?.trim();
    let commit = r.len() >= 7 && r.len() <= 40 && r.bytes().all(|b| b.is_ascii_hexdigit());
    let version = r.trim_start_matches('v').split('.').count() >= 2
        && r.trim_start_matches('v')
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit());
    (!(r.is_empty() || r == "HEAD" || commit || version || r.contains('*')))
        .then(|| r.trim_start_matches("refs/heads/").to_string())
}

/// The source of a target Argo CD applies. Credentials: spec.writeBack.secretRef (Flux's layout), else an
/// Argo CD repository Secret (label argocd.argoproj.io/secret-type: repository, its `url` the repository's)
/// in the Application's namespace, with `username` and `password`.
pub async fn resolve(
    client: &Client,
    secrets: &Store<Secret>,
    canary_ns: &str,
    spec: &WriteBack,
    app: (String, String),
    cross_namespace: bool,
) -> Result<Source, SourceError> {
    let (ns, name) = &app;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &applications());
    let application = match api.get_opt(name).await {
        Ok(Some(a)) => a,
        Ok(None) => {
            return Err(SourceError::NoSource(format!(
                "the target's Argo CD Application {ns}/{name} (its {TRACKING_ID_ANNOTATION}) does not exist"
            )));
        }
        Err(e) => {
            return Err(SourceError::Api(format!(
                "reading Application {ns}/{name}: {e}"
            )));
        }
    };
    let app_spec: ApplicationSpec = spec_of(&application);
    let with_path: Vec<AppSource> = app_spec
        .source
        .into_iter()
        .chain(app_spec.sources)
        .filter(|s| s.path.is_some())
        .collect();
    let source = match with_path.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(SourceError::NoSource(format!(
                "Application {ns}/{name} has no git source with a path (a Helm chart repository?): set spec.writeBack.url and path"
            )));
        }
        _ => {
            return Err(SourceError::NoSource(format!(
                "Application {ns}/{name} has several git sources: set spec.writeBack.url and path"
            )));
        }
    };
    let auth = match &spec.secret_ref {
        Some(r) => {
            let s = secrets
                .get(&kube::runtime::reflector::ObjectRef::new(&r.name).within(canary_ns))
                .ok_or_else(|| {
                    SourceError::Api(format!(
                        "Secret {canary_ns}/{} (spec.writeBack.secretRef) does not exist",
                        r.name
                    ))
                })?;
            auth_of(&s)
                .map_err(|e| SourceError::NoSource(format!("Secret {canary_ns}/{}: {e}", r.name)))?
        }
        None if ns != canary_ns && !cross_namespace => Auth::None,
        None => repository_secret(secrets, ns, &source.repo_url)?,
    };
    Ok(Source {
        remote: Remote {
            url: source.repo_url.clone(),
            auth,
            ca: None,
        },
        branch: spec
            .branch
            .clone()
            .or_else(|| branch_of(source.target_revision.as_deref()))
            .unwrap_or_else(|| "main".into()),
        path: normalize(
            spec.path
                .as_deref()
                .or(source.path.as_deref())
                .unwrap_or(""),
        ),
        origin: None,
        git_repository: None,
        kustomization: None,
        application: Some(app),
    })
}

/// Argo CD's repository Secret for `url`, as credentials.
fn repository_secret(secrets: &Store<Secret>, ns: &str, url: &str) -> Result<Auth, SourceError> {
    let text = |s: &Secret, key: &str| {
        s.data
            .as_ref()
            .and_then(|d| d.get(key))
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
    };
    let found = secrets.state().into_iter().find(|s| {
        s.namespace().as_deref() == Some(ns)
            && s.labels()
                .get("argocd.argoproj.io/secret-type")
                .map(String::as_str)
                == Some("repository")
            && text(s, "url").is_some_and(|u| u.trim_end_matches('/') == url.trim_end_matches('/'))
    });
    let Some(secret) = found else {
        return Ok(Auth::None);
    };
    match (text(&secret, "username"), text(&secret, "password")) {
        (Some(username), Some(password)) => Ok(Auth::Basic {
            username,
            password: secrecy::SecretString::from(password),
        }),
        _ => Err(SourceError::NoSource(format!(
            "Argo CD's repository Secret {ns}/{} has no username and password (SSH keys need known_hosts: set spec.writeBack.secretRef to a Secret in Flux's layout)",
            secret.name_any()
        ))),
    }
}

/// Asks Argo CD to refresh the Application now.
pub async fn request_refresh(client: &Client, ns: &str, name: &str) -> Result<(), kube::Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &applications());
    let patch = serde_json::json!({"metadata": {"annotations": {REFRESH_ANNOTATION: "normal"}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
}

/// Watches the Application until it is synced at `commit` (status.sync.revision, or one of revisions).
pub async fn wait_synced(client: &Client, ns: &str, name: &str, commit: &str) -> String {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &applications());
    let mut stream = std::pin::pin!(super::convergence::watch_one(api, name));
    while let Some(app) = stream.next().await {
        let sync = app.data.pointer("/status/sync");
        let revision = sync
            .and_then(|s| s.get("revision"))
            .and_then(|v| v.as_str());
        let revisions = sync
            .and_then(|s| s.get("revisions"))
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>())
            .unwrap_or_default();
        if revision == Some(commit) || revisions.contains(&commit) {
            return format!(
                "synced at {} by Application {ns}/{name}",
                crate::api::write_back::short(commit)
            );
        }
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracking_ids_and_revisions() {
        assert_eq!(
            application_of("podinfo:apps/Deployment:shop/podinfo"),
            Some(("argocd".into(), "podinfo".into()))
        );
        assert_eq!(
            application_of("team-a_podinfo:apps/Deployment:shop/podinfo"),
            Some(("team-a".into(), "podinfo".into()))
        );
        assert_eq!(application_of(":apps/Deployment:shop/podinfo"), None);
        assert_eq!(branch_of(Some("main")), Some("main".into()));
        assert_eq!(
            branch_of(Some("refs/heads/release")),
            Some("release".into())
        );
        for none in ["HEAD", "", "v1.2.3", "1.4", "4964e59a1b2c", "1.*"] {
            assert_eq!(branch_of(Some(none)), None, "{none}");
        }
    }
}
