//! Three replicas with --sharding over twelve Canaries: each Canary is acted on by exactly one replica (the
//! one rendezvous hashing gives it; told by the events' reportingInstance), and when one replica is killed
//! mid-rollout its Canaries finish on the others without a step taken twice.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, ListParams};
use serde_json::json;
use serin::api::{Canary, Phase};
use serin::controller::shard::owner_of;
use serin_e2e::apps::deployment;
use serin_e2e::{SerinProcess, apply, client, cluster, install_crds, namespace, wait_for};

const SERIN: &str = env!("CARGO_BIN_EXE_serin");
const REPLICAS: [&str; 3] = ["a", "b", "c"];
const CANARIES: usize = 12;

fn canary(name: &str) -> serde_json::Value {
    json!({"apiVersion": "serin.dev/v1beta1", "kind": "Canary", "metadata": {"name": name},
        "spec": {"provider": "gatewayapi",
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "service": {"port": 9898, "gatewayRefs": [{"name": "gateway"}]},
            "analysis": {"interval": "4s", "stepWeight": 10, "maxWeight": 40, "threshold": 1}}})
}

async fn start(ns: &str, identity: &str) -> SerinProcess {
    let env = cluster().await;
    let args: Vec<String> = [
        "--min-interval=1s",
        &format!("--namespace={ns}"),
        &format!("--leader-election-namespace={ns}"),
        &format!("--identity={identity}"),
        &format!("--metrics-server={}", env.prometheus()),
        "--sharding",
    ]
    .map(String::from)
    .into();
    SerinProcess::spawn(SERIN, &args, env.kubeconfig(), &format!("{ns}-{identity}"))
}

/// Every Canary event of `ns`: (canary, reason, note) -> (reporting instance -> times, a series counting
/// each repeat).
async fn events(
    client: &Client,
    ns: &str,
) -> BTreeMap<(String, String, String), BTreeMap<String, i32>> {
    let mut out: BTreeMap<_, BTreeMap<String, i32>> = BTreeMap::new();
    for e in Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("listing events")
        .items
    {
        let regarding = e.regarding.clone().unwrap_or_default();
        if regarding.kind.as_deref() != Some("Canary") {
            continue;
        }
        let key = (
            regarding.name.unwrap_or_default(),
            e.reason.clone().unwrap_or_default(),
            e.note.clone().unwrap_or_default(),
        );
        *out.entry(key)
            .or_default()
            .entry(e.reporting_instance.clone().unwrap_or_default())
            .or_default() += e.series.as_ref().map_or(1, |s| s.count);
    }
    out
}

async fn wait_all(client: &Client, ns: &str, what: &str, done: impl Fn(&Canary) -> bool) {
    let api: Api<Canary> = Api::namespaced(client.clone(), ns);
    wait_for(
        what,
        Duration::from_secs(240),
        Duration::from_millis(500),
        || async {
            let list = api
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let waiting: Vec<String> = list
                .items
                .iter()
                .filter(|c| !done(c))
                .map(|c| {
                    format!(
                        "{} {:?}",
                        c.metadata.name.clone().unwrap_or_default(),
                        c.status.as_ref().and_then(|s| s.phase)
                    )
                })
                .collect();
            if list.items.len() == CANARIES && waiting.is_empty() {
                Ok(())
            } else {
                Err(format!("{} listed, waiting: {waiting:?}", list.items.len()))
            }
        },
    )
    .await;
}

/// Waits until each of `names` has been seen with traffic on its canary (not necessarily all at once: an
/// early one may already be promoting).
async fn under_way(client: &Client, ns: &str, names: &[String]) {
    let api: Api<Canary> = Api::namespaced(client.clone(), ns);
    let seen = std::sync::Mutex::new(BTreeSet::new());
    wait_for(
        "the canaries under way",
        Duration::from_secs(120),
        Duration::from_millis(200),
        || async {
            let list = api
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let mut seen = seen.lock().unwrap();
            for c in &list.items {
                let name = c.metadata.name.clone().unwrap_or_default();
                if names.contains(&name) && c.status.as_ref().map_or(0, |s| s.canary_weight) >= 10 {
                    seen.insert(name);
                }
            }
            if seen.len() == names.len() {
                Ok(())
            } else {
                Err(format!("{} of {}", seen.len(), names.len()))
            }
        },
    )
    .await;
}

