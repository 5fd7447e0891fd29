//! Kubernetes events (events.k8s.io/v1) about Canaries. A repeat of the same event — same object, type,
//! reason and message — within a few minutes updates that event's series (count, last seen), as kubectl
//! shows repeats; a new message is a new event. (kube-rs's Recorder keys a series on the reason alone, so a
//! second CheckFailed would show the first check's value, and a later Holding the first hold's reason.)

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;

/// How long a repeat joins the earlier event's series.
const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);
/// The API server refuses notes of 1 kB or more.
const NOTE_MAX_BYTES: usize = 1000;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    namespace: String,
    regarding: String,
    warning: bool,
    reason: String,
    note: String,
}

struct Seen {
    name: String,
    count: i32,
    last: Timestamp,
}

pub struct Events {
    client: Client,
    controller: String,
    instance: String,
    seen: Mutex<HashMap<Key, Seen>>,
}

impl Events {
    pub fn new(client: Client, controller: &str, instance: &str) -> Self {
        Self {
            client,
            controller: controller.to_string(),
            instance: instance.to_string(),
            seen: Mutex::new(HashMap::new()),
        }
    }

    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        warning: bool,
        reason: &str,
        note: &str,
    ) -> Result<(), kube::Error> {
        let namespace = regarding.namespace.clone().unwrap_or_default();
        let note = truncate(note, NOTE_MAX_BYTES);
        let key = Key {
            namespace: namespace.clone(),
            regarding: regarding
                .uid
                .clone()
                .or_else(|| regarding.name.clone())
                .unwrap_or_default(),
            warning,
            reason: reason.to_string(),
            note: note.to_string(),
        };
        let now = Timestamp::now();
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        // Decide under the lock, write without it: one slow write must not hold up every canary's events.
        let repeat = {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            seen.retain(|_, s| s.last + SERIES_WINDOW > now);
            seen.get_mut(&key).map(|s| {
                s.count += 1;
                s.last = now;
                (s.name.clone(), s.count)
            })
        };
        if let Some((name, count)) = repeat {
            let series = json!({"series": {"count": count, "lastObservedTime": MicroTime(now)}});
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&series))
                .await
            {
                Ok(_) => return Ok(()),
                // The event was removed (its TTL, or by hand): start a new one.
                Err(kube::Error::Api(status)) if status.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        let name = format!(
            "{}.{:x}",
            regarding.name.as_deref().unwrap_or(&self.controller),
            now.as_nanosecond()
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some(if warning { "Warning" } else { "Normal" }.into()),
            reason: Some(reason.to_string()),
            action: Some(reason.to_string()),
            note: Some(note.to_string()),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Event::default()
        };
        api.create(&PostParams::default(), &event).await?;
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).insert(
            key,
            Seen {
                name,
                count: 1,
                last: now,
            },
        );
        Ok(())
    }
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn notes_are_cut_at_a_character_boundary() {
        assert_eq!(truncate("abc", 10), "abc");
        assert_eq!(truncate("abcdef", 3), "abc");
        // "é" is two bytes: a cut inside it backs off before it.
        assert_eq!(truncate("aé", 2), "a");
    }
}
