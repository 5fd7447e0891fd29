//! Each notifier's payload, as Flagger sends it (Slack, Discord, Rocket, Teams MessageCard, Google Chat
//! cards v1), key order and Go's escaping of `<`, `>` and `&` included, so a Flagger user's channel looks
//! the same; and the current formats Flagger lacks: a Teams Adaptive Card for Workflows URLs, Google Chat
//! cardsV2.

use serde::Serialize;

use crate::api::alert_provider::{AlertFormat, AlertProviderType};
use crate::api::analysis::Severity;

/// One alert, notifier-neutral.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub canary: String,
    pub namespace: String,
    pub text: String,
    pub severity: Severity,
    /// (title, value), in order.
    pub fields: Vec<(String, String)>,
}

impl Message {
    fn subject(&self) -> String {
        format!("{}.{}", self.canary, self.namespace)
    }
}

/// The shape a provider's payload takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Slack,
    /// Slack's shape, to Discord's Slack-compatible endpoint (the URL ends in /slack).
    Discord,
    /// Slack's shape with Rocket.Chat's colours.
    Rocket,
    TeamsMessageCard,
    TeamsAdaptiveCard,
    GChatCards,
    GChatCardsV2,
}

/// The shape for a provider: its `format` if given, else by type (and, for Teams, by URL: Workflows URLs
/// take Adaptive Cards, Office 365 connector URLs MessageCards).
pub fn shape(kind: AlertProviderType, format: Option<AlertFormat>, url: &str) -> Shape {
    match (kind, format) {
        (AlertProviderType::Msteams, Some(AlertFormat::MessageCard)) => Shape::TeamsMessageCard,
        (AlertProviderType::Msteams, Some(AlertFormat::AdaptiveCard)) => Shape::TeamsAdaptiveCard,
        (AlertProviderType::Msteams, _) if is_workflows_url(url) => Shape::TeamsAdaptiveCard,
        (AlertProviderType::Msteams, _) => Shape::TeamsMessageCard,
        (AlertProviderType::Gchat, Some(AlertFormat::Cards)) => Shape::GChatCards,
        (AlertProviderType::Gchat, _) => Shape::GChatCardsV2,
        (AlertProviderType::Slack, _) => Shape::Slack,
        (AlertProviderType::Discord, _) => Shape::Discord,
        (AlertProviderType::Rocket, _) => Shape::Rocket,
    }
}

/// Power Automate / Logic Apps workflow triggers, which replace Office 365 connectors.
fn is_workflows_url(url: &str) -> bool {
    let host = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split(['/', '?', ':'])
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    [
        "api.powerautomate.com",
        "api.powerplatform.com",
        "flow.microsoft.com",
        "logic.azure.com",
    ]
    .iter()
    .any(|d| host == *d || host.ends_with(&format!(".{d}")))
}

/// Where the payload goes: Discord's Slack-compatible endpoint is the webhook URL with /slack.
pub fn address(shape: Shape, url: &str) -> String {
    match shape {
        Shape::Discord if !url.trim_end_matches('/').ends_with("/slack") => {
            format!("{}/slack", url.trim_end_matches('/'))
        }
        _ => url.to_string(),
    }
}

#[derive(Serialize)]
struct SlackPayload<'a> {
    channel: &'a str,
    username: &'a str,
    icon_url: &'a str,
    icon_emoji: &'a str,
    attachments: Vec<SlackAttachment<'a>>,
}

#[derive(Serialize)]
struct SlackAttachment<'a> {
    color: &'a str,
    author_name: String,
    text: &'a str,
    mrkdwn_in: [&'a str; 1],
    fields: Vec<SlackField<'a>>,
}

#[derive(Serialize)]
struct SlackField<'a> {
    title: &'a str,
    value: &'a str,
    short: bool,
}

#[derive(Serialize)]
struct MessageCard<'a> {
    #[serde(rename = "@type")]
    kind: &'a str,
    #[serde(rename = "@context")]
    context: &'a str,
    #[serde(rename = "themeColor")]
    theme_color: &'a str,
    summary: String,
    sections: [MessageCardSection<'a>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MessageCardSection<'a> {
    activity_title: &'a str,
    activity_subtitle: String,
    facts: Vec<NameValue<'a>>,
}

#[derive(Serialize)]
struct NameValue<'a> {
    name: &'a str,
    value: &'a str,
}

#[derive(Serialize)]
struct GChatPayload {
    cards: [GChatCard; 1],
}

#[derive(Serialize)]
struct GChatCard {
    header: GChatHeader,
    sections: Vec<GChatSection>,
}

#[derive(Serialize)]
struct GChatHeader {
    title: &'static str,
    subtitle: String,
    #[serde(rename = "imageUrl")]
    image_url: &'static str,
}

#[derive(Serialize)]
struct GChatSection {
    widgets: [GChatWidget; 1],
}

