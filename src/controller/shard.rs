//! Sharding across replicas (`--sharding`): every replica acts, each on its own share of the Canaries.
//!
//! - Membership is a Lease per replica, `serin-shard-<identity>`, held with the leader election's rules
//!   ([`super::leader`]): renewed every retry period, and this replica's [`Fence`] closes (every write
//!   refused) when no round succeeded within the renew deadline.
//! - Each round also lists the shard Leases. A member is alive until its Lease has not changed for its
//!   duration by this replica's monotonic clock (clocks of different machines are never compared); a
//!   released Lease (no holder) is gone at once. A round that cannot list does not count: this replica's
//!   view of the members is never older than the renew deadline while it may write.
//! - A Canary belongs to the live member with the highest rendezvous hash of (member, namespace/name): a
//!   member that goes or comes moves only its own share.
//! - Never two owners: a replica gives a Canary up the moment it sees the member that now wins it; that
//!   member takes Canaries only once it has been a member for [`JOIN_DELAY`] (longer than the renew deadline
//!   plus a reconcile in flight), unless it saw no other live member when it joined. A dead member's share
//!   moves when its Lease expires, after its fence closed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use super::leader::{Fence, LeaderElector, Timings};

/// The shard Leases' name prefix.
pub const LEASE_PREFIX: &str = "serin-shard-";
/// How long a new member waits before it takes Canaries (unless it was alone): the others see it within
/// the renew deadline or stop writing, and a reconcile they started before has ended.
pub const JOIN_DELAY: Duration = Duration::from_secs(30);
/// A Lease expired for this long is deleted by whichever member sees it: pods come and go by name.
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// A 64-bit FNV-1a hash, finished with SplitMix64's mixer: stable across versions and machines (replicas
/// of two versions during a rolling upgrade must agree), unlike std's hasher.
fn stable_hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The member a Canary belongs to among `members` (rendezvous hashing); None when there are none.
pub fn owner_of<'m>(members: &'m [String], namespace: &str, name: &str) -> Option<&'m str> {
    members
        .iter()
        .max_by_key(|m| (stable_hash(&[m, namespace, name]), m.as_str()))
        .map(String::as_str)
}

/// This replica's view of the members, and whether it may take Canaries yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// The live members' identities, sorted; this replica's among them once it has joined.
    pub members: Vec<String>,
    /// Whether this replica takes its share (it has waited out the join delay, or was alone).
    pub taking: bool,
}

/// A shard Lease as last seen, and when (monotonic) it was seen to change.
struct Seen {
    version: String,
    changed_at: Instant,
    lasts: Duration,
}

pub struct Shards {
    identity: String,
    view: watch::Sender<View>,
}

impl Shards {
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Whether this replica acts on the Canary `namespace/name` now.
    pub fn owns(&self, namespace: &str, name: &str) -> bool {
        let view = self.view.borrow();
        view.taking && owner_of(&view.members, namespace, name) == Some(self.identity.as_str())
    }

    /// Changes of the view (a member came or went, or this replica began taking its share).
    pub fn changes(&self) -> watch::Receiver<View> {
        self.view.subscribe()
    }

    pub fn view(&self) -> View {
        self.view.borrow().clone()
    }
}

/// Holds this replica's shard Lease and keeps the view of the members, until the Lease is lost (the fence
/// is closed by then) or `stop`.
pub struct Membership {
    elector: LeaderElector,
    api: Api<Lease>,
    timings: Timings,
    fence: Arc<Fence>,
    shards: Arc<Shards>,
    seen: Mutex<HashMap<String, Seen>>,
}

impl Membership {
    /// `client` should time out fast, as the leader election's.
    pub fn new(
        client: Client,
        namespace: &str,
        identity: &str,
        timings: Timings,
        fence: Arc<Fence>,
    ) -> Self {
        let name = format!("{LEASE_PREFIX}{identity}");
        Membership {
            elector: LeaderElector::new(
                client.clone(),
                namespace,
                &name,
                identity,
                timings,
                Arc::new(Fence::default()),
            ),
            api: Api::namespaced(client, namespace),
            timings,
            fence,
            shards: Arc::new(Shards {
                identity: identity.to_string(),
                view: watch::Sender::new(View::default()),
            }),
            seen: Mutex::new(HashMap::new()),
        }
    }

    pub fn shards(&self) -> Arc<Shards> {
        self.shards.clone()
    }

