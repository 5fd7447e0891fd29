//! Where a Canary's target comes from in git: the target's Flux labels name its Kustomization (path,
//! source), which names a GitRepository (url, branch, Secret); or spec.writeBack says it. And when the
//! GitOps tool has applied a commit: controller/convergence.rs. Small typed views of Flux's objects, just the
//! fields read.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::reflector::{ObjectRef, Store};
use secrecy::SecretString;
use serde::Deserialize;

use crate::api::write_back::WriteBack;
use crate::writeback::git::{Auth, Remote};

pub const KUSTOMIZATION_NAME_LABEL: &str = "kustomize.toolkit.fluxcd.io/name";
pub const KUSTOMIZATION_NAMESPACE_LABEL: &str = "kustomize.toolkit.fluxcd.io/namespace";
/// kustomize's origin annotation (a Kustomization with `buildMetadata: [originAnnotations]`).
pub const ORIGIN_ANNOTATION: &str = "config.kubernetes.io/origin";

pub fn kustomizations() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "kustomize.toolkit.fluxcd.io",
        "v1",
        "Kustomization",
    ))
}

pub fn git_repositories() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "source.toolkit.fluxcd.io",
        "v1",
        "GitRepository",
    ))
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct KustomizationSpec {
    #[serde(default)]
    path: Option<String>,
    source_ref: Option<FluxRef>,
    #[serde(default)]
    pub(super) suspend: bool,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct FluxRef {
    kind: Option<String>,
    name: String,
    namespace: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct GitRepositorySpec {
    url: String,
    #[serde(default, rename = "ref")]
    reference: Option<GitRef>,
    secret_ref: Option<NameRef>,
}

#[derive(Debug, Deserialize, Default)]
struct GitRef {
    branch: Option<String>,
    tag: Option<String>,
    semver: Option<String>,
    commit: Option<String>,
    name: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
struct NameRef {
    name: String,
}

/// Why the repository could not be found or read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Nothing says where the target comes from: a user must.
    #[error("{0}")]
    NoSource(String),
    /// Reading Flux's objects failed: try again later.
    #[error("{0}")]
    Api(String),
}

/// Where the target comes from.
#[derive(Debug, Clone)]
pub struct Source {
    pub remote: Remote,
    pub branch: String,
    pub path: String,
    /// The target's file (repository-relative), from the origin annotation.
    pub origin: Option<String>,
    /// The GitRepository to ask to fetch (namespace, name).
    pub git_repository: Option<(String, String)>,
    /// The Kustomization that applies the target (namespace, name).
    pub kustomization: Option<(String, String)>,
    /// The Argo CD Application that applies the target (namespace, name).
    pub application: Option<(String, String)>,
}

/// The target as its Kustomization's inventory names it, with its labels and annotations.
pub struct Target<'a> {
    pub kind: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub annotations: &'a BTreeMap<String, String>,
}

/// Resolves the source of a Canary's target.
pub async fn resolve(
    client: &Client,
    secrets: &Store<Secret>,
    canary_ns: &str,
    spec: &WriteBack,
    target: &Target<'_>,
    cross_namespace: bool,
) -> Result<Source, SourceError> {
    let (labels, annotations) = (target.labels, target.annotations);
    let kustomization = match (
        labels.get(KUSTOMIZATION_NAME_LABEL),
        labels.get(KUSTOMIZATION_NAMESPACE_LABEL),
    ) {
        (Some(name), Some(ns)) => Some((ns.clone(), name.clone())),
        _ => None,
    };
    let application = annotations
        .get(super::argocd::TRACKING_ID_ANNOTATION)
        .and_then(|id| super::argocd::application_of(id));
    if kustomization.is_none()
        && spec.url.is_none()
        && spec.source_ref.is_none()
        && let Some(app) = application.clone()
    {
        return super::argocd::resolve(client, secrets, canary_ns, spec, app, cross_namespace)
            .await;
    }
    let mut k_spec = None;
    if let Some((ns, name)) = &kustomization {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &kustomizations());
        match api.get_opt(name).await {
            Ok(Some(k)) => {
                // Labels are anyone's to write who may edit the Deployment: only the Kustomization's own
                // inventory proves it applies the target, and so that its repository's credentials may
                // write the target's manifest.
                if !lists(&k, target) {
                    return Err(SourceError::NoSource(format!(
                        "Kustomization {ns}/{name} (named by the target's {KUSTOMIZATION_NAME_LABEL} label) does not list {} {}/{} in its inventory: Serin writes only where Flux applies the target from",
                        target.kind, target.namespace, target.name
                    )));
                }
                k_spec = Some(spec_of::<KustomizationSpec>(&k));
            }
            Ok(None) if spec.url.is_some() || spec.source_ref.is_some() => {}
            Ok(None) => {
                return Err(SourceError::NoSource(format!(
                    "the target's Kustomization {ns}/{name} (its {KUSTOMIZATION_NAME_LABEL} label) does not exist"
                )));
            }
            Err(e) => {
                return Err(SourceError::Api(format!(
                    "reading Kustomization {ns}/{name}: {e}"
                )));
            }
        }
    }
    let source_ref: Option<(String, String)> = match (&spec.source_ref, &k_spec, &kustomization) {
        (Some(r), _, _) => Some((
            r.namespace.clone().unwrap_or_else(|| canary_ns.to_string()),
            r.name.clone(),
        )),
        (None, Some(k), Some((k_ns, k_name))) if spec.url.is_none() => {
            let Some(r) = &k.source_ref else {
                return Err(SourceError::NoSource(format!(
                    "Kustomization {k_ns}/{k_name} has no spec.sourceRef"
                )));
            };
            if r.kind.as_deref().unwrap_or("GitRepository") != "GitRepository" {
                return Err(SourceError::NoSource(format!(
                    "Kustomization {k_ns}/{k_name} applies from a {}, not a GitRepository: set spec.writeBack.url",
                    r.kind.as_deref().unwrap_or_default()
                )));
            }
            Some((
                r.namespace.clone().unwrap_or_else(|| k_ns.clone()),
                r.name.clone(),
            ))
        }
        _ => None,
    };
    let mut follows_branch = true;
    let (url, branch, secret) = match (&spec.url, &source_ref) {
        (Some(url), _) => (url.clone(), None, None),
        (None, Some((ns, name))) => {
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), ns, &git_repositories());
            let repo = match api.get_opt(name).await {
                Ok(Some(r)) => spec_of::<GitRepositorySpec>(&r),
                Ok(None) => {
                    return Err(SourceError::NoSource(format!(
                        "GitRepository {ns}/{name} does not exist"
                    )));
                }
                Err(e) => {
                    return Err(SourceError::Api(format!(
                        "reading GitRepository {ns}/{name}: {e}"
                    )));
                }
            };
            let secret = repo.secret_ref.map(|s| (ns.clone(), s.name));
            let r = repo.reference.unwrap_or_default();
            let branch = match (r.branch, r.tag.or(r.semver).or(r.commit).or(r.name)) {
                (Some(branch), _) => branch,
                // Flux's default ref is the master branch.
                (None, None) => "master".into(),
                // Flux follows a tag or a commit: no push to a branch is applied.
                (None, Some(pinned)) => {
                    let Some(branch) = &spec.branch else {
                        return Err(SourceError::NoSource(format!(
                            "GitRepository {ns}/{name} follows {pinned}, not a branch: a roll forward has no branch to go to; set writeBack.branch (Flux applies it once the GitRepository follows it)"
                        )));
                    };
                    follows_branch = false;
                    branch.clone()
                }
            };
            (repo.url, Some(branch), secret)
        }
        (None, None) => {
            return Err(SourceError::NoSource(
                "spec.writeBack: the target carries neither Flux's labels (kustomize.toolkit.fluxcd.io/name, /namespace) nor Argo CD's tracking id: set writeBack.url or writeBack.sourceRef".into(),
            ));
        }
    };
    let secret = match &spec.secret_ref {
        Some(r) => Some((canary_ns.to_string(), r.name.clone())),
        // A sourceRef the Canary names itself proves nothing about the target: the credentials of a
        // GitRepository elsewhere are not lent to it.
        None if spec.source_ref.is_some() => match secret {
            Some((ns, name)) if ns != canary_ns => {
                return Err(SourceError::NoSource(format!(
                    "writeBack.sourceRef names GitRepository {}/{} in another namespace: its credentials (Secret {ns}/{name}) are not read for a Canary in {canary_ns}; set writeBack.secretRef to a Secret in {canary_ns}",
                    source_ref.as_ref().map_or("", |r| r.0.as_str()),
                    source_ref.as_ref().map_or("", |r| r.1.as_str()),
                )));
            }
            other => other,
        },
        None => secret,
    };
    if let Some((ns, name)) = &secret
        && ns != canary_ns
        && !cross_namespace
    {
        return Err(SourceError::NoSource(format!(
            "the credentials are in Secret {ns}/{name}, outside the Canary's namespace, and --no-cross-namespace-refs forbids reading them: set spec.writeBack.secretRef to a Secret in {canary_ns}"
        )));
    }
    let auth = match &secret {
        None => Auth::None,
        Some((ns, name)) => {
            let Some(s) = secrets.get(&ObjectRef::new(name).within(ns)) else {
                return Err(SourceError::Api(format!(
                    "Secret {ns}/{name} (the git credentials) does not exist"
                )));
            };
            auth_of(&s).map_err(|e| SourceError::NoSource(format!("Secret {ns}/{name}: {e}")))?
        }
    };
    let ca = secret.as_ref().and_then(|(ns, name)| {
        let s = secrets.get(&ObjectRef::new(name).within(ns))?;
        let data = s.data.as_ref()?.get("ca.crt")?;
        String::from_utf8(data.0.clone()).ok()
    });
    let k_path = k_spec.as_ref().and_then(|k| k.path.clone());
    let path = normalize(spec.path.as_deref().or(k_path.as_deref()).unwrap_or(""));
    // The origin annotation names the file relative to the Kustomization's path.
    let origin = annotations
        .get(ORIGIN_ANNOTATION)
        .and_then(|o| origin_path(o))
        .map(|file| {
            normalize(&format!(
                "{}/{file}",
                normalize(k_path.as_deref().unwrap_or(""))
            ))
        });
    if k_spec.as_ref().is_some_and(|k| k.suspend) {
        tracing::info!(
            "the target's Kustomization is suspended: a roll forward is applied when it resumes"
        );
    }
    let followed = branch.clone();
    let branch = spec
        .branch
        .clone()
        .or(branch)
        .unwrap_or_else(|| "main".into());
    follows_branch &= followed.is_none_or(|f| f == branch);
    Ok(Source {
        remote: Remote { url, auth, ca },
        branch,
        path,
        origin,
        git_repository: source_ref,
        application: if kustomization.is_none() {
            application
        } else {
            None
        },
        // Only a push to the branch the GitRepository follows is ever applied.
        kustomization: kustomization.filter(|_| follows_branch),
    })
}

