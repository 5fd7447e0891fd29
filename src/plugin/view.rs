//! What `kubectl serin` prints: pure functions from a Canary and the objects around it to text, so every
//! view is tested without a server (tests/fixtures/plugin/ holds the expected screens).

use comfy_table::presets::NOTHING;
use comfy_table::{Cell, ContentArrangement, Table};
use k8s_openapi::jiff::Timestamp;

use crate::api::analysis::ThresholdRange;
use crate::api::{Canary, CheckVerdict, Phase};
use crate::decision::ControllerDefaults;
use crate::decision::settings::{Settings, Steps, Strategy};
use crate::statistics::sequential::Verdict;
use crate::vocabulary::Traffic;

/// One of the Canary's workloads as the API server holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadLine {
    /// "target" or "primary".
    pub role: &'static str,
    pub kind: String,
    pub name: String,
    pub image: String,
    pub ready: i32,
    pub desired: i32,
}

/// One event about the Canary.
#[derive(Debug, Clone, PartialEq)]
pub struct EventLine {
    pub at: Timestamp,
    pub reason: String,
    pub note: String,
    pub count: i32,
}

/// What the one-canary view shows beside the Canary itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Related {
    /// The routing object that carries the split ("HTTPRoute podinfo") and the traffic it sends now.
    pub route: Option<(String, Option<Traffic>)>,
    pub workloads: Vec<WorkloadLine>,
    /// Newest last.
    pub events: Vec<EventLine>,
}

/// How long ago, in the largest unit that fits ("12s", "3m", "5h", "2d").
pub fn age(then: Timestamp, now: Timestamp) -> String {
    let s = now.as_second().saturating_sub(then.as_second()).max(0);
    match s {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// A symbol for the phase, so a list reads at a glance (✔ done, ✖ rolled back, ◐ under way, ⏸ held).
pub fn phase_icon(phase: Option<Phase>, paused: bool) -> &'static str {
    match phase {
        _ if paused => "⏸",
        Some(Phase::Succeeded | Phase::Initialized) => "✔",
        Some(Phase::Failed) => "✖",
        Some(Phase::Waiting | Phase::WaitingPromotion) => "⏸",
        Some(Phase::Terminated | Phase::Terminating) => "·",
        Some(_) => "◐",
        None => "?",
    }
}

fn phase_name(phase: Option<Phase>) -> String {
    phase.map_or("Unknown".to_string(), |p| format!("{p:?}"))
}

/// The weights a canary steps through, and the weight it is promoted at (None for blue/green and A/B).
fn steps(canary: &Canary) -> Option<(Vec<i32>, i32)> {
    let settings = Settings::resolve(
        &canary.spec,
        &ControllerDefaults {
            provider: canary
                .spec
                .provider
                .unwrap_or(crate::api::Provider::GatewayApi),
            // The strategy alone is wanted: an interval below the controller's minimum is its business.
            min_interval: std::time::Duration::ZERO,
        },
    )
    .ok()?;
    match settings.strategy {
        Strategy::Canary { steps, max_weight } => {
            let weights = match steps {
                Steps::Through(w) => w.into_iter().filter(|w| *w <= max_weight).collect(),
                // Flagger's CRD refuses a step below 1; without that rule a 0 would never end.
                Steps::By(step) if step < 1 => return None,
                Steps::By(step) => (1..)
                    .map(|i| (i * step).min(max_weight))
                    .take_while({
                        let mut done = false;
                        move |w| !std::mem::replace(&mut done, *w >= max_weight)
                    })
                    .collect(),
            };
            Some((weights, max_weight))
        }
        _ => None,
    }
}

/// A bar of `width` cells for `weight` of 100, with `|` at the promotion weight: `███░░░░|░░░`.
pub fn weight_bar(weight: i32, max_weight: i32, width: usize) -> String {
    let cells = |w: i32| ((w.clamp(0, 100) as usize) * width).div_ceil(100);
    let (filled, mark) = (cells(weight), cells(max_weight));
    (0..width)
        .map(|i| match i {
            i if i < filled => '█',
            i if i + 1 == mark && mark < width => '|',
            _ => '░',
        })
        .collect()
}

fn range_text(range: &Option<ThresholdRange>) -> String {
    match range {
        Some(ThresholdRange {
            min: Some(lo),
            max: Some(hi),
        }) => format!("{lo} .. {hi}"),
        Some(ThresholdRange {
            min: Some(lo),
            max: None,
        }) => format!(">= {lo}"),
        Some(ThresholdRange {
            min: None,
            max: Some(hi),
        }) => format!("<= {hi}"),
        _ => "-".to_string(),
    }
}

fn value_text(value: Option<f64>) -> String {
    match value {
        Some(v) if v.fract() == 0.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.2}"),
        None => "-".to_string(),
    }
}

