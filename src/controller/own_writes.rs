//! What this replica last wrote to a Canary's workloads, by generation: the watch cache lags our own writes
//! (under load, by seconds), and the reconcile our status write triggers can see the old object. Acting
//! on it would write the same thing again: the target scaled twice, the primary's promotion copy applied
//! twice (half the promotions at a thousand rollouts at once, before this was kept for the primary too).

use std::collections::HashMap;
use std::sync::Mutex;

use kube::api::ObjectMeta;
use kube::runtime::reflector::ObjectRef;

use crate::api::Canary;

/// Which of a Canary's objects was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Written {
    /// The target's replicas (the canary's scale).
    TargetScale,
    /// The primary's spec, copied from the target at promotion.
    Primary,
}

/// Per Canary and object: the object's uid and generation after this replica's last write of it.
type Generations = HashMap<(ObjectRef<Canary>, Written), (String, i64)>;

#[derive(Default)]
pub struct OwnWrites(Mutex<Generations>);

impl OwnWrites {
    /// Whether the cached object (`cached`) has seen this replica's last write of it. Another object of
    /// the same name (deleted and created again) starts its generations anew: it has.
    pub fn seen(&self, canary: &ObjectRef<Canary>, what: Written, cached: &ObjectMeta) -> bool {
        let (uid, generation) = (
            cached.uid.as_deref().unwrap_or_default(),
            cached.generation.unwrap_or(0),
        );
        self.lock()
            .get(&(canary.clone(), what))
            .is_none_or(|(u, g)| u != uid || generation >= *g)
    }

    /// `answer` is the API server's answer to a write of `what`.
    pub fn wrote(&self, canary: &ObjectRef<Canary>, what: Written, answer: &ObjectMeta) {
        if let (Some(uid), Some(generation)) = (&answer.uid, answer.generation) {
            self.lock()
                .insert((canary.clone(), what), (uid.clone(), generation));
        }
    }

    /// The Canary is gone, or another replica's.
    pub fn forget(&self, canary: &ObjectRef<Canary>) {
        self.lock().retain(|(c, _), _| c != canary);
    }

    /// A new list: only the Canaries in it (`listed`) are kept.
    pub fn retain(&self, listed: impl Fn(&ObjectRef<Canary>) -> bool) {
        self.lock().retain(|(c, _), _| listed(c));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(uid: &str, generation: i64) -> ObjectMeta {
        ObjectMeta {
            uid: Some(uid.into()),
            generation: Some(generation),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn a_cache_behind_our_last_write_has_not_seen_it() {
        let writes = OwnWrites::default();
        let canary = ObjectRef::new("podinfo").within("shop");
        assert!(writes.seen(&canary, Written::Primary, &meta("a", 3)));
        writes.wrote(&canary, Written::Primary, &meta("a", 4));
        assert!(!writes.seen(&canary, Written::Primary, &meta("a", 3)));
        assert!(writes.seen(&canary, Written::Primary, &meta("a", 4)));
        assert!(writes.seen(&canary, Written::Primary, &meta("a", 5)));
        // Kept apart by object, and by Canary.
        assert!(writes.seen(&canary, Written::TargetScale, &meta("a", 3)));
        assert!(writes.seen(
            &ObjectRef::new("web").within("shop"),
            Written::Primary,
            &meta("a", 3)
        ));
        // Deleted and created again: a new object.
        assert!(writes.seen(&canary, Written::Primary, &meta("b", 1)));
        writes.forget(&canary);
        assert!(writes.seen(&canary, Written::Primary, &meta("a", 3)));
    }
}