/// Whether a Kustomization's inventory lists the target (ids `<namespace>_<name>_<group>_<kind>`).
fn lists(kustomization: &DynamicObject, target: &Target<'_>) -> bool {
    let id = format!("{}_{}_apps_{}", target.namespace, target.name, target.kind);
    kustomization
        .data
        .pointer("/status/inventory/entries")
        .and_then(|e| e.as_array())
        .is_some_and(|entries| {
            entries
                .iter()
                .any(|e| e.get("id").and_then(|v| v.as_str()) == Some(id.as_str()))
        })
}

pub(super) fn spec_of<T: for<'de> Deserialize<'de> + Default>(o: &DynamicObject) -> T {
    o.data
        .get("spec")
        .cloned()
        .and_then(|s| serde_json::from_value(s).ok())
        .unwrap_or_default()
}

/// Flux's GitRepository Secret keys.
pub fn auth_of(secret: &Secret) -> Result<Auth, String> {
    let data = secret.data.clone().unwrap_or_default();
    let text = |key: &str| {
        data.get(key)
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
    };
    if let (Some(username), Some(password)) = (text("username"), text("password")) {
        return Ok(Auth::Basic {
            username,
            password: SecretString::from(password),
        });
    }
    if let Some(token) = text("bearerToken") {
        return Ok(Auth::Bearer(SecretString::from(token)));
    }
    if let Some(identity) = text("identity") {
        let Some(known_hosts) = text("known_hosts") else {
            return Err(
                "has identity but no known_hosts: Serin does not trust a host key on first use"
                    .into(),
            );
        };
        return Ok(Auth::Ssh {
            identity: SecretString::from(identity),
            known_hosts,
        });
    }
    if data.contains_key("ca.crt") {
        return Ok(Auth::None);
    }
    Err(format!(
        "none of Flux's keys (username and password, bearerToken, identity and known_hosts); has: {}",
        data.keys().cloned().collect::<Vec<_>>().join(", ")
    ))
}

