//! One reconcile of a Canary: wait for every cache to be synced, observe, decide (the pure core), act,
//! write the status once, publish the events, requeue. Failures back off per Canary.

use super::mapping::canary_ref;
use super::packed::Packed;
use std::time::{Duration, Instant};

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;
use std::sync::Arc;
use tracing::{Instrument, info_span, warn};

use super::apply::FIELD_MANAGER;
use super::events::Events;
use super::observe::{Blocked, observe};
use super::{Context, Error, act, revert};
use crate::api::analysis::HookType;
use crate::api::{Canary, CanaryStatus, Phase};
use crate::decision::{
    ActFailure, Decision, Need, Observed, Outcome, after_failed_act, blocked, decide,
};
use crate::telemetry::Metrics;
use crate::webhooks::{Payload, payload_phase};
use k8s_openapi::api::core::v1::ObjectReference;

/// The first retry after a failed reconcile; each further failure doubles it, up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How long a reconcile waits for the caches to sync before it gives up for now (and says which).
const SYNC_WAIT: Duration = Duration::from_secs(10);

/// The delay before retrying after the `failures`-th failure in a row.
pub fn backoff(failures: u32) -> Duration {
    MIN_BACKOFF
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}

/// What kind of failure an error is, for the status.
fn failure(e: &Error) -> ActFailure {
    match e {
        Error::NotOwned(_) => ActFailure::NotOwned,
        Error::FieldConflict(_) => ActFailure::FieldConflict,
        Error::Routing(_) | Error::Workload(_) | Error::Scaler(_) => ActFailure::InvalidSpec,
        // Refused for good: forbidden, invalid. Not found, conflicts, throttling and server errors pass.
        Error::Kube(kube::Error::Api(s))
            if (400..500).contains(&s.code) && ![404, 409, 429].contains(&s.code) =>
        {
            ActFailure::Rejected
        }
        Error::Kube(_) => ActFailure::Transient,
    }
}

pub fn error_policy(canary: Arc<Packed<Canary>>, error: &Error, ctx: Arc<Context>) -> Action {
    let failures = ctx.failed(&canary_ref(&*canary));
    let retry = backoff(failures);
    warn!(canary = %canary.name_any(), namespace = %canary.namespace().unwrap_or_default(), %error,
        failures, ?retry, "reconcile failed");
    Action::requeue(retry)
}

pub async fn reconcile(packed: Arc<Packed<Canary>>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = info_span!("canary", namespace = %packed.namespace().unwrap_or_default(), name = %packed.name_any());
    let (key, backlog) = (canary_ref(&*packed), ctx.backlog.clone());
    let result = async move {
        // Logged by unpack; a later change of the Canary brings it again.
        let Some(canary) = packed.unpack() else {
            return Ok(Action::await_change());
        };
        if !ctx.owns(&canary) {
            // Another replica's share: it acts on it. A change of the members wakes this one again.
            ctx.disown(&canary);
            return Ok(Action::await_change());
        }
        // Acting on half-synced caches would see a Deployment or a config missing that is there.
        let extra = ctx.resources_of(&canary);
        if let Err(not_synced) = ctx.caches_synced(&extra, SYNC_WAIT).await {
            warn!(%not_synced, "waiting for the watch caches to sync before acting");
            return Ok(Action::requeue(Duration::from_secs(5)));
        }
        let key = canary_ref(&canary);
        if stale(
            canary.resource_version().as_deref(),
            ctx.last_written(&key).as_deref(),
        ) {
            // The watch brings our last status within moments; this reconcile runs again then.
            return Ok(Action::requeue(Duration::from_millis(200)));
        }
        let start = Instant::now();
        ctx.tick_started(&key);
        let result = reconcile_one(&canary, &ctx).await;
        ctx.metrics.reconciled(start.elapsed(), result.is_err());
        if result.is_ok() {
            ctx.succeeded(&key);
        }
        result
    }
    .instrument(span)
    .await;
    // Whatever became of it, the backlog's next batch may go.
    backlog.done(&key);
    result
}

