//! Canary analysis checks. The controller asks a [`CheckRunner`] for a verdict when the decision core wants
//! evidence; the Prometheus-backed runner arrives with the metrics providers.

use futures::future::BoxFuture;

use crate::api::Canary;
use crate::decision::Checks;

pub trait CheckRunner: Send + Sync {
    /// One round of the Canary's checks.
    fn run<'a>(&'a self, canary: &'a Canary) -> BoxFuture<'a, Checks>;
}

/// The runner for a controller without metrics providers: every round passes. A Canary that lists metrics
/// is told in its Unsupported condition that they are not acted on yet.
pub struct NoChecks;

impl CheckRunner for NoChecks {
    fn run<'a>(&'a self, _: &'a Canary) -> BoxFuture<'a, Checks> {
        Box::pin(async { Checks::Passed })
    }
}