/// The `path:` of kustomize's origin annotation.
fn origin_path(annotation: &str) -> Option<String> {
    annotation.lines().find_map(|l| {
        let v = l.trim().strip_prefix("path:")?.trim();
        (!v.is_empty()).then(|| v.trim_matches(['"', '\'']).to_string())
    })
}

/// A repository path without `./`, `..` resolved, no leading or trailing slash ("" is the root).
pub fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_origins() {
        assert_eq!(normalize("./apps/podinfo/"), "apps/podinfo");
        assert_eq!(normalize("apps/podinfo/../base/d.yaml"), "apps/base/d.yaml");
        assert_eq!(normalize("./"), "");
        assert_eq!(
            origin_path("path: deployment.yaml\n"),
            Some("deployment.yaml".into())
        );
        assert_eq!(
            origin_path("configuredIn: kustomization.yaml\npath: ../base/d.yaml\n"),
            Some("../base/d.yaml".into())
        );
    }

    #[test]
    fn only_the_kustomizations_inventory_vouches_for_a_target() {
        let k: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
            "metadata": {"name": "payments", "namespace": "flux-system"},
            "status": {"inventory": {"entries": [
                {"id": "payments_api_apps_Deployment", "v": "v1"},
                {"id": "payments_api__Service", "v": "v1"}]}}
        }))
        .unwrap();
        let empty = BTreeMap::new();
        let target = |ns, name| Target {
            kind: "Deployment",
            namespace: ns,
            name,
            labels: &empty,
            annotations: &empty,
        };
        assert!(lists(&k, &target("payments", "api")));
        // A tenant's Deployment carrying the same labels is not in it.
        assert!(!lists(&k, &target("team-a", "api")));
        assert!(!lists(&k, &target("payments", "worker")));
    }

    #[test]
    fn secrets_in_fluxs_layout() {
        use k8s_openapi::ByteString;
        let secret = |pairs: &[(&str, &str)]| Secret {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        };
        assert!(matches!(
            auth_of(&secret(&[("username", "u"), ("password", "p")])),
            Ok(Auth::Basic { .. })
        ));
        assert!(matches!(
            auth_of(&secret(&[("bearerToken", "t")])),
            Ok(Auth::Bearer(_))
        ));
        let err = auth_of(&secret(&[("identity", "k")])).unwrap_err();
        assert!(err.contains("known_hosts"), "{err}");
        let err = auth_of(&secret(&[("token", "s3cr3t-value")])).unwrap_err();
        assert!(
            err.contains("has: token") && !err.contains("s3cr3t"),
            "{err}"
        );
    }
}