async fn reconcile_one(canary: &Canary, ctx: &Context) -> Result<Action, Error> {
    if canary.meta().deletion_timestamp.is_some() {
        // Being deleted: no roll forward goes on for it.
        ctx.writers.forget(&canary_ref(canary));
        if revert::has_finalizer(canary) {
            return revert::revert(ctx, canary).await;
        }
        return Ok(Action::await_change());
    }
    if canary.spec.revert_on_deletion != revert::has_finalizer(canary) {
        revert::set_finalizer(ctx, canary, canary.spec.revert_on_deletion).await?;
        // The finalizer's change brings the Canary back through the watch.
        return Ok(Action::await_change());
    }
    let obs = match observe(ctx, canary) {
        Ok(obs) => obs,
        Err(b) => return report_blocked(ctx, canary, &b).await,
    };
    let decision = decide_gathering(ctx, canary, obs.observed.clone()).await;
    // Gathering (metric queries, webhooks) can take long; with sharding the Canary may have moved to
    // another replica meanwhile: nothing decided here is acted on then.
    if !ctx.owns(canary) {
        ctx.disown(canary);
        return Ok(Action::await_change());
    }
    let mut status = decision.status.clone();
    status.tracked_configs = (!obs.tracked_configs.is_empty()).then(|| obs.tracked_configs.clone());
    let acted = act::act(ctx, canary, &obs, &decision.desired).await;
    if let Ok(writes) = &acted {
        ctx.metrics.api_writes.inc_by(u64::from(*writes));
    }
    let old = canary.status.clone().unwrap_or_default();
    let status = match &acted {
        Ok(_) => status,
        // Nothing moves when an act fails: keep the old status and say why, so the next tick retries.
        Err(e) => after_failed_act(
            old.clone(),
            failure(e),
            &e.to_string(),
            k8s_openapi::jiff::Timestamp::now(),
            obs.observed.generation,
        ),
    };
    write_status(ctx, canary, &old, &status).await?;
    if acted.is_ok() {
        // What a writer needs is cloned only when one starts: this runs on every tick.
        ctx.writers.keep(
            || super::writer::Tools {
                client: ctx.client.clone(),
                secrets: ctx.secrets.clone(),
                metrics: ctx.metrics.clone(),
            },
            canary,
            &obs.target,
            obs.primary.as_ref(),
            &status,
            decision.write_back.as_deref(),
        );
        if let Some(ended) = decision.post_rollout {
            post_rollout(ctx, canary, &status, ended);
        }
        let phase = status.phase.unwrap_or(Phase::Initializing);
        for event in &decision.events {
            publish_in(
                ctx,
                canary,
                phase,
                event.warning,
                event.reason.as_str(),
                &event.message,
            )
            .await;
        }
        for notice in &decision.notices {
            let problems = ctx.notifier.alert(
                canary,
                obs.settings.as_ref(),
                notice,
                &ctx.alert_providers,
                &ctx.secrets,
            );
            for p in problems {
                publish_in(ctx, canary, phase, true, "NotificationFailed", &p).await;
            }
        }
    }
    let entered = (status.phase != old.phase)
        .then_some(status.phase)
        .flatten();
    ctx.metrics.observe_canary(
        &canary.name_any(),
        &canary.namespace().unwrap_or_default(),
        status.phase,
        status.canary_weight,
        entered,
    );
    match acted {
        Ok(_) => {
            let after = spread(decision.requeue_after);
            ctx.schedule(&canary_ref(canary), after);
            Ok(Action::requeue(after))
        }
        Err(e) if failure(&e) == ActFailure::Transient => Err(e),
        // Persistent: said in the status; the watch brings the fix (a spec or object change) sooner.
        Err(_) => Ok(Action::requeue(Duration::from_secs(60))),
    }
}

