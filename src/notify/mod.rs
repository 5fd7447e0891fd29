//! Alerts and event webhooks: who gets each of a Canary's notices (its `analysis.alerts` by severity, or
//! the controller's default Slack or Teams target), in each notifier's shape, delivered off the reconcile
//! path. Addresses and tokens come only from Secrets (or files and the environment for the defaults) and are
//! never logged.

pub mod delivery;
pub mod payload;

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use secrecy::SecretString;

use crate::api::alert_provider::AlertProviderType;
use crate::api::analysis::{HookType, Severity};
use crate::api::{AlertProvider, Canary, Phase};
use crate::decision::Notice;
use crate::decision::settings::{Settings, Steps, Strategy};
use crate::webhooks::Payload;
use delivery::{Delivery, Queue};
use payload::{Message, address, render, shape};

/// The controller's default targets, for Canaries without `analysis.alerts` (Flagger's -slack-* and
/// -msteams-* flags: Teams wins when both are set) and without `event` webhooks.
#[derive(Clone, Default, Debug)]
pub struct Defaults {
    pub slack: Option<DefaultSlack>,
    pub msteams: Option<DefaultTeams>,
    pub event_webhook: Option<SecretString>,
    /// Adds a Cluster field to every alert.
    pub cluster_name: Option<String>,
}

#[derive(Clone, Debug)]
pub struct DefaultSlack {
    pub url: SecretString,
    pub token: Option<SecretString>,
    pub proxy: Option<String>,
    pub username: String,
    pub channel: String,
}

#[derive(Clone, Debug)]
pub struct DefaultTeams {
    pub url: SecretString,
    pub proxy: Option<String>,
}

pub struct Notifier {
    queue: Arc<Queue>,
    defaults: Defaults,
}

impl Notifier {
    pub fn new(queue: Arc<Queue>, defaults: Defaults) -> Self {
        Notifier { queue, defaults }
    }

