//! Leader election on a coordination.k8s.io Lease, so two or more replicas can run and only one acts, with
//! client-go's rules (no crate for kube 5 has them: kube-lease-manager keeps signalling leadership while it
//! can't renew, and judges expiry by comparing another replica's renewTime with the local wall clock):
//!
//! - Another holder's lease has expired when it has not changed for leaseDurationSeconds as measured by
//!   this replica's monotonic clock since it last saw it change: clocks of different machines are never
//!   compared.
//! - The leader must renew within the renew deadline, shorter than the lease: past it, its [`Fence`] closes
//!   at once and the API client refuses every write but the Lease's, before any standby may take over.
//! - Taking or renewing is a replace carrying the resourceVersion read: of two replicas racing, one wins.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::time::Instant;
use tracing::{info, warn};

/// The timings of an election, as client-go's defaults.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// How long a lease lasts without renewal before a standby may take it.
    pub lease_duration: Duration,
    /// How long the leader may go without a successful renewal before it stops acting.
    pub renew_deadline: Duration,
    /// How often to try to take or renew the lease.
    pub retry_period: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Whether this replica may write: open until the renew deadline of its last renewal, judged by the
/// monotonic clock at the moment of each write (a process resumed after being frozen finds it closed).
#[derive(Debug, Default)]
pub struct Fence {
    open_until: Mutex<Option<Instant>>,
}

impl Fence {
    /// A fence that is always open: leader election is off.
    pub fn open() -> Arc<Self> {
        Arc::new(Fence {
            open_until: Mutex::new(Some(
                Instant::now() + Duration::from_secs(100 * 365 * 86_400),
            )),
        })
    }

    pub fn is_open(&self) -> bool {
        self.lock().is_some_and(|until| Instant::now() < until)
    }

    pub(super) fn open_until(&self, until: Instant) {
        *self.lock() = Some(until);
    }

    pub(super) fn close(&self) {
        *self.lock() = None;
    }

    pub(super) fn until(&self) -> Option<Instant> {
        *self.lock()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.open_until.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The lease as last seen, and when (monotonic) it was last seen to change.
#[derive(Debug, Clone)]
struct Seen {
    record: LeaseSpec,
    changed_at: Instant,
}

pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timings: Timings,
    seen: Mutex<Option<Seen>>,
    fence: Arc<Fence>,
}

impl LeaderElector {
    /// `client` should time out fast (a few seconds): a renewal that hangs must not outlast the deadline.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timings: Timings,
        fence: Arc<Fence>,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            timings,
            seen: Mutex::new(None),
            fence,
        }
    }

    /// Returns once this replica holds the Lease (its fence then open).
    pub async fn acquire(&self) {
        let mut waiting_logged = false;
        loop {
            let attempt = Instant::now();
            match self.try_take(attempt).await {
                Ok(true) => {
                    self.fence.open_until(attempt + self.timings.renew_deadline);
                    info!(lease = %self.name, identity = %self.identity, "became leader");
                    return;
                }
                Ok(false) if !waiting_logged => {
                    info!(lease = %self.name, "another replica leads; standing by");
                    waiting_logged = true;
                }
                Ok(false) => {}
                Err(e) => warn!(lease = %self.name, error = %e, "leader election"),
            }
            tokio::time::sleep(self.timings.retry_period).await;
        }
    }

    /// Renews the Lease; returns when leadership is lost: another replica holds it, or no renewal
    /// succeeded within the renew deadline. The fence is closed by then.
    pub async fn hold(&self) {
        loop {
            tokio::time::sleep(self.timings.retry_period).await;
            // Frozen past the deadline (SIGSTOP, a stalled VM): stop before even trying.
            if !self.fence.is_open() {
                break;
            }
            let attempt = Instant::now();
            let until = self.fence.until().unwrap_or(attempt);
            let tried = tokio::time::timeout(
                until.saturating_duration_since(attempt),
                self.try_take(attempt),
            )
            .await;
            match tried {
                Ok(Ok(true)) => self.fence.open_until(attempt + self.timings.renew_deadline),
                Ok(Ok(false)) => {
                    warn!(lease = %self.name, "another replica took the lease");
                    break;
                }
                Ok(Err(e)) => warn!(lease = %self.name, error = %e, "renewing the lease"),
                Err(_) => warn!(lease = %self.name, "renewing the lease timed out"),
            }
            if !self.fence.is_open() {
                warn!(lease = %self.name, deadline = ?self.timings.renew_deadline, "no renewal within the renew deadline");
                break;
            }
        }
        self.fence.close();
    }

    /// Gives the Lease up (on shutdown) so a standby takes over at once rather than after it expires.
    pub async fn release(&self) {
        self.fence.close();
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => info!(lease = %self.name, "released the lease"),
            Err(e) => warn!(lease = %self.name, error = %e, "releasing the lease"),
        }
    }

    /// Takes or renews the Lease if it is free, expired (by our clock) or ours: true when held after.
    pub(super) async fn try_take_now(&self, now: Instant) -> Result<bool, kube::Error> {
        self.try_take(now).await
    }

    /// Takes or renews the Lease if it is free, expired (by our clock) or ours.
    async fn try_take(&self, now: Instant) -> Result<bool, kube::Error> {
        let wall = MicroTime(Timestamp::now());
        let seconds = i32::try_from(self.timings.lease_duration.as_secs()).unwrap_or(15);
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(wall.clone()),
                    renew_time: Some(wall),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.saw(created.spec.unwrap_or_default(), now);
                    Ok(true)
                }
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let record = lease.spec.clone().unwrap_or_default();
        let changed_at = self.saw(record.clone(), now);
        let holder = record.holder_identity.as_deref().filter(|h| !h.is_empty());
        let ours = holder == Some(self.identity.as_str());
        if let Some(other) = holder
            && !ours
        {
            let lasts = Duration::from_secs(
                u64::try_from(record.lease_duration_seconds.unwrap_or(seconds)).unwrap_or(15),
            );
            if now < changed_at + lasts {
                return Ok(false);
            }
            info!(lease = %self.name, previous = %other, "the lease expired: taking it");
        }
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if !ours {
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            spec.acquire_time = Some(wall.clone());
            spec.holder_identity = Some(self.identity.clone());
        }
        spec.lease_duration_seconds = Some(seconds);
        spec.renew_time = Some(wall);
        // replace carries the resourceVersion read above: of two replicas racing, one gets 409.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => {
                self.saw(written.spec.unwrap_or_default(), now);
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Records the lease as seen at `now`; returns when (monotonic) it was last seen to change.
    fn saw(&self, record: LeaseSpec, now: Instant) -> Instant {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match seen.as_ref() {
            Some(s) if s.record == record => s.changed_at,
            _ => {
                *seen = Some(Seen {
                    record,
                    changed_at: now,
                });
                now
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_fence_closes_at_the_deadline_by_the_monotonic_clock() {
        let fence = Fence::default();
        assert!(!fence.is_open(), "closed until leadership is won");
        fence.open_until(Instant::now() + Duration::from_secs(10));
        assert!(fence.is_open());
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(fence.is_open());
        // A process frozen past its deadline finds the fence closed the moment it runs again.
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!fence.is_open());
        assert!(Fence::open().is_open());
    }

    #[test]
    fn the_renew_deadline_is_shorter_than_the_lease() {
        let t = Timings::default();
        assert!(t.renew_deadline < t.lease_duration);
        assert!(t.retry_period < t.renew_deadline);
    }
}
