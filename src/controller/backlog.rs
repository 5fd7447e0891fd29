//! Rollouts in flight before idle Canaries, when a list brings them all at once (a restart, a watch that
//! had to list again). The controller's queue runs what is due in the order it came due, so a restart over
//! 10,000 Canaries put a rollout's next step behind every settled Canary's look (36 s of them at 10,000).
//! Settled Canaries (Initialized, Succeeded, Failed) from a list are held here instead and handed to the
//! queue a batch at a time, the next batch once the last is reconciled: a rollout's tick waits behind one
//! batch at most. The rest of a list (in flight, new, being deleted) goes to the queue at once. At the
//! start, the other watches' first lists bring every Canary too (each primary's Deployment by its owner, a
//! target by its name): until the first batch goes, those not known to be in flight wait as well.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::channel::mpsc::UnboundedSender;
use indexmap::IndexSet;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::Notify;
use tracing::info;

use crate::api::{Canary, Phase};

/// How long a batch may take before the next goes anyway: a Canary deleted meanwhile, or another
/// replica's, never reports back.
const BATCH_WAIT: Duration = Duration::from_millis(250);

pub struct Backlog {
    /// The settled Canaries of a list under way, in its order: they wait once it is complete (a list
    /// that fails part-way starts again, and so does this).
    listing: Mutex<IndexSet<ObjectRef<Canary>>>,
    /// Settled Canaries not handed to the queue yet, in order, each once.
    waiting: Mutex<IndexSet<ObjectRef<Canary>>>,
    /// The batch in the queue: the ones not reconciled yet.
    batch: Mutex<HashSet<ObjectRef<Canary>>>,
    /// A list ended: what waits may go.
    listed: Notify,
    /// The batch was reconciled.
    drained: Notify,
    /// Until the first batch goes: the other watches' triggers wait too.
    starting: AtomicBool,
}

impl Default for Backlog {
    fn default() -> Self {
        Backlog {
            listing: Mutex::default(),
            waiting: Mutex::default(),
            batch: Mutex::default(),
            listed: Notify::new(),
            drained: Notify::new(),
            starting: AtomicBool::new(true),
        }
    }
}

/// Whether a Canary from a list can wait behind those in flight: settled, and not being deleted.
pub fn can_wait(canary: &Canary) -> bool {
    canary.metadata.deletion_timestamp.is_none()
        && matches!(
            canary.status.as_ref().and_then(|s| s.phase),
            Some(Phase::Initialized | Phase::Succeeded | Phase::Failed)
        )
}

impl Backlog {
    /// A list of Canaries starts (again).
    pub fn listing(&self) {
        lock(&self.listing).clear();
    }

    /// A settled Canary from a list: reconciled after the list's others.
    pub fn hold(&self, canary: ObjectRef<Canary>) {
        lock(&self.listing).insert(canary);
    }

    /// The list is complete: its settled Canaries wait their turn.
    pub fn listed(&self) {
        let listed = std::mem::take(&mut *lock(&self.listing));
        lock(&self.waiting).extend(listed);
        self.listed.notify_one();
    }

    /// The Canaries another watch's event concerns, less those that wait: at the start, every one not
    /// known to be in flight (`in_flight`; one not indexed yet is in the Canaries' list, which sends it
    /// at once if it is in flight). After that, all of them.
    pub fn admit(
        &self,
        canaries: Vec<ObjectRef<Canary>>,
        in_flight: impl Fn(&ObjectRef<Canary>) -> bool,
    ) -> Vec<ObjectRef<Canary>> {
        if !self.starting.load(Ordering::Relaxed) {
            return canaries;
        }
        let (now, wait): (Vec<_>, Vec<_>) = canaries.into_iter().partition(|c| in_flight(c));
        if !wait.is_empty() {
            lock(&self.waiting).extend(wait);
        }
        now
    }

    /// `canary` was reconciled (whatever brought it).
    pub fn done(&self, canary: &ObjectRef<Canary>) {
        let mut batch = lock(&self.batch);
        if batch.remove(canary) && batch.is_empty() {
            self.drained.notify_one();
        }
    }

    /// How many wait.
    pub fn len(&self) -> usize {
        lock(&self.waiting).len()
    }