/// Each Canary's steps, summed over every replica's events: (canary, reason, note) -> times.
async fn steps(client: &Client, ns: &str) -> BTreeMap<(String, String, String), i32> {
    events(client, ns)
        .await
        .into_iter()
        .filter(|((_, reason, _), _)| {
            ["WeightAdvanced", "NewRevision", "Promoting", "Promoted"].contains(&reason.as_str())
        })
        .map(|(key, by)| (key, by.values().sum()))
        .collect()
}

fn phase(c: &Canary) -> Option<Phase> {
    c.status.as_ref().and_then(|s| s.phase)
}

#[tokio::test]
async fn each_canary_has_one_replica_and_a_killed_replicas_share_finishes_on_the_others() {
    let client = client().await;
    install_crds(&client).await;
    let ns = namespace(&client, "sharding").await;
    let names: Vec<String> = (0..CANARIES).map(|i| format!("app-{i:02}")).collect();
    let members: Vec<String> = REPLICAS.map(String::from).into();
    let owner = |name: &str| owner_of(&members, &ns, name).unwrap().to_string();
    let mut shares: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for n in &names {
        shares.entry(owner(n)).or_default().push(n.clone());
    }
    eprintln!("shares: {shares:?}");

    let mut replicas: BTreeMap<&str, SerinProcess> = BTreeMap::new();
    for r in REPLICAS {
        replicas.insert(r, start(&ns, r).await);
    }
    // All three members, each taking its share (the join delay), before the first Canary: a replica
    // alone at first would rightly act on every Canary until the others joined.
    let joined = Instant::now();
    for (r, serin) in &replicas {
        wait_for(
            &format!("replica {r} to take its share among 3"),
            Duration::from_secs(90),
            Duration::from_millis(500),
            || async {
                match (
                    serin.metric("serin_shard_members").await,
                    serin.metric("serin_shard_taking").await,
                ) {
                    (Some(m), Some(t)) if m == 3.0 && t == 1.0 => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
    }
    eprintln!(
        "measured: three replicas joined and taking after {:.1}s",
        joined.elapsed().as_secs_f64()
    );
    for n in &names {
        apply::<Deployment>(&client, &ns, deployment(n, 1, "podinfo:1.0.0", json!({}))).await;
        apply::<Canary>(&client, &ns, canary(n)).await;
    }
    wait_all(&client, &ns, "every Canary Initialized", |c| {
        phase(c) == Some(Phase::Initialized)
    })
    .await;
    let seen = events(&client, &ns).await;
    for ((canary, reason, _), by) in &seen {
        let instances: BTreeSet<&String> = by.keys().collect();
        assert_eq!(
            instances,
            BTreeSet::from([&owner(canary)]),
            "{canary} {reason}: events from {by:?}, its owner is {}",
            owner(canary)
        );
    }

    // Rollouts; the replica with the largest share is killed once its Canaries are under way.
    for n in &names {
        apply::<Deployment>(&client, &ns, deployment(n, 1, "podinfo:2.0.0", json!({}))).await;
    }
    let victim = shares
        .iter()
        .max_by_key(|(_, s)| s.len())
        .map(|(r, _)| r.clone())
        .unwrap();
    let victims = shares[&victim].clone();
    under_way(&client, &ns, &victims).await;
    // Which of the victim's Canaries are still stepping at the kill: below the last weight, at least two
    // intervals (8 s) from their promotion, so the victim cannot finish one in the moment before the kill.
    // The others may have been finished by the victim, and a kill between a status write and its event
    // may lose the event (events are told after the status and not retried).
    let stepping: BTreeSet<String> = Api::<Canary>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|c| {
            let status = c.status.as_ref();
            phase(c) == Some(Phase::Progressing) && status.is_some_and(|s| s.canary_weight < 40)
        })
        .filter_map(|c| c.metadata.name)
        .filter(|n| victims.contains(n))
        .collect();
    let killed_at = Instant::now();
    replicas.get_mut(victim.as_str()).unwrap().kill();
    eprintln!("killed {victim}, which had {victims:?}, of which {stepping:?} still stepping");
    assert!(
        !stepping.is_empty(),
        "none of the victim's Canaries was still stepping at the kill; the test proves nothing"
    );
    wait_all(&client, &ns, "every Canary promoted", |c| {
        phase(c) == Some(Phase::Succeeded)
            && c.status.as_ref().and_then(|s| s.last_promoted_spec.clone())
                == c.status.as_ref().and_then(|s| s.last_applied_spec.clone())
    })
    .await;
    eprintln!(
        "measured: the killed replica's canaries all promoted {:.1}s after the kill",
        killed_at.elapsed().as_secs_f64()
    );

    let survivors: Vec<String> = members.iter().filter(|m| **m != victim).cloned().collect();
    let successor = |name: &str| owner_of(&survivors, &ns, name).unwrap().to_string();
    let seen = events(&client, &ns).await;
    for ((canary, reason, note), by) in &seen {
        let allowed: BTreeSet<String> = if victims.contains(canary) {
            BTreeSet::from([victim.clone(), successor(canary)])
        } else {
            BTreeSet::from([owner(canary)])
        };
        assert!(
            by.keys().all(|i| allowed.contains(i)),
            "{canary} {reason} {note:?}: events from {by:?}, allowed {allowed:?}"
        );
        // No step twice: each weight advanced to, and the promotion, once in all (Holding and the like
        // may repeat as they wait).
        if ["WeightAdvanced", "NewRevision", "Promoting", "Promoted"].contains(&reason.as_str()) {
            let times: i32 = by.values().sum();
            assert_eq!(
                times, 1,
                "{canary} {reason} {note:?} recorded {times} times: {by:?}"
            );
        }
    }
    // The victim's canaries that were still stepping went on under their successors.
    for canary in &stepping {
        let finished_by: BTreeSet<&String> = seen
            .iter()
            .filter(|((c, reason, _), _)| c == canary && reason == "Promoted")
            .flat_map(|(_, by)| by.keys())
            .collect();
        assert_eq!(
            finished_by,
            BTreeSet::from([&successor(canary)]),
            "{canary}"
        );
    }

    // A frozen replica (SIGSTOP past its Lease) mid-rollout: its share moves to the other; resumed, it
    // must write nothing on its old view, and rejoin with a join delay. No step twice in all.
    let before = steps(&client, &ns).await;
    let first_promoted: BTreeMap<String, Option<String>> =
        Api::<Canary>::namespaced(client.clone(), &ns)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|c| {
                (
                    c.metadata.name.unwrap_or_default(),
                    c.status.and_then(|s| s.last_promoted_spec),
                )
            })
            .collect();
    let survivor_shares: BTreeMap<String, Vec<String>> =
        names.iter().fold(BTreeMap::new(), |mut m, n| {
            m.entry(successor(n))
                .or_insert_with(Vec::new)
                .push(n.clone());
            m
        });
    let (frozen, frozen_share) = survivor_shares
        .iter()
        .max_by_key(|(_, s)| s.len())
        .map(|(r, s)| (r.clone(), s.clone()))
        .unwrap();
    for n in &names {
        apply::<Deployment>(&client, &ns, deployment(n, 1, "podinfo:3.0.0", json!({}))).await;
    }
    under_way(&client, &ns, &frozen_share).await;
    let serin = &replicas[frozen.as_str()];
    serin.signal("STOP");
    eprintln!("froze {frozen}, which had {frozen_share:?}");
    tokio::time::sleep(Duration::from_secs(25)).await;
    serin.signal("CONT");
    wait_all(&client, &ns, "every Canary promoted again", |c| {
        let status = c.status.as_ref();
        phase(c) == Some(Phase::Succeeded)
            && status.and_then(|s| s.last_promoted_spec.clone())
                == status.and_then(|s| s.last_applied_spec.clone())
            && status.and_then(|s| s.last_promoted_spec.clone())
                != first_promoted
                    .get(c.metadata.name.as_deref().unwrap_or_default())
                    .cloned()
                    .flatten()
    })
    .await;
    // Let the resumed replica's stale moments pass, then count.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = steps(&client, &ns).await;
    // Counted for the second rollout alone: the kill in the first may fall between a step's status write
    // and its event (events are told after the status, and a lost one is not retried), so a note the two
    // rollouts share can be missing from the first. Nothing is lost here: a frozen process resumes its
    // writes, and a stale step would show as a second record.
    // Weights and the copy say the same notes in both rollouts; a revision's notes (NewRevision, Promoted)
    // are new in the second.
    let mut promoted_again = BTreeSet::new();
    for (key, times) in &after {
        let (canary, reason, note) = key;
        let earlier = before.get(key).copied().unwrap_or(0);
        let second = times - earlier;
        let want = match reason.as_str() {
            "WeightAdvanced" | "Promoting" => 1..=1,
            _ => 0..=1,
        };
        assert!(
            want.contains(&second),
            "{canary} {reason} {note:?}: {second} times in the second rollout ({times} in all, {earlier} before the freeze)"
        );
        if reason == "Promoted" && second == 1 {
            promoted_again.insert(canary.clone());
        }
    }
    assert_eq!(
        promoted_again,
        names.iter().cloned().collect(),
        "each Canary promoted in the second rollout, told once"
    );
}