    /// Joins and keeps the membership; returns when it is lost (no successful round within the renew
    /// deadline). The fence is then closed and the view empty: this replica owns nothing.
    pub async fn hold(&self) {
        let mut joined: Option<(Instant, bool)> = None;
        loop {
            let attempt = Instant::now();
            // A member frozen or starved past its deadline stops before even trying: the others may have
            // taken its share by now, and a renewal must not reopen the fence on the old view. It joins
            // again, with a join delay.
            if joined.is_some() && !self.fence.is_open() {
                warn!(deadline = ?self.timings.renew_deadline, "no membership round within the renew deadline");
                break;
            }
            // A member's round must end within its deadline; before joining, within one.
            let limit = match self.fence.until() {
                Some(until) if joined.is_some() => until.saturating_duration_since(attempt),
                _ => self.timings.renew_deadline,
            };
            let round = tokio::time::timeout(limit, self.round(attempt)).await;
            match round {
                Ok(Ok(others)) => {
                    let (since, alone) = *joined.get_or_insert_with(|| {
                        info!(identity = %self.shards.identity, others = others.len(), "joined the shards");
                        (attempt, others.is_empty())
                    });
                    let mut members = others;
                    members.push(self.shards.identity.clone());
                    members.sort();
                    let view = View {
                        members,
                        taking: alone || attempt >= since + JOIN_DELAY,
                    };
                    self.shards.view.send_if_modified(|v| {
                        let changed = *v != view;
                        if changed {
                            info!(members = ?view.members, taking = view.taking, "shard members");
                            *v = view;
                        }
                        changed
                    });
                    // Writes are allowed only once the view they are decided by is in place.
                    self.fence.open_until(attempt + self.timings.renew_deadline);
                }
                Ok(Err(e)) => warn!(error = %e, "shard membership round"),
                Err(_) => warn!("shard membership round timed out"),
            }
            if !self.fence.is_open() && joined.is_some() {
                warn!(deadline = ?self.timings.renew_deadline, "no membership round within the renew deadline");
                break;
            }
            tokio::time::sleep(self.timings.retry_period).await;
        }
        self.fence.close();
        self.shards.view.send_replace(View::default());
    }

    /// Gives the membership up (on shutdown, once nothing is in flight): the others take the share at once.
    pub async fn release(&self) {
        self.fence.close();
        self.shards.view.send_replace(View::default());
        self.elector.release().await;
    }

    /// Renews this replica's Lease and lists the others: the live members but this one.
    async fn round(&self, now: Instant) -> Result<Vec<String>, String> {
        match self.elector.try_take_now(now).await {
            Ok(true) => {}
            // Another process holds a Lease of our identity: two replicas were given one name.
            Ok(false) => {
                return Err(
                    "another process holds this replica's shard Lease (two replicas with one --identity?)"
                        .into(),
                );
            }
            Err(e) => return Err(format!("renewing the shard Lease: {e}")),
        }
        let leases = self
            .api
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("listing the shard Leases: {e}"))?;
        let (live, forget) = self.judge(&leases.items, now);
        for (name, version) in forget {
            // Only the Lease as listed: one renewed since (its member back, under the same name) stays.
            // Best effort: another member may have deleted it first.
            let params = kube::api::DeleteParams {
                preconditions: Some(kube::api::Preconditions {
                    resource_version: Some(version),
                    uid: None,
                }),
                ..Default::default()
            };
            let _ = self.api.delete(&name, &params).await;
        }
        Ok(live)
    }
}

impl Membership {
    /// From the listed Leases, seen at `now`: the other live members, and the Leases long expired.
    fn judge(&self, leases: &[Lease], now: Instant) -> (Vec<String>, Vec<(String, String)>) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let (mut live, mut forget) = (Vec::new(), Vec::new());
        let listed: Vec<String> = leases.iter().map(ResourceExt::name_any).collect();
        seen.retain(|name, _| listed.contains(name));
        for lease in leases {
            let name = lease.name_any();
            let Some(identity) = name.strip_prefix(LEASE_PREFIX) else {
                continue;
            };
            if identity == self.shards.identity {
                continue;
            }
            let spec = lease.spec.clone().unwrap_or_default();
            let lasts = Duration::from_secs(
                u64::try_from(spec.lease_duration_seconds.unwrap_or(15)).unwrap_or(15),
            );
            let version = lease.resource_version().unwrap_or_default();
            let entry = seen.entry(name.clone()).or_insert_with(|| Seen {
                version: version.clone(),
                changed_at: now,
                lasts,
            });
            if entry.version != version {
                *entry = Seen {
                    version,
                    changed_at: now,
                    lasts,
                };
            }
            let held = spec
                .holder_identity
                .as_deref()
                .is_some_and(|h| !h.is_empty());
            if held && now < entry.changed_at + entry.lasts {
                live.push(identity.to_string());
            } else if now >= entry.changed_at + entry.lasts + FORGET_AFTER {
                forget.push((name, entry.version.clone()));
            }
        }
        (live, forget)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_hash_is_stable() {
        // Fixed forever: replicas of two versions must agree on every owner.
        assert_eq!(stable_hash(&["a", "b"]), stable_hash(&["a", "b"]));
        assert_ne!(stable_hash(&["ab", ""]), stable_hash(&["a", "b"]));
        // Computed independently (Python) from FNV-1a 64 and SplitMix64's finalizer.
        assert_eq!(
            stable_hash(&["serin-0", "default", "podinfo"]),
            0x4973_83d1_7710_b174
        );
    }

