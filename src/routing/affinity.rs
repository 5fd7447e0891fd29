//! Session affinity (`analysis.sessionAffinity`), with Flagger's semantics: while the canary has weight,
//! its answers set a cookie (`cookieName`, for `maxAge`, a day by default), and requests that carry it go to
//! the canary whatever the weights, so a user who reached the new revision stays on it. With
//! `primaryCookieName`, the primary's answers set one for an analysis interval, and requests that carry it
//! stay on the primary. Once the canary has no weight, requests still carrying its cookie are routed as
//! the rest, and their answers expire it.
//!
//! Flagger draws each cookie's value at random and keeps it in the status; Serin derives it from the
//! Canary's uid and the revision under analysis (`status.lastAppliedSpec`): the same across restarts and
//! replicas, a new one for each revision, nothing more to keep.

use kube::ResourceExt;
use sha2::{Digest, Sha256};

use crate::api::Canary;
use crate::api::analysis::SessionAffinity;
use crate::api::duration::parse_duration;
use crate::vocabulary::Weights;

/// Flagger's default `maxAge`: a day.
const DEFAULT_MAX_AGE: i32 = 86_400;
/// The header the cookie comes back in.
pub const COOKIE_HEADER: &str = "Cookie";
pub const SET_COOKIE_HEADER: &str = "Set-Cookie";

/// One cookie: what requests carry, and what an answer sets.
#[derive(Debug, Clone, PartialEq)]
pub struct Cookie {
    /// `name=value`.
    pub pair: String,
    /// The `Set-Cookie` value: the pair and its attributes.
    pub set: String,
}

impl Cookie {
    /// A regex (matched against the whole `Cookie` header, RE2) for requests carrying this cookie.
    pub fn regex(&self) -> String {
        format!("(.*; ?)?{}(;.*)?", regex_escape(&self.pair))
    }
}

/// What the route does for session affinity at these weights.
#[derive(Debug, Clone, PartialEq)]
pub enum Sticky {
    /// The canary has weight: its cookie sends requests to it, and the primary's (if named) to the primary.
    Active {
        canary: Cookie,
        primary: Option<Cookie>,
    },
    /// The canary has none: requests carrying the last analysed revision's cookie are routed as the rest,
    /// and their answers expire it (`expire` is the `Set-Cookie` value that does).
    Ended { canary: Cookie, expire: String },
}

/// The session affinity the route needs for `weights`, if the active analysis asks for it and a revision
/// has been analysed.
pub fn sticky(canary: &Canary, weights: Weights) -> Option<Sticky> {
    let analysis = canary.spec.active_analysis()?;
    let affinity = analysis.session_affinity.as_ref()?;
    let name = affinity.cookie_name.as_deref().filter(|n| !n.is_empty())?;
    let revision = canary.status.as_ref()?.last_applied_spec.as_deref()?;
    let uid = canary.uid().unwrap_or_default();
    let value = |name: &str| {
        let digest = Sha256::digest(format!("{uid}/{revision}/{name}").as_bytes());
        digest.iter().take(8).fold(String::new(), |mut s, b| {
            s.push_str(&format!("{b:02x}"));
            s
        })
    };
    let cookie = |name: &str, max_age: i64| {
        let pair = format!("{name}={}", value(name));
        Cookie {
            set: set_cookie(affinity, &pair, max_age),
            pair,
        }
    };
    let max_age = i64::from(
        affinity
            .max_age
            .filter(|a| *a > 0)
            .unwrap_or(DEFAULT_MAX_AGE),
    );
    let canary_cookie = cookie(name, max_age);
    if weights.canary == 0 {
        return Some(Sticky::Ended {
            expire: format!("{}; Max-Age=0", canary_cookie.pair),
            canary: canary_cookie,
        });
    }
    let interval = analysis
        .interval
        .as_deref()
        .and_then(|i| parse_duration(i).ok())
        .map_or(60, |d| d.as_secs());
    let primary = affinity
        .primary_cookie_name
        .as_deref()
        .filter(|n| !n.is_empty())
        .map(|n| cookie(n, i64::try_from(interval).unwrap_or(i64::MAX)));
    Some(Sticky::Active {
        canary: canary_cookie,
        primary,
    })
}

/// True when `regex`, matched on the `Cookie` header, is one of the Canary's sticky matches (any revision's):
/// the route's sticky rules are not its A/B rules.
pub fn is_sticky_match(canary: &Canary, header: &str, regex: &str) -> bool {
    let Some(affinity) = canary
        .spec
        .active_analysis()
        .and_then(|a| a.session_affinity.as_ref())
    else {
        return false;
    };
    header.eq_ignore_ascii_case(COOKIE_HEADER)
        && [&affinity.cookie_name, &affinity.primary_cookie_name]
            .into_iter()
            .flatten()
            .filter(|n| !n.is_empty())
            .any(|n| regex.starts_with(&format!("(.*; ?)?{}=", regex_escape(n))))
}