    /// Hands what waits to the queue (`wake`) `size` at a time, once `ready` (the caches synced: before
    /// that a reconcile only waits for them), after each list. Runs as long as the controller.
    pub async fn feed(
        &self,
        wake: UnboundedSender<ObjectRef<Canary>>,
        size: usize,
        ready: &AtomicBool,
        in_flight: impl Fn(&ObjectRef<Canary>) -> bool,
    ) {
        loop {
            self.listed.notified().await;
            while !ready.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            self.starting.store(false, Ordering::Relaxed);
            // One in flight went to the queue from its own list (another watch's may have brought it
            // before the Canaries' list said what it is).
            lock(&self.waiting).retain(|c| !in_flight(c));
            let (waiting, started) = (self.len(), tokio::time::Instant::now());
            loop {
                let next: Vec<ObjectRef<Canary>> = {
                    let mut waiting = lock(&self.waiting);
                    let take = waiting.len().min(size.max(1));
                    waiting.drain(..take).collect()
                };
                if next.is_empty() {
                    if waiting > 0 {
                        info!(
                            waiting,
                            seconds = started.elapsed().as_secs_f64(),
                            "settled Canaries of the list looked at, after those in flight"
                        );
                    }
                    break;
                }
                *lock(&self.batch) = next.iter().cloned().collect();
                for canary in next {
                    if wake.unbounded_send(canary).is_err() {
                        return;
                    }
                }
                let _ = tokio::time::timeout(BATCH_WAIT, async {
                    while !lock(&self.batch).is_empty() {
                        self.drained.notified().await;
                    }
                })
                .await;
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use std::sync::Arc;

    fn key(i: usize) -> ObjectRef<Canary> {
        ObjectRef::new(&format!("app-{i}")).within("shop")
    }

    #[tokio::test]
    async fn a_batch_goes_once_the_last_is_reconciled() {
        let backlog = Arc::new(Backlog::default());
        for i in 0..10 {
            backlog.hold(key(i));
        }
        let ready = Arc::new(AtomicBool::new(false));
        let (wake, mut woken) = futures::channel::mpsc::unbounded();
        let feeder = {
            let (backlog, ready) = (backlog.clone(), ready.clone());
            tokio::spawn(async move { backlog.feed(wake, 4, &ready, |_| false).await })
        };
        backlog.listed();
        // Nothing before the caches are synced.
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(
            futures::FutureExt::now_or_never(woken.next()).is_none(),
            "woken before the caches synced"
        );
        ready.store(true, Ordering::Relaxed);
        let mut order = Vec::new();
        for expected in [4, 4, 2] {
            let mut batch = Vec::new();
            for _ in 0..expected {
                batch.push(woken.next().await.unwrap());
            }
            // The next batch waits for this one (well within BATCH_WAIT here).
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert!(
                futures::FutureExt::now_or_never(woken.next()).is_none(),
                "a batch went before the last was reconciled"
            );
            for canary in &batch {
                backlog.done(canary);
            }
            order.extend(batch);
        }
        assert_eq!(
            order,
            (0..10).map(key).collect::<Vec<_>>(),
            "the list's order"
        );
        assert_eq!(backlog.len(), 0);
        // A batch whose Canary never reports (deleted meanwhile) goes on after BATCH_WAIT.
        backlog.hold(key(20));
        backlog.hold(key(21));
        backlog.listed();
        let first = woken.next().await.unwrap();
        let second = tokio::time::timeout(Duration::from_secs(2), woken.next())
            .await
            .expect("the next batch after BATCH_WAIT");
        assert_eq!((first, second), (key(20), Some(key(21))));
        feeder.abort();
    }

    #[test]
    fn a_list_started_again_holds_each_canary_once() {
        let backlog = Backlog::default();
        backlog.listing();
        backlog.hold(key(1));
        backlog.hold(key(2));
        // The list failed part-way and starts again: what it held goes.
        backlog.listing();
        backlog.hold(key(1));
        backlog.hold(key(1));
        assert_eq!(
            backlog.len(),
            0,
            "nothing waits before the list is complete"
        );
        backlog.listed();
        assert_eq!(backlog.len(), 1);
        // At the start, the other watches' triggers wait too, but not those in flight; each once.
        let admitted = backlog.admit(vec![key(1), key(3), key(4)], |c| *c == key(4));
        assert_eq!(admitted, [key(4)]);
        assert_eq!(backlog.len(), 2);
    }

    #[tokio::test]
    async fn after_the_first_batch_the_other_watches_triggers_go_at_once() {
        let backlog = Arc::new(Backlog::default());
        backlog.hold(key(1));
        let (wake, mut woken) = futures::channel::mpsc::unbounded();
        let feeder = {
            let backlog = backlog.clone();
            tokio::spawn(async move {
                backlog
                    .feed(wake, 4, &AtomicBool::new(true), |_| false)
                    .await
            })
        };
        backlog.listed();
        assert_eq!(woken.next().await, Some(key(1)));
        assert_eq!(backlog.admit(vec![key(2)], |_| false), [key(2)]);
        feeder.abort();
    }

    #[test]
    fn only_settled_canaries_wait() {
        let canary = |phase: Option<&str>, deleting: bool| -> Canary {
            let mut c: Canary = serde_json::from_value(serde_json::json!({
                "apiVersion": "serin.dev/v1beta1", "kind": "Canary",
                "metadata": {"name": "podinfo", "namespace": "shop"},
                "spec": {"targetRef": {"name": "podinfo"}, "service": {"port": 80}},
                "status": phase.map(|p| serde_json::json!({"phase": p}))
            }))
            .unwrap();
            if deleting {
                c.metadata.deletion_timestamp =
                    Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                    ));
            }
            c
        };
        for phase in ["Initialized", "Succeeded", "Failed"] {
            assert!(can_wait(&canary(Some(phase), false)), "{phase}");
            assert!(
                !can_wait(&canary(Some(phase), true)),
                "{phase} being deleted"
            );
        }
        for phase in [
            "Initializing",
            "Progressing",
            "Promoting",
            "Finalising",
            "Waiting",
            "WaitingPromotion",
        ] {
            assert!(!can_wait(&canary(Some(phase), false)), "{phase}");
        }
        assert!(!can_wait(&canary(None, false)), "a new Canary");
    }
}