/// Decides the tick, gathering the evidence the core asks for (checks, webhook calls) as it asks.
async fn decide_gathering(ctx: &Context, canary: &Canary, mut observed: Observed) -> Decision {
    loop {
        match decide(&observed) {
            Outcome::Act(d) => return *d,
            Outcome::Need(Need::Checks) if observed.checks.is_none() => {
                let at = observed.now.as_millisecond() as f64 / 1000.0;
                let round = ctx.checks.run(canary, at).await;
                ctx.metrics.check_rounds.inc();
                ctx.metrics.observe_checks(
                    &canary.name_any(),
                    &canary.namespace().unwrap_or_default(),
                    &round.results,
                    &round.evidence,
                );
                observed.checks = Some(round);
            }
            Outcome::Need(Need::Hooks(kind)) if !observed.hooks.contains_key(&kind) => {
                let current = observed.status.phase.unwrap_or(Phase::Initializing);
                let payload = hook_payload(canary, &observed.target.revision, kind, current, None);
                let hooks = canary
                    .spec
                    .active_analysis()
                    .map(|a| a.webhooks.as_slice())
                    .unwrap_or_default();
                let calls = ctx.webhooks.run(hooks, kind, &payload).await;
                for call in &calls {
                    ctx.metrics.webhook_called(kind, call.passed);
                }
                observed.hooks.insert(kind, calls);
            }
            // The core asks for each piece of evidence once per tick; a second ask is a bug in it.
            Outcome::Need(need) => unreachable!("the decision core asked twice for {need:?}"),
        }
    }
}

/// What a webhook of `kind` is sent.
fn hook_payload(
    canary: &Canary,
    revision: &str,
    kind: HookType,
    current: Phase,
    ended: Option<Phase>,
) -> Payload {
    Payload {
        name: canary.name_any(),
        namespace: canary.namespace().unwrap_or_default(),
        phase: payload_phase(kind, current, ended),
        checksum: revision.to_string(),
        metadata: Default::default(),
    }
}

/// The post-rollout webhooks, off the reconcile path: the analysis has ended, and nothing waits on them.
/// A failure is told in an event, as Flagger logs it.
fn post_rollout(ctx: &Context, canary: &Canary, status: &CanaryStatus, ended: Phase) {
    let Some(hooks) = canary.spec.active_analysis().map(|a| a.webhooks.clone()) else {
        return;
    };
    if !hooks.iter().any(|h| h.kind() == HookType::PostRollout) {
        return;
    }
    let revision = status.last_applied_spec.clone().unwrap_or_default();
    let payload = hook_payload(canary, &revision, HookType::PostRollout, ended, Some(ended));
    let (caller, recorder, metrics) = (
        ctx.webhooks.clone(),
        ctx.recorder.clone(),
        ctx.metrics.clone(),
    );
    let regarding = canary.object_ref(&());
    tokio::spawn(async move {
        for call in caller.run(&hooks, HookType::PostRollout, &payload).await {
            metrics.webhook_called(HookType::PostRollout, call.passed);
            if !call.passed {
                let msg = format!(
                    "Post-rollout webhook {} failed: {}",
                    call.name, call.message
                );
                record(&recorder, &metrics, &regarding, true, "WebhookFailed", &msg).await;
            }
        }
    });
}

