//! The roll-forward commit's message: what goes back and why, then Serin-* trailers that make the commit
//! findable (`git log --grep Serin-Canary`) and let a restarted replica recognise its own push.

use std::collections::BTreeMap;

use super::Job;

/// The default message's first lines (the trailers follow any message).
pub const DEFAULT_TEMPLATE: &str = "Roll back {{ namespace }}/{{ canary }} to {{ restoredImages }}\n\nCanary analysis of {{ failedImages }} failed: {{ reason }}.\nThe primary still serves {{ restoredImages }}; this commit makes git say so.";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MessageError {
    #[error("writeBack.commit.messageTemplate: {{{{ opened at byte {0} is never closed")]
    Unclosed(usize),
    #[error(
        "writeBack.commit.messageTemplate: unknown placeholder {{{{ {0} }}}}; known are canary, namespace, failedImages, restoredImages, reason, failedRevision, restoredRevision"
    )]
    Unknown(String),
}

/// The message for `job` from `template`, with the trailers.
pub fn render(template: &str, job: &Job) -> Result<String, MessageError> {
    let images = |to: bool| {
        job.changes
            .iter()
            .map(|c| if to { c.to.as_str() } else { c.from.as_str() })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let values: BTreeMap<&str, String> = [
        ("canary", job.canary_name.clone()),
        ("namespace", job.canary_namespace.clone()),
        ("failedImages", images(false)),
        ("restoredImages", images(true)),
        ("reason", job.cause.trim_end_matches('.').to_string()),
        ("failedRevision", job.for_revision.clone()),
        ("restoredRevision", job.restored_revision.clone()),
    ]
    .into_iter()
    .collect();
    let mut out = String::new();
    let mut rest = template;
    let mut offset = 0;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let close = rest[open..]
            .find("}}")
            .ok_or(MessageError::Unclosed(offset + open))?;
        let key = rest[open + 2..open + close].trim();
        out.push_str(
            values
                .get(key)
                .ok_or_else(|| MessageError::Unknown(key.to_string()))?,
        );
        offset += open + close + 2;
        rest = &rest[open + close + 2..];
    }
    out.push_str(rest);
    let mut message = out.trim_end().to_string();
    message.push_str(&format!(
        "\n\n{}: {}/{}\n{}: {}\n{}: {}\n",
        TRAILER_CANARY,
        job.canary_namespace,
        job.canary_name,
        TRAILER_FAILED,
        job.for_revision,
        TRAILER_RESTORED,
        job.restored_revision
    ));
    Ok(message)
}

/// Checks a template (the controller's flag) before any canary needs it.
pub fn check(template: &str) -> Result<(), MessageError> {
    let job = Job {
        canary_namespace: "ns".into(),
        canary_name: "canary".into(),
        for_revision: "r2".into(),
        restored_revision: "r1".into(),
        cause: "why".into(),
        changes: Vec::new(),
        kind: "Deployment".into(),
        name: "app".into(),
    };
    render(template, &job).map(|_| ())
}

/// A Gerrit Change-Id (40 hex digits) for this Canary's roll forward of this revision.
pub fn change_id(job: &Job) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(
        format!(
            "{}/{}/{}",
            job.canary_namespace, job.canary_name, job.for_revision
        )
        .as_bytes(),
    );
    digest.iter().take(20).map(|b| format!("{b:02x}")).collect()
}

pub const TRAILER_CANARY: &str = "Serin-Canary";
pub const TRAILER_FAILED: &str = "Serin-Failed-Revision";
pub const TRAILER_RESTORED: &str = "Serin-Restored-Revision";

/// Whether `message` is this job's own roll-forward commit (its trailers say so).
pub fn is_own(message: &str, job: &Job) -> bool {
    let has = |key: &str, value: &str| {
        message
            .lines()
            .any(|l| l.trim_end() == format!("{key}: {value}"))
    };
    has(
        TRAILER_CANARY,
        &format!("{}/{}", job.canary_namespace, job.canary_name),
    ) && has(TRAILER_FAILED, &job.for_revision)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_and_trailers() {
        assert!(check(DEFAULT_TEMPLATE).is_ok());
        assert_eq!(
            check("Roll back {{ canary }} {{ image }}"),
            Err(MessageError::Unknown("image".into()))
        );
        assert_eq!(check("x {{ canary"), Err(MessageError::Unclosed(2)));
    }
}