/// Failed checks that roll the canary back (Flagger: 0 or absent means 1).
fn threshold(canary: &Canary) -> i32 {
    canary
        .spec
        .analysis
        .as_ref()
        .map_or(0, |a| a.threshold)
        .max(1)
}

/// The list: one row per Canary.
pub fn table(canaries: &[Canary], all_namespaces: bool, now: Timestamp) -> String {
    let mut table = Table::new();
    table
        .load_preset(NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled);
    let mut header = vec![
        "NAME",
        "PHASE",
        "WEIGHT",
        "",
        "FAILED",
        "JUDGE",
        "LAST CHANGE",
    ];
    if all_namespaces {
        header.insert(0, "NAMESPACE");
    }
    table.set_header(header);
    for canary in canaries {
        let status = canary.status.clone().unwrap_or_default();
        let paused = status.manual.as_ref().is_some_and(|m| m.paused);
        let max = steps(canary).map_or(100, |(_, max)| max);
        let threshold = threshold(canary);
        let judge = status
            .evidence
            .iter()
            .map(|e| format!("{} {:?}", e.name, e.verdict))
            .collect::<Vec<_>>()
            .join(", ");
        let mut row = vec![
            canary.metadata.name.clone().unwrap_or_default(),
            format!(
                "{} {}",
                phase_icon(status.phase, paused),
                phase_name(status.phase)
            ),
            format!("{}%", status.canary_weight),
            weight_bar(status.canary_weight, max, 10),
            format!("{}/{threshold}", status.failed_checks),
            if judge.is_empty() {
                "-".to_string()
            } else {
                judge
            },
            status
                .last_transition_time
                .as_ref()
                .map_or("-".to_string(), |t| age(t.0, now)),
        ];
        if all_namespaces {
            row.insert(0, canary.metadata.namespace.clone().unwrap_or_default());
        }
        table.add_row(row);
    }
    trim_lines(&table.to_string())
}

fn trim_lines(text: &str) -> String {
    let mut out: String = text
        .lines()
        .map(|l| format!("{}\n", l.trim_end()))
        .collect();
    if out.is_empty() {
        out.push('\n');
    }
    out
}

/// One line for logs and pipes (`status`, and `watch` without a terminal): phase, weight, checks.
pub fn status_line(canary: &Canary) -> String {
    let status = canary.status.clone().unwrap_or_default();
    let mut line = format!(
        "{} weight {}% failed checks {}",
        phase_name(status.phase),
        status.canary_weight,
        status.failed_checks
    );
    for check in &status.checks {
        line.push_str(&format!(
            "; {} {} ({:?})",
            check.name,
            value_text(check.value),
            check.verdict
        ));
    }
    for e in &status.evidence {
        line.push_str(&format!(
            "; {} e-value {:.2} of {:.0} ({:?})",
            e.name, e.e_value, e.fail_at, e.verdict
        ));
    }
    line
}