/// The `Set-Cookie` value with Flagger's attributes, in Flagger's order.
fn set_cookie(a: &SessionAffinity, pair: &str, max_age: i64) -> String {
    let mut out = format!("{pair}; Max-Age={max_age}");
    if let Some(d) = a.domain.as_deref().filter(|d| !d.is_empty()) {
        out.push_str(&format!("; Domain={d}"));
    }
    if a.http_only {
        out.push_str("; HttpOnly");
    }
    if a.partitioned {
        out.push_str("; Partitioned");
    }
    if let Some(p) = a.path.as_deref().filter(|p| !p.is_empty()) {
        out.push_str(&format!("; Path={p}"));
    }
    if let Some(s) = a.same_site.as_deref().filter(|s| !s.is_empty()) {
        out.push_str(&format!("; SameSite={s}"));
    }
    if a.secure {
        out.push_str("; Secure");
    }
    out
}

/// RE2 metacharacters escaped (cookie names may hold `.` or `-`).
fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canary(affinity: serde_json::Value, revision: Option<&str>) -> Canary {
        serde_json::from_value(json!({
            "apiVersion": "serin.dev/v1beta1", "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "shop", "uid": "u1"},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                "service": {"port": 9898},
                "analysis": {"interval": "30s", "stepWeight": 10, "sessionAffinity": affinity}},
            "status": {"lastAppliedSpec": revision},
        }))
        .unwrap()
    }

    #[test]
    fn cookies_are_per_revision_and_carry_flaggers_attributes() {
        let c = canary(
            json!({"cookieName": "canary", "primaryCookieName": "stable", "maxAge": 600,
                "domain": "example.com", "httpOnly": true, "path": "/", "sameSite": "Lax", "secure": true}),
            Some("r2"),
        );
        let Some(Sticky::Active {
            canary: cc,
            primary: Some(pc),
        }) = sticky(&c, Weights::canary(10))
        else {
            panic!("active with a primary cookie")
        };
        assert!(cc.pair.starts_with("canary=") && cc.pair.len() == "canary=".len() + 16);
        assert_eq!(
            cc.set,
            format!(
                "{}; Max-Age=600; Domain=example.com; HttpOnly; Path=/; SameSite=Lax; Secure",
                cc.pair
            )
        );
        assert!(
            pc.set.starts_with(&format!("{}; Max-Age=30;", pc.pair)),
            "{}",
            pc.set
        );
        let next = canary(json!({"cookieName": "canary"}), Some("r3"));
        let Some(Sticky::Active {
            canary: other,
            primary: None,
        }) = sticky(&next, Weights::canary(10))
        else {
            panic!()
        };
        assert_ne!(other.pair, cc.pair, "a new revision, a new cookie");
        assert!(other.set.ends_with("; Max-Age=86400"));
    }

    #[test]
    fn at_weight_zero_the_cookie_expires_and_without_a_revision_there_is_none() {
        let c = canary(json!({"cookieName": "canary"}), Some("r2"));
        let Some(Sticky::Ended { canary: cc, expire }) = sticky(&c, Weights::canary(0)) else {
            panic!()
        };
        assert_eq!(expire, format!("{}; Max-Age=0", cc.pair));
        assert_eq!(
            sticky(
                &canary(json!({"cookieName": "canary"}), None),
                Weights::canary(10)
            ),
            None
        );
        assert_eq!(
            sticky(&canary(json!({}), Some("r2")), Weights::canary(10)),
            None
        );
    }

    #[test]
    fn the_regex_matches_the_cookie_among_others_and_nothing_else() {
        let c = canary(json!({"cookieName": "my.canary"}), Some("r2"));
        let Some(Sticky::Active { canary: cc, .. }) = sticky(&c, Weights::canary(10)) else {
            panic!()
        };
        let re = regex::Regex::new(&format!("^(?:{})$", cc.regex())).unwrap();
        assert!(re.is_match(&cc.pair));
        assert!(re.is_match(&format!("a=b; {}; c=d", cc.pair)));
        assert!(!re.is_match(&format!("a=b; x{}", cc.pair)));
        assert!(!re.is_match(&cc.pair.replace("my.canary", "myXcanary")));
        assert!(is_sticky_match(&c, "cookie", &cc.regex()));
        assert!(!is_sticky_match(&c, "x-canary", &cc.regex()));
        assert!(!is_sticky_match(
            &c,
            "cookie",
            "^(.*?;)?(canary=always)(;.*)?$"
        ));
    }
}