    #[test]
    fn a_member_that_goes_moves_only_its_own_share() {
        let three = members(&["a", "b", "c"]);
        let two = members(&["a", "c"]);
        let canaries: Vec<String> = (0..3000).map(|i| format!("app-{i}")).collect();
        let mut shares: HashMap<&str, usize> = HashMap::new();
        for c in &canaries {
            let before = owner_of(&three, "ns", c).unwrap();
            *shares.entry(before).or_default() += 1;
            let after = owner_of(&two, "ns", c).unwrap();
            if before != "b" {
                assert_eq!(before, after, "{c} moved though its owner stayed");
            }
            assert_ne!(after, "b");
        }
        // Each gets about a third.
        for m in ["a", "b", "c"] {
            let share = shares[m];
            assert!((850..1150).contains(&share), "{m}: {share} of 3000");
        }
        assert_eq!(owner_of(&[], "ns", "x"), None);
    }

    #[test]
    fn a_replica_owns_only_its_share_and_only_once_taking() {
        let shards = Shards {
            identity: "b".into(),
            view: watch::Sender::new(View {
                members: members(&["a", "b", "c"]),
                taking: false,
            }),
        };
        let ours: Vec<String> = (0..300)
            .map(|i| format!("app-{i}"))
            .filter(|c| owner_of(&members(&["a", "b", "c"]), "ns", c) == Some("b"))
            .collect();
        assert!(!ours.is_empty());
        assert!(
            ours.iter().all(|c| !shards.owns("ns", c)),
            "not before the join delay"
        );
        shards.view.send_modify(|v| v.taking = true);
        assert!(ours.iter().all(|c| shards.owns("ns", c)));
        let theirs = (0..300)
            .map(|i| format!("app-{i}"))
            .find(|c| !ours.contains(c))
            .unwrap();
        assert!(!shards.owns("ns", &theirs));
    }

    fn lease(identity: &str, version: &str, holder: Option<&str>) -> Lease {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("{LEASE_PREFIX}{identity}"), "resourceVersion": version},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15}}))
        .unwrap()
    }

    #[tokio::test]
    async fn members_live_while_their_lease_changes_by_our_clock() {
        let client =
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:1".parse().unwrap()))
                .unwrap();
        let m = Membership::new(
            client,
            "ns",
            "a",
            Timings::default(),
            Arc::new(Fence::default()),
        );
        let t0 = Instant::now();
        let other = |v: &str| lease("b", v, Some("b"));
        let ours = lease("a", "1", Some("a"));
        let unrelated: Lease = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "serin-leader", "resourceVersion": "1"},
            "spec": {"holderIdentity": "x"}}))
        .unwrap();
        let judge = |leases: &[Lease], at: Duration| m.judge(leases, t0 + at);
        // Seen for the first time: alive (an unknown Lease might be renewed), whatever its renewTime says.
        assert_eq!(
            judge(
                &[ours.clone(), other("1"), unrelated.clone()],
                Duration::ZERO
            )
            .0,
            ["b"]
        );
        assert_eq!(judge(&[other("1")], Duration::from_secs(14)).0, ["b"]);
        // Unchanged for its duration: gone.
        assert!(judge(&[other("1")], Duration::from_secs(15)).0.is_empty());
        // Renewed: alive again, from when it was seen to change.
        assert_eq!(judge(&[other("2")], Duration::from_secs(16)).0, ["b"]);
        assert_eq!(judge(&[other("2")], Duration::from_secs(30)).0, ["b"]);
        // Released (no holder): gone at once.
        assert!(
            judge(&[lease("b", "3", None)], Duration::from_secs(31))
                .0
                .is_empty()
        );
        // Long expired: deleted by whoever sees it.
        let (_, forget) = judge(
            &[lease("b", "3", None)],
            Duration::from_secs(31) + Duration::from_secs(15) + FORGET_AFTER,
        );
        assert_eq!(forget, [(format!("{LEASE_PREFIX}b"), "3".to_string())]);
    }
}
