//! Serin's resources (group serin.dev, version v1beta1): Canary, MetricTemplate and AlertProvider, with
//! Flagger v1beta1's field names, defaults and meanings.

pub mod alert_provider;
pub mod analysis;
pub mod canary;
pub mod crds;
pub mod duration;
pub mod metric_template;
mod schema;
pub mod status;
pub mod write_back;

pub use alert_provider::{AlertProvider, AlertProviderSpec};
pub use analysis::Analysis;
pub use canary::{Canary, CanarySpec, Provider};
pub use metric_template::{MetricTemplate, MetricTemplateSpec};
pub use status::{
    CanaryStatus, CheckStatus, CheckVerdict, Condition, ConditionType, HookResult, ManualStatus,
    Phase, WebhookStatus,
};

/// Serin's API group.
pub const GROUP: &str = "serin.dev";