#[derive(Serialize)]
struct GChatWidget {
    #[serde(rename = "textParagraph")]
    text_paragraph: GChatText,
}

#[derive(Serialize)]
struct GChatText {
    text: String,
}

/// The payload's bytes.
pub fn render(shape: Shape, username: &str, channel: &str, m: &Message) -> Vec<u8> {
    let error = m.severity == Severity::Error;
    let json = match shape {
        Shape::Slack | Shape::Discord | Shape::Rocket => {
            let color = match (shape, error) {
                (Shape::Rocket, true) => "#FF0000",
                (Shape::Rocket, false) => "#0076D7",
                (_, true) => "danger",
                (_, false) => "good",
            };
            serde_json::to_string(&SlackPayload {
                channel,
                username,
                icon_url: "",
                icon_emoji: ":rocket:",
                attachments: vec![SlackAttachment {
                    color,
                    author_name: m.subject(),
                    text: &m.text,
                    mrkdwn_in: ["text"],
                    fields: m
                        .fields
                        .iter()
                        .map(|(t, v)| SlackField {
                            title: t,
                            value: v,
                            short: false,
                        })
                        .collect(),
                }],
            })
        }
        Shape::TeamsMessageCard => serde_json::to_string(&MessageCard {
            kind: "MessageCard",
            context: "http://schema.org/extensions",
            theme_color: if error { "FF0000" } else { "0076D7" },
            summary: m.subject(),
            sections: [MessageCardSection {
                activity_title: &m.text,
                activity_subtitle: m.subject(),
                facts: m
                    .fields
                    .iter()
                    .map(|(n, v)| NameValue { name: n, value: v })
                    .collect(),
            }],
        }),
        Shape::GChatCards => {
            let grey = |s: &str| format!("<font color=#848484><strong>{s}</strong></font>");
            let mut sections = vec![GChatSection {
                widgets: [GChatWidget {
                    text_paragraph: GChatText {
                        text: grey(&m.text),
                    },
                }],
            }];
            sections.extend(m.fields.iter().map(|(n, v)| GChatSection {
                widgets: [GChatWidget {
                    text_paragraph: GChatText {
                        text: format!("{n}<br>{}", grey(v)),
                    },
                }],
            }));
            serde_json::to_string(&GChatPayload {
                cards: [GChatCard {
                    header: GChatHeader {
                        title: "Flagger",
                        subtitle: m.subject(),
                        image_url: "https://flagger.app/favicon.png",
                    },
                    sections,
                }],
            })
        }
        Shape::TeamsAdaptiveCard => Ok(adaptive_card(m, error).to_string()),
        Shape::GChatCardsV2 => Ok(cards_v2(m, error).to_string()),
    };
    go_escape(&json.unwrap_or_default()).into_bytes()
}

/// An Adaptive Card 1.4 in the message envelope Teams Workflows take.
fn adaptive_card(m: &Message, error: bool) -> serde_json::Value {
    let facts: Vec<serde_json::Value> = m
        .fields
        .iter()
        .map(|(t, v)| serde_json::json!({"title": t, "value": v}))
        .collect();
    let mut text = serde_json::json!({"type": "TextBlock", "text": m.text, "wrap": true});
    if error {
        text["color"] = "Attention".into();
    }
    serde_json::json!({"type": "message", "attachments": [{
        "contentType": "application/vnd.microsoft.card.adaptive",
        "content": {
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "type": "AdaptiveCard",
            "version": "1.4",
            "body": [
                {"type": "TextBlock", "text": m.subject(), "weight": "Bolder", "size": "Medium", "wrap": true},
                text,
                {"type": "FactSet", "facts": facts},
            ],
        },
    }]})
}

/// Google Chat cardsV2: a header, the message, the fields as labelled texts.
fn cards_v2(m: &Message, error: bool) -> serde_json::Value {
    let message = if error {
        format!("<font color=\"#d93025\"><b>{}</b></font>", m.text)
    } else {
        format!("<b>{}</b>", m.text)
    };
    let mut sections = vec![serde_json::json!({"widgets": [{"textParagraph": {"text": message}}]})];
    if !m.fields.is_empty() {
        let widgets: Vec<serde_json::Value> = m
            .fields
            .iter()
            .map(|(t, v)| serde_json::json!({"decoratedText": {"topLabel": t, "text": v, "wrapText": true}}))
            .collect();
        sections.push(serde_json::json!({"widgets": widgets}));
    }
    serde_json::json!({"cardsV2": [{"cardId": "serin", "card": {
        "header": {"title": "Serin", "subtitle": m.subject()},
        "sections": sections,
    }}]})
}

/// Escapes `<`, `>`, `&`, U+2028 and U+2029 as Go's encoding/json does (they can only occur inside JSON
/// strings, so the document means the same).
fn go_escape(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests;
