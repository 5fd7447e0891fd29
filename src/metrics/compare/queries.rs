//! Where a compared metric's counts come from: the built-in checks' per-variant queries for the Canary's
//! provider, or a MetricTemplate's `counts`.

use crate::api::Canary;
use crate::metrics::builtin::Family;
use crate::metrics::counts::{self, Variant};
use crate::metrics::provider::{MetricsProvider, ProviderSettings};
use crate::metrics::{Analyzer, Source};
use crate::vocabulary::Builtin;

/// Where a compared metric's counts come from: per variant, the texts of the total and bad queries
/// (rates), or of the bucket query (latency), with the provider that answers them.
pub(super) enum Queries<'a> {
    Rate {
        canary: (String, String),
        primary: (String, String),
        provider: &'a dyn MetricsProvider,
        settings: ProviderSettings,
    },
    Latency {
        canary: String,
        primary: String,
        ms_per_unit: f64,
        settings: ProviderSettings,
    },
}

impl Analyzer {
    /// The per-variant queries of a compared metric, or why it has none.
    pub(super) fn comparison_queries<'a>(
        &'a self,
        canary: &Canary,
        source: Source<'_>,
    ) -> Result<Queries<'a>, String> {
        match source {
            Source::Builtin(check) => {
                let provider = canary.spec.provider.unwrap_or(self.default_provider);
                let family = Family::of(provider).map_err(|e| e.to_string())?;
                let settings = ProviderSettings {
                    address: self.canary_server(canary),
                    ..ProviderSettings::default()
                };
                match check {
                    Builtin::RequestSuccessRate => Ok(Queries::Rate {
                        canary: (
                            counts::requests_query(family, Variant::Canary),
                            counts::bad_query(family, Variant::Canary),
                        ),
                        primary: (
                            counts::requests_query(family, Variant::Primary),
                            counts::bad_query(family, Variant::Primary),
                        ),
                        provider: &self.providers.prometheus,
                        settings,
                    }),
                    Builtin::RequestDuration => {
                        let (canary_q, ms_per_unit) = counts::buckets_query(family, Variant::Canary);
                        let (primary_q, _) = counts::buckets_query(family, Variant::Primary);
                        Ok(Queries::Latency {
                            canary: canary_q,
                            primary: primary_q,
                            ms_per_unit,
                            settings,
                        })
                    }
                }
            }
            Source::Template(r) => {
                let (template, provider, settings, origin) = self.template(canary, r)?;
                let counts = template.spec.counts.clone().ok_or_else(|| {
                    format!("{origin} has no spec.counts: compareToPrimary needs its total and bad queries, run once per variant")
                })?;
                Ok(Queries::Rate {
                    canary: (counts.total.clone(), counts.bad.clone()),
                    primary: (counts.total, counts.bad),
                    provider,
                    settings,
                })
            }
            Source::Query(_) => Err(
                "an inline query gives one number, not counts per variant: compare with a templateRef to a MetricTemplate with counts".into(),
            ),
        }
    }
}
