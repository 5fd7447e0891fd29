//! Which of a target's labels and annotations its primary (and the primary's configs) carry.
//!
//! As Flagger: labels and annotations whose key starts with one of `--include-label-prefix` (`*`: all;
//! default: none), never one of Flux's (`*toolkit.fluxcd.io*`). A GitOps tool that tracks its objects by
//! label (Argo CD's `app.kubernetes.io/instance`) would otherwise take the primary, which is not in git, as
//! its own and prune it. Keys the API server or kubectl write for the object itself are never copied.

use std::collections::BTreeMap;

/// Keys that mark an object as Flux's; never copied to what Serin makes.
const FLUX_MARKER: &str = "toolkit.fluxcd.io";
/// Keys written about the object itself, meaningless on a copy.
const OWN_KEYS: [&str; 2] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
];

/// The `--include-label-prefix` setting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IncludePrefixes(Vec<String>);

impl IncludePrefixes {
    /// From the flag's comma-separated list; blanks are dropped.
    pub fn parse(list: &str) -> Self {
        Self(
            list.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(String::from)
                .collect(),
        )
    }

    pub fn all() -> Self {
        Self(vec!["*".into()])
    }

    fn includes(&self, key: &str) -> bool {
        self.0
            .iter()
            .any(|p| p == "*" || key.starts_with(p.as_str()))
    }

    /// The entries of a target's labels or annotations its copies carry.
    pub fn copied(&self, from: Option<&BTreeMap<String, String>>) -> BTreeMap<String, String> {
        from.into_iter()
            .flatten()
            .filter(|(k, _)| copyable(k) && self.includes(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

fn copyable(key: &str) -> bool {
    !key.contains(FLUX_MARKER) && !OWN_KEYS.contains(&key)
}

/// A pod template's labels or annotations on the primary's pods: all of them but Flux's.
pub fn pod_metadata(from: Option<&BTreeMap<String, String>>) -> BTreeMap<String, String> {
    from.into_iter()
        .flatten()
        .filter(|(k, _)| !k.contains(FLUX_MARKER))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> BTreeMap<String, String> {
        [
            ("app", "podinfo"),
            ("team", "web"),
            ("app.kubernetes.io/instance", "shop"),
            ("kustomize.toolkit.fluxcd.io/name", "apps"),
            ("kubectl.kubernetes.io/last-applied-configuration", "{}"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn by_default_nothing_is_copied_as_in_flagger() {
        assert!(
            IncludePrefixes::parse("")
                .copied(Some(&labels()))
                .is_empty()
        );
    }

    #[test]
    fn prefixes_pick_keys_and_flux_or_own_keys_never_come_along() {
        let some = IncludePrefixes::parse("team, app.kubernetes.io/");
        assert_eq!(
            some.copied(Some(&labels())).keys().collect::<Vec<_>>(),
            ["app.kubernetes.io/instance", "team"]
        );
        assert_eq!(
            IncludePrefixes::all()
                .copied(Some(&labels()))
                .keys()
                .collect::<Vec<_>>(),
            ["app", "app.kubernetes.io/instance", "team"]
        );
        assert!(!pod_metadata(Some(&labels())).contains_key("kustomize.toolkit.fluxcd.io/name"));
        assert!(pod_metadata(Some(&labels())).contains_key("team"));
    }
}