/// The one-canary screen.
pub fn detail(canary: &Canary, related: &Related, now: Timestamp) -> String {
    let status = canary.status.clone().unwrap_or_default();
    let paused = status.manual.as_ref().is_some_and(|m| m.paused);
    let mut out = String::new();
    let name = canary.metadata.name.clone().unwrap_or_default();
    let ns = canary.metadata.namespace.clone().unwrap_or_default();
    let target = &canary.spec.target_ref;
    let provider = canary
        .spec
        .provider
        .map_or("(the controller's default)".to_string(), |p| p.to_string());
    let kind = format!(
        "{:?}",
        target
            .kind
            .unwrap_or(crate::api::canary::TargetKind::Deployment)
    );
    out.push_str(&format!(
        "Canary {ns}/{name}: {kind} {}, provider {provider}\n",
        target.name
    ));
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
    let why = ready
        .and_then(|c| c.message.clone())
        .map(|m| format!(": {m}"))
        .unwrap_or_default();
    out.push_str(&format!(
        "Phase     {} {}{}{why}\n",
        phase_icon(status.phase, paused),
        phase_name(status.phase),
        if paused {
            " (paused: serin.dev/pause)"
        } else {
            ""
        }
    ));
    match steps(canary) {
        Some((weights, max)) => {
            let marks = weights
                .iter()
                .map(|w| w.to_string())
                .collect::<Vec<_>>()
                .join(" ");
            out.push_str(&format!(
                "Weight    {:>3}% {} promoted at {max}% (steps {marks})\n",
                status.canary_weight,
                weight_bar(status.canary_weight, max, 20)
            ));
        }
        None => {
            let iterations = canary
                .spec
                .analysis
                .as_ref()
                .and_then(|a| a.iterations)
                .unwrap_or(0);
            out.push_str(&format!("Iteration {}/{iterations}\n", status.iterations));
        }
    }
    if let Some((route, traffic)) = &related.route {
        let said = match traffic {
            Some(Traffic::Split(w)) => {
                let sync = if w.canary == status.canary_weight {
                    "in sync"
                } else {
                    "NOT in sync with the status"
                };
                format!("primary {} / canary {} ({sync})", w.primary, w.canary)
            }
            Some(Traffic::Matched) => "matching requests to the canary (A/B)".to_string(),
            Some(Traffic::Mirrored) => {
                "all to the primary, copies to the canary (mirroring)".to_string()
            }
            None => "unreadable".to_string(),
        };
        out.push_str(&format!("Route     {route}: {said}\n"));
    }
    let threshold = threshold(canary);
    let step_age = status
        .last_step_time
        .as_ref()
        .map(|t| format!(", last step {} ago", age(t.0, now)))
        .unwrap_or_default();
    out.push_str(&format!(
        "Failed    {}/{threshold} checks{step_age}\n",
        status.failed_checks
    ));

    if !status.checks.is_empty() {
        out.push_str("\nChecks\n");
        out.push_str(&checks_table(&status.checks));
    }
    if !status.evidence.is_empty() {
        out.push_str("\nCompared with the primary (sequential judge)\n");
        for e in &status.evidence {
            let verdict = match e.verdict {
                Verdict::Pass => "✔ proven no worse",
                Verdict::Fail => "✖ regression proven",
                Verdict::Hold => "… not proven yet",
            };
            out.push_str(&format!(
                "  {}: {verdict}; e-value {:.2} of {:.0}; {} canary requests\n    {}\n",
                e.name, e.e_value, e.fail_at, e.canary_requests, e.message
            ));
        }
    }
    if !status.webhooks.is_empty() {
        out.push_str("\nWebhooks\n");
        for w in &status.webhooks {
            out.push_str(&format!(
                "  {} ({:?}): {:?} {} ago: {}\n",
                w.name,
                w.hook_type,
                w.result,
                age(w.last_call_time.0, now),
                w.message
            ));
        }
    }
    if !related.workloads.is_empty() {
        out.push_str("\nObjects\n");
        for w in &related.workloads {
            out.push_str(&format!(
                "  {:<8}{} {}: {} ready of {}, {}\n",
                w.role, w.kind, w.name, w.ready, w.desired, w.image
            ));
        }
    }
    if !related.events.is_empty() {
        out.push_str("\nEvents\n");
        for e in related.events.iter().rev().take(8).rev() {
            let times = if e.count > 1 {
                format!(" (x{})", e.count)
            } else {
                String::new()
            };
            out.push_str(&format!(
                "  {:>4} {}{times}: {}\n",
                age(e.at, now),
                e.reason,
                e.note
            ));
        }
    }
    out
}

/// Each check as a row: value, range, verdict, message.
fn checks_table(checks: &[crate::api::CheckStatus]) -> String {
    let mut table = Table::new();
    table
        .load_preset(NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled);
    table.set_header(vec!["  NAME", "VALUE", "RANGE", "VERDICT", "MESSAGE"]);
    for check in checks {
        let verdict = match check.verdict {
            CheckVerdict::Passed => "✔ Passed",
            CheckVerdict::Failed => "✖ Failed",
            CheckVerdict::NoData => "? NoData",
            CheckVerdict::Error => "! Error",
        };
        table.add_row(vec![
            Cell::new(format!("  {}", check.name)),
            Cell::new(value_text(check.value)),
            Cell::new(range_text(&check.threshold_range)),
            Cell::new(verdict),
            Cell::new(check.message.clone().unwrap_or_default()),
        ]);
    }
    trim_lines(&table.to_string())
}

/// `query`: the checks as they ran `ago` seconds ago.
pub fn checks_now(checks: &[crate::api::CheckStatus], ago: f64) -> String {
    format!(
        "Checks as of {:.0}s ago\n{}",
        ago.max(0.0),
        checks_table(checks)
    )
}
