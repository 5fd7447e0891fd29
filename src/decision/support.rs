//! What of a Canary Serin can act on yet. A spec that needs something Serin lacks (a router for its
//! provider) stalls with the reason; optional fields Serin does not act on yet are named in a condition.
//! Nothing is silently ignored. (A target kind Serin can't read is refused before any decision, where the
//! target is observed.)

use crate::api::CanarySpec;
use crate::api::{Analysis, Provider};
use crate::vocabulary::{RouterKind, router_for};

/// Why a Canary can't run at all yet.
pub fn blocking(provider: Provider) -> Option<String> {
    router_for(provider).is_none().then(|| {
        format!(
            "spec.provider: {provider} is not supported yet (supported: gatewayapi, gatewayapi:v1, istio, linkerd, smi:v1alpha1, smi:v1alpha2, smi:v1alpha3, nginx, contour, traefik, kubernetes)"
        )
    })
}

/// Paths of the fields given in the spec that Serin accepts but does not act on yet with `provider`.
pub fn unsupported_fields(spec: &CanarySpec, provider: Provider) -> Vec<String> {
    let mut out = Vec::new();
    let mut note = |present: bool, path: &str| {
        if present {
            out.push(path.to_string());
        }
    };
    note(
        spec.ingress_ref.is_some() && router_for(provider) != Some(RouterKind::Nginx),
        "spec.ingressRef",
    );
    note(spec.route_ref.is_some(), "spec.routeRef");
    note(spec.upstream_ref.is_some(), "spec.upstreamRef");
    let s = &spec.service;
    // The Istio router passes these into the VirtualService and DestinationRules.
    let istio = router_for(provider) == Some(RouterKind::Istio);
    // Contour's HTTPProxy takes the timeout, the retries and the match's uri prefix, as Flagger's does.
    let contour = router_for(provider) == Some(RouterKind::Contour);
    note(
        s.timeout.is_some() && !istio && !contour,
        "spec.service.timeout",
    );
    note(s.backend_timeout.is_some(), "spec.service.backendTimeout");
    note(!s.gateways.is_empty() && !istio, "spec.service.gateways");
    note(s.delegation && !istio, "spec.service.delegation");
    note(
        s.traffic_policy.is_some() && !istio,
        "spec.service.trafficPolicy",
    );
    note(
        s.r#match.is_some() && !istio && !contour,
        "spec.service.match",
    );
    note(s.rewrite.is_some() && !istio, "spec.service.rewrite");
    note(
        s.retries.is_some() && !istio && !contour,
        "spec.service.retries",
    );
    note(s.headers.is_some() && !istio, "spec.service.headers");
    note(s.mirror.is_some(), "spec.service.mirror");
    note(s.cors_policy.is_some() && !istio, "spec.service.corsPolicy");
    note(s.mesh_name.is_some(), "spec.service.meshName");
    note(!s.backends.is_empty(), "spec.service.backends");
    note(
        s.unmanaged_metadata.is_some(),
        "spec.service.unmanagedMetadata",
    );
    for (path, analysis) in [
        ("spec.analysis", &spec.analysis),
        ("spec.canaryAnalysis", &spec.canary_analysis),
    ] {
        if let Some(a) = analysis {
            unsupported_in_analysis(path, a, provider, &mut out);
        }
    }
    out
}

fn unsupported_in_analysis(path: &str, a: &Analysis, provider: Provider, out: &mut Vec<String>) {
    let mut note = |present: bool, field: &str| {
        if present {
            out.push(format!("{path}.{field}"));
        }
    };
    let mirrors = router_for(provider).is_some_and(RouterKind::mirrors);
    note(a.mirror && !mirrors, "mirror");
    note(a.mirror_weight.is_some() && !mirrors, "mirrorWeight");
    let sticks = router_for(provider).is_some_and(RouterKind::sticks);
    note(a.session_affinity.is_some() && !sticks, "sessionAffinity");
}