    /// Queues `notice` for every target that receives it; returns what kept a target from it (a missing
    /// AlertProvider or Secret), for the Canary's events.
    pub fn alert(
        &self,
        canary: &Canary,
        settings: Option<&Settings>,
        notice: &Notice,
        providers: &Store<AlertProvider>,
        secrets: &Store<Secret>,
    ) -> Vec<String> {
        let ns = canary.namespace().unwrap_or_default();
        let mut fields = Vec::new();
        if let Some(cluster) = &self.defaults.cluster_name {
            fields.push(("Cluster".to_string(), cluster.clone()));
        }
        if notice.settings
            && let Some(s) = settings
        {
            fields.extend(settings_fields(canary, s));
        }
        fields.extend(notice.details.iter().cloned());
        let message = Message {
            canary: canary.name_any(),
            namespace: ns.clone(),
            text: notice.message.clone(),
            severity: notice.severity,
            fields,
        };
        let regarding = canary.object_ref(&());
        let alerts = canary
            .spec
            .active_analysis()
            .map(|a| a.alerts.as_slice())
            .unwrap_or_default();
        let mut problems = Vec::new();
        if alerts.is_empty() {
            if let Some(t) = &self.defaults.msteams {
                let shape = shape(
                    AlertProviderType::Msteams,
                    None,
                    secrecy::ExposeSecret::expose_secret(&t.url),
                );
                self.queue.push(Delivery {
                    provider: "msteams",
                    target: "the default Teams target".into(),
                    url: t.url.clone(),
                    token: None,
                    proxy: t.proxy.clone(),
                    body: render(shape, "", "", &message),
                    severity: notice.severity,
                    accept_up_to: 299,
                    regarding,
                });
            } else if let Some(s) = &self.defaults.slack {
                self.queue.push(Delivery {
                    provider: "slack",
                    target: "the default Slack target".into(),
                    url: s.url.clone(),
                    token: s.token.clone(),
                    proxy: s.proxy.clone(),
                    body: render(payload::Shape::Slack, &s.username, &s.channel, &message),
                    severity: notice.severity,
                    accept_up_to: 299,
                    regarding,
                });
            }
            return problems;
        }
        for alert in alerts {
            if !alert
                .severity
                .unwrap_or(Severity::Info)
                .receives(notice.severity)
            {
                continue;
            }
            let pns = alert
                .provider_ref
                .namespace
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| ns.clone());
            let name = &alert.provider_ref.name;
            let who = format!("AlertProvider {pns}/{name} (alert {})", alert.name);
            let Some(provider) = providers.get(&ObjectRef::new(name).within(&pns)) else {
                problems.push(format!("{who} not found"));
                continue;
            };
            let spec = &provider.spec;
            let mut url = spec.address.clone();
            let mut token = None;
            let mut proxy = spec.proxy.clone();
            if let Some(r) = &spec.secret_ref {
                let Some(secret) = secrets.get(&ObjectRef::new(&r.name).within(&pns)) else {
                    problems.push(format!("{who}: Secret {pns}/{} not found", r.name));
                    continue;
                };
                let data = crate::metrics::secret_data(&secret);
                let key = |k: &str| {
                    data.get(k).map(|v| {
                        String::from_utf8_lossy(secrecy::ExposeSecret::expose_secret(v))
                            .trim()
                            .to_string()
                    })
                };
                match key("address") {
                    Some(a) => url = Some(a),
                    None => {
                        problems.push(format!("{who}: Secret {pns}/{} has no key address", r.name));
                        continue;
                    }
                }
                token = key("token").filter(|t| !t.is_empty());
                proxy = proxy.or(key("proxy"));
            }
            let Some(url) = url.filter(|u| !u.is_empty()) else {
                problems.push(format!("{who} has no address"));
                continue;
            };
            let shape = shape(spec.provider_type, spec.format, &url);
            let username = spec.username.as_deref().unwrap_or("flagger");
            let channel = spec.channel.as_deref().unwrap_or("general");
            // Discord and Rocket take no token (as Flagger).
            let token = match spec.provider_type {
                AlertProviderType::Discord | AlertProviderType::Rocket => None,
                _ => token.map(SecretString::from),
            };
            self.queue.push(Delivery {
                provider: spec.provider_type.as_str(),
                target: who,
                url: SecretString::from(address(shape, &url)),
                token,
                proxy,
                body: render(shape, username, channel, &message),
                severity: notice.severity,
                accept_up_to: 299,
                regarding: regarding.clone(),
            });
        }
        problems
    }

    /// Queues an event for the Canary's `event` webhooks (or the default event webhook), with Flagger's
    /// payload; Serin's extra keys go inside `metadata`, all strings.
    pub fn event(&self, canary: &Canary, phase: Phase, warning: bool, reason: &str, message: &str) {
        let hooks: Vec<_> = canary
            .spec
            .active_analysis()
            .map(|a| {
                a.webhooks
                    .iter()
                    .filter(|h| h.kind() == HookType::Event)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let targets: Vec<(
            String,
            SecretString,
            std::collections::BTreeMap<String, String>,
        )> = if hooks.is_empty() {
            self.defaults
                .event_webhook
                .iter()
                .map(|u| {
                    (
                        "the default event webhook".to_string(),
                        u.clone(),
                        Default::default(),
                    )
                })
                .collect()
        } else {
            hooks
                .into_iter()
                .map(|h| {
                    (
                        format!("event webhook {}", h.name),
                        SecretString::from(h.url.clone()),
                        h.metadata.clone().unwrap_or_default(),
                    )
                })
                .collect()
        };
        if targets.is_empty() {
            return;
        }
        let status = canary.status.clone().unwrap_or_default();
        let now = k8s_openapi::jiff::Timestamp::now();
        for (target, url, extra) in targets {
            let ours = [
                ("eventMessage", message.to_string()),
                (
                    "eventType",
                    if warning { "Warning" } else { "Normal" }.to_string(),
                ),
                ("timestamp", now.as_millisecond().to_string()),
                ("eventReason", reason.to_string()),
                ("canaryWeight", status.canary_weight.to_string()),
                (
                    "revision",
                    status.last_applied_spec.clone().unwrap_or_default(),
                ),
            ];
            let payload = Payload {
                name: canary.name_any(),
                namespace: canary.namespace().unwrap_or_default(),
                phase,
                checksum: status.last_applied_spec.clone().unwrap_or_default(),
                metadata: ours.map(|(k, v)| (k.to_string(), v)).into(),
            }
            .with_metadata(Some(&extra));
            self.queue.push(Delivery {
                provider: "webhook",
                target,
                url,
                token: None,
                proxy: None,
                body: serde_json::to_vec(&payload).unwrap_or_default(),
                severity: if warning {
                    Severity::Warn
                } else {
                    Severity::Info
                },
                accept_up_to: 202,
                regarding: canary.object_ref(&()),
            });
        }
    }
}

/// Flagger's fields for its initialization and new-revision alerts: the target, the failed checks
/// threshold, the progress deadline and how traffic is routed.
pub fn settings_fields(canary: &Canary, s: &Settings) -> Vec<(String, String)> {
    let target = &canary.spec.target_ref;
    let kind = target
        .kind
        .map(|k| format!("{k:?}"))
        .unwrap_or_else(|| "Deployment".into());
    let routing = match &s.strategy {
        Strategy::AbTesting { .. } => "A/B Testing".to_string(),
        Strategy::BlueGreen { .. } => "Blue/Green".to_string(),
        Strategy::Canary {
            steps: Steps::By(step),
            max_weight,
        } => format!("Weight step: {step} max: {max_weight}"),
        Strategy::Canary {
            steps: Steps::Through(weights),
            max_weight,
        } => format!(
            "Weight steps: {} max: {max_weight}",
            weights
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ),
    };
    vec![
        (
            "Target".into(),
            format!(
                "{kind}/{}.{}",
                target.name,
                canary.namespace().unwrap_or_default()
            ),
        ),
        ("Failed checks threshold".into(), s.threshold.to_string()),
        (
            "Progress deadline".into(),
            format!("{}s", s.progress_deadline.as_secs()),
        ),
        ("Traffic routing".into(), routing),
    ]
}
