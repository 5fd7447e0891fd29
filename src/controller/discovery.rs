//! Which optional kinds the cluster serves: a mesh's routing objects, Gateway API's, KEDA's ScaledObjects.
//! Serin watches a kind only where it is served; a Canary that needs one that isn't waits, naming it.

use kube::Client;
use kube::api::ApiResource;
use tracing::warn;

/// True when the API server lists `ar` in its group version. Only a clear answer that it doesn't (404 for
/// the group version, or a list without the resource) says no: on any other error the kind is watched
/// anyway, and the watch retries as it always does.
pub async fn served(client: &Client, ar: &ApiResource) -> bool {
    let listed = if ar.group.is_empty() {
        client.list_core_api_resources(&ar.version).await
    } else {
        client.list_api_group_resources(&ar.api_version).await
    };
    match listed {
        Ok(list) => list.resources.iter().any(|r| r.name == ar.plural),
        // A group version no one serves answers a plain-text 404, which kube reads as a Status with that
        // code and no NotFound reason: the code decides.
        Err(kube::Error::Api(status)) if status.code == 404 || status.is_not_found() => false,
        Err(e) => {
            warn!(kind = %ar.kind, api_version = %ar.api_version, error = %e, "discovery failed; watching it anyway");
            true
        }
    }
}
