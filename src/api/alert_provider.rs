//! AlertProvider: where a Canary's alerts go (Flagger v1beta1).

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::metric_template::{SecretRef, TemplateStatus};

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "serin.dev",
    version = "v1beta1",
    kind = "AlertProvider",
    category = "all",
    namespaced,
    status = "TemplateStatus",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.address) || has(self.secretRef)").message("an AlertProvider needs an address, or a secretRef to a Secret with the key address"))]
#[x_kube(validation = Rule::new("!has(self.format) || (self.type == 'msteams' && (self.format == 'messageCard' || self.format == 'adaptiveCard')) || (self.type == 'gchat' && (self.format == 'cards' || self.format == 'cardsV2'))").message("format is messageCard or adaptiveCard for type msteams, cards or cardsV2 for type gchat"))]
pub struct AlertProviderSpec {
    #[serde(rename = "type")]
    pub provider_type: AlertProviderType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The webhook URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// An HTTP proxy for the webhook calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// A Secret with the keys address (the webhook URL), and optionally token and proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
    /// Serin: the payload's format, instead of the one picked by type and URL. msteams: messageCard (Office
    /// 365 connectors; the default for their URLs) or adaptiveCard (the default for Workflows URLs); gchat:
    /// cardsV2 (the default) or cards (Flagger's legacy cards).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<AlertFormat>,
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum AlertFormat {
    MessageCard,
    AdaptiveCard,
    Cards,
    #[serde(rename = "cardsV2")]
    CardsV2,
}

#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[serde(rename_all = "lowercase")]
pub enum AlertProviderType {
    #[default]
    Slack,
    Msteams,
    Discord,
    Rocket,
    Gchat,
}

impl AlertProviderType {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertProviderType::Slack => "slack",
            AlertProviderType::Msteams => "msteams",
            AlertProviderType::Discord => "discord",
            AlertProviderType::Rocket => "rocket",
            AlertProviderType::Gchat => "gchat",
        }
    }
}
