//! Golden payloads: Flagger's bytes for the same message (its notifier package's JSON, Go's escaping),
//! and Serin's current formats.

use super::*;

fn message(severity: Severity, fields: &[(&str, &str)]) -> Message {
    Message {
        canary: "podinfo".into(),
        namespace: "test".into(),
        text: "New revision detected, progressing canary analysis.".into(),
        severity,
        fields: fields
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
    }
}

fn text(b: Vec<u8>) -> String {
    String::from_utf8(b).unwrap()
}

const TARGET: &[(&str, &str)] = &[
    ("Target", "Deployment/podinfo.test"),
    ("Failed checks threshold", "5"),
];

#[test]
fn slack_is_flaggers_bytes() {
    let body = render(
        Shape::Slack,
        "flagger",
        "general",
        &message(Severity::Info, TARGET),
    );
    assert_eq!(
        text(body),
        r#"{"channel":"general","username":"flagger","icon_url":"","icon_emoji":":rocket:","attachments":[{"color":"good","author_name":"podinfo.test","text":"New revision detected, progressing canary analysis.","mrkdwn_in":["text"],"fields":[{"title":"Target","value":"Deployment/podinfo.test","short":false},{"title":"Failed checks threshold","value":"5","short":false}]}]}"#
    );
    let error = render(
        Shape::Slack,
        "flagger",
        "general",
        &message(Severity::Error, &[]),
    );
    assert!(text(error).contains(r#""color":"danger""#));
    let warn = render(
        Shape::Slack,
        "flagger",
        "general",
        &message(Severity::Warn, &[]),
    );
    assert!(
        text(warn).contains(r#""color":"good""#),
        "warnings show green, as Flagger's"
    );
    let none = render(
        Shape::Slack,
        "flagger",
        "general",
        &message(Severity::Info, &[]),
    );
    assert!(text(none).contains(r#""fields":[]"#));
}

#[test]
fn discord_and_rocket_are_slacks_shape() {
    let d = render(
        Shape::Discord,
        "flagger",
        "general",
        &message(Severity::Info, &[]),
    );
    assert_eq!(
        d,
        render(
            Shape::Slack,
            "flagger",
            "general",
            &message(Severity::Info, &[])
        )
    );
    assert_eq!(
        address(Shape::Discord, "https://discord.com/api/webhooks/1/abc"),
        "https://discord.com/api/webhooks/1/abc/slack"
    );
    assert_eq!(
        address(
            Shape::Discord,
            "https://discord.com/api/webhooks/1/abc/slack"
        ),
        "https://discord.com/api/webhooks/1/abc/slack"
    );
    let r = text(render(
        Shape::Rocket,
        "flagger",
        "general",
        &message(Severity::Error, &[]),
    ));
    assert!(r.contains(r##""color":"#FF0000""##), "{r}");
    let r = text(render(
        Shape::Rocket,
        "flagger",
        "general",
        &message(Severity::Info, &[]),
    ));
    assert!(r.contains(r##""color":"#0076D7""##), "{r}");
}

#[test]
fn teams_connectors_get_flaggers_message_card() {
    let url = "https://example.webhook.office.com/webhookb2/x";
    let shape = shape(AlertProviderType::Msteams, None, url);
    assert_eq!(shape, Shape::TeamsMessageCard);
    assert_eq!(
        text(render(shape, "", "", &message(Severity::Error, TARGET))),
        r#"{"@type":"MessageCard","@context":"http://schema.org/extensions","themeColor":"FF0000","summary":"podinfo.test","sections":[{"activityTitle":"New revision detected, progressing canary analysis.","activitySubtitle":"podinfo.test","facts":[{"name":"Target","value":"Deployment/podinfo.test"},{"name":"Failed checks threshold","value":"5"}]}]}"#
    );
}

#[test]
fn teams_workflows_get_an_adaptive_card() {
    for url in [
        "https://prod-12.westeurope.logic.azure.com:443/workflows/abc/triggers/manual/paths/invoke?sig=x",
        "https://default0a.12.environment.api.powerplatform.com:443/powerautomate/automations/direct/x",
    ] {
        assert_eq!(
            shape(AlertProviderType::Msteams, None, url),
            Shape::TeamsAdaptiveCard,
            "{url}"
        );
    }
    assert_eq!(
        shape(
            AlertProviderType::Msteams,
            Some(AlertFormat::MessageCard),
            "https://x.logic.azure.com/"
        ),
        Shape::TeamsMessageCard
    );
    let body: serde_json::Value = serde_json::from_slice(&render(
        Shape::TeamsAdaptiveCard,
        "",
        "",
        &message(Severity::Error, TARGET),
    ))
    .unwrap();
    assert_eq!(body["type"], "message");
    let card = &body["attachments"][0];
    assert_eq!(
        card["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(card["content"]["type"], "AdaptiveCard");
    assert_eq!(card["content"]["version"], "1.4");
    let blocks = &card["content"]["body"];
    assert_eq!(blocks[0]["text"], "podinfo.test");
    assert_eq!(blocks[1]["color"], "Attention");
    assert_eq!(
        blocks[2]["facts"][0],
        serde_json::json!({"title": "Target", "value": "Deployment/podinfo.test"})
    );
}

#[test]
fn google_chat_cards_are_flaggers_bytes_and_cards_v2_the_default() {
    assert_eq!(
        shape(
            AlertProviderType::Gchat,
            None,
            "https://chat.googleapis.com/v1/spaces/x"
        ),
        Shape::GChatCardsV2
    );
    let v1 = render(
        Shape::GChatCards,
        "",
        "",
        &message(Severity::Info, &TARGET[..1]),
    );
    assert_eq!(
        text(v1),
        r#"{"cards":[{"header":{"title":"Flagger","subtitle":"podinfo.test","imageUrl":"https://flagger.app/favicon.png"},"sections":[{"widgets":[{"textParagraph":{"text":"\u003cfont color=#848484\u003e\u003cstrong\u003eNew revision detected, progressing canary analysis.\u003c/strong\u003e\u003c/font\u003e"}}]},{"widgets":[{"textParagraph":{"text":"Target\u003cbr\u003e\u003cfont color=#848484\u003e\u003cstrong\u003eDeployment/podinfo.test\u003c/strong\u003e\u003c/font\u003e"}}]}]}]}"#
    );
    let v2: serde_json::Value = serde_json::from_slice(&render(
        Shape::GChatCardsV2,
        "",
        "",
        &message(Severity::Info, TARGET),
    ))
    .unwrap();
    let card = &v2["cardsV2"][0]["card"];
    assert_eq!(card["header"]["subtitle"], "podinfo.test");
    assert_eq!(
        card["sections"][1]["widgets"][1]["decoratedText"]["topLabel"],
        "Failed checks threshold"
    );
}