async fn report_blocked(ctx: &Context, canary: &Canary, b: &Blocked) -> Result<Action, Error> {
    let old = canary.status.clone().unwrap_or_default();
    let (reason, stalled) = match b {
        Blocked::TargetNotFound { .. } => ("TargetNotFound", false),
        Blocked::UnsupportedKind { .. } => ("NotSupported", true),
        Blocked::AutoscalerNotFound { .. } => ("AutoscalerNotFound", false),
        Blocked::Workload(_) => ("InvalidTarget", true),
    };
    let message = b.to_string();
    let now = k8s_openapi::jiff::Timestamp::now();
    let status = blocked(
        old.clone(),
        reason,
        stalled,
        &message,
        now,
        canary.metadata.generation.unwrap_or(0),
    );
    if status != old {
        publish(ctx, canary, true, reason, &message).await;
    }
    write_status(ctx, canary, &old, &status).await?;
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// The one status write of a tick, skipped when nothing changed.
async fn write_status(
    ctx: &Context,
    canary: &Canary,
    old: &CanaryStatus,
    status: &CanaryStatus,
) -> Result<(), Error> {
    if status == old {
        return Ok(());
    }
    let api: Api<Canary> =
        Api::namespaced(ctx.client.clone(), &canary.namespace().unwrap_or_default());
    let patch = json!({"apiVersion": "serin.dev/v1beta1", "kind": "Canary", "status": status});
    let written = api
        .patch_status(
            &canary.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    ctx.metrics.api_writes.inc();
    if let Some(rv) = written.resource_version() {
        ctx.wrote(&canary_ref(canary), &rv);
    }
    Ok(())
}

/// Whether the cache's copy of a Canary is older than the status this replica last wrote. Our own write
/// triggers the next reconcile (through the route's watch, say) before the Canary's watch brings the new
/// status: acting on the old one would take a step again. resourceVersions are compared only as the
/// integers the API server's etcd gives them; anything else counts as fresh.
pub fn stale(cached: Option<&str>, written: Option<&str>) -> bool {
    match (
        cached.map(str::parse::<u64>),
        written.map(str::parse::<u64>),
    ) {
        (Some(Ok(c)), Some(Ok(w))) => c < w,
        _ => false,
    }
}

pub async fn publish(ctx: &Context, canary: &Canary, warning: bool, reason: &str, message: &str) {
    let phase = canary
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .unwrap_or(Phase::Initializing);
    publish_in(ctx, canary, phase, warning, reason, message).await;
}

/// Records an event, and sends it to the Canary's event webhooks with the phase it is in.
pub async fn publish_in(
    ctx: &Context,
    canary: &Canary,
    phase: Phase,
    warning: bool,
    reason: &str,
    message: &str,
) {
    ctx.notifier.event(canary, phase, warning, reason, message);
    let regarding = canary.object_ref(&());
    record(
        &ctx.recorder,
        &ctx.metrics,
        &regarding,
        warning,
        reason,
        message,
    )
    .await;
}

/// Records an event, counted as a write; a failure to record it is only logged (nothing waits on events).
pub(super) async fn record(
    recorder: &Events,
    metrics: &Metrics,
    regarding: &ObjectReference,
    warning: bool,
    reason: &str,
    message: &str,
) {
    metrics.api_writes.inc();
    if let Err(e) = recorder.publish(regarding, warning, reason, message).await {
        warn!(error = %e, reason, "publishing an event");
    }
}

/// A resync (a minute or more away) moved later by up to a tenth, so Canaries that settled together (a
/// restart, a fleet applied at once) do not all come due in the same moment ever after; an analysis tick
/// keeps its time.
fn spread(after: Duration) -> Duration {
    if after < Duration::from_secs(60) {
        return after;
    }
    // The clock's nanoseconds are random enough to spread by, without a generator.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    after + after.mul_f64(f64::from(nanos % 1000) / 10_000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_back_off_exponentially_to_five_minutes() {
        let delays: Vec<u64> = (1..=11).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn a_cache_older_than_our_last_write_is_stale() {
        assert!(stale(Some("41"), Some("42")));
        assert!(!stale(Some("42"), Some("42")));
        assert!(
            !stale(Some("43"), Some("42")),
            "changed since by someone else"
        );
        assert!(!stale(Some("41"), None));
        assert!(!stale(Some("opaque"), Some("42")));
    }

    #[test]
    fn only_refusals_for_good_are_reported_in_the_status() {
        let api = |code: u16| {
            Error::Kube(kube::Error::Api(Box::new(kube::core::Status {
                code,
                ..kube::core::Status::default()
            })))
        };
        assert_eq!(failure(&api(403)), ActFailure::Rejected);
        assert_eq!(failure(&api(422)), ActFailure::Rejected);
        for code in [404, 409, 429, 500, 503] {
            assert_eq!(failure(&api(code)), ActFailure::Transient, "{code}");
        }
    }

    #[test]
    fn resyncs_are_spread_and_ticks_keep_their_time() {
        assert_eq!(spread(Duration::from_secs(5)), Duration::from_secs(5));
        let resyncs: Vec<Duration> = (0..50).map(|_| spread(Duration::from_secs(300))).collect();
        assert!(
            resyncs
                .iter()
                .all(|d| *d >= Duration::from_secs(300) && *d <= Duration::from_secs(330))
        );
        assert!(resyncs.iter().any(|d| *d != resyncs[0]), "{resyncs:?}");
    }
}
