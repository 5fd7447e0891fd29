//! Workloads: the target a Canary runs new revisions of, and the primary Serin keeps beside it.

pub mod configs;
pub mod primary;
pub mod readiness;
pub mod revision;

/// The annotation on objects Serin made that records the revision they were made from.
pub const REVISION_ANNOTATION: &str = "serin.dev/revision";
/// Serin's names for what it makes from a target: `<name>-primary`.
pub const PRIMARY_SUFFIX: &str = "-primary";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WorkloadError {
    #[error(
        "Deployment {namespace}/{name}: spec.selector.matchExpressions is not supported; select pods with matchLabels"
    )]
    SelectorExpressions { namespace: String, name: String },
    #[error("Deployment {namespace}/{name}: spec.selector.matchLabels is empty")]
    NoSelector { namespace: String, name: String },
    #[error("Deployment {namespace}/{name} has no pod template")]
    NoTemplate { namespace: String, name: String },
}
