//! Roll forward in git: when a canary fails, a commit restores the images the primary runs in the
//! repository the target is applied from. This module does the git part of one write-back (find, edit,
//! commit, push as compare-and-swap); where the repository is and when the GitOps tool has applied the
//! commit is the controller's to find out (controller/writer.rs).

pub mod credentials;
pub mod git;
pub mod image;
pub mod locate;
pub mod message;
#[cfg(test)]
mod tests;
pub mod yaml;

use std::collections::BTreeMap;
use std::time::Duration;

pub use crate::api::write_back::short;
use crate::api::write_back::{ImageChange, WriteBackPhase};
use git::{Author, GitError, Remote, Workspace};
use locate::Located;

/// The most YAML files under a path the locator reads.
const MAX_FILES: usize = 2000;
/// Pushes tried in one go when the branch keeps moving, before waiting for a later round.
pub const PUSH_ATTEMPTS: u32 = 5;
/// The most of a dry run's diff status keeps.
const MAX_DIFF: usize = 4000;

/// What to write back, for whom.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub canary_namespace: String,
    pub canary_name: String,
    /// The failed revision (status.lastAppliedSpec when it failed) and the primary's.
    pub for_revision: String,
    pub restored_revision: String,
    pub cause: String,
    pub changes: Vec<ImageChange>,
    /// The target's kind and name as its manifest says.
    pub kind: String,
    pub name: String,
}

/// Where it is written.
#[derive(Debug, Clone)]
pub struct Destination {
    pub remote: Remote,
    /// The branch read (and written, unless `push` says otherwise).
    pub branch: String,
    /// The directory the target's manifests are under ("" for the whole repository).
    pub path: String,
    /// The target's file, from Flux's origin annotation (repository-relative).
    pub origin: Option<String>,
    pub push: Push,
    pub author_name: String,
    pub author_email: String,
    pub message_template: String,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub enum Push {
    /// Back to the branch read, never forced.
    #[default]
    Branch,
    /// A branch of Serin's own: the base tip plus the commit, force-pushed.
    Own(String),
    /// A refspec such as refs/for/main, never forced.
    Refspec(String),
}

/// Push options (`git push -o`).
pub type PushOptions = BTreeMap<String, String>;

/// The result of one round of writing.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Written {
    pub phase: WriteBackPhase,
    pub reason: Option<String>,
    pub message: String,
    pub commit: Option<String>,
    /// The ref pushed to.
    pub branch: Option<String>,
    pub files: Vec<String>,
    pub diff: Option<String>,
    /// Pushes tried in this round.
    pub attempts: u32,
    pub repository: String,
}

impl Written {
    fn failed(reason: &str, message: String) -> Written {
        Written {
            phase: WriteBackPhase::Failed,
            reason: Some(reason.to_string()),
            message,
            ..Written::default()
        }
    }
}

/// One round: fetch, locate, compare, commit and push, re-fetching up to PUSH_ATTEMPTS times when the
/// branch moves under us (jittered backoff). A failed push is told in the result, never retried here.
pub async fn write(job: &Job, dest: &Destination, options: &PushOptions) -> Written {
    let mut written = rounds(job, dest, options).await;
    written.repository = git::shown_url(&dest.remote.url);
    written
}

async fn rounds(job: &Job, dest: &Destination, options: &PushOptions) -> Written {
    // A branch of Serin's own is force-pushed: never the branch it reads, which others push to.
    if let Push::Own(branch) = &dest.push
        && branch.trim_start_matches("refs/heads/") == dest.branch
    {
        return Written::failed(
            "InvalidSpec",
            format!(
                "writeBack.push.branch is {branch}, the branch Serin reads: a branch of Serin's own is force-pushed; leave push unset to push to {branch} without force",
            ),
        );
    }
    let ws = match Workspace::open(dest.remote.clone()).await {
        Ok(ws) => ws,
        Err(e) => return Written::failed(e.reason(), e.to_string()),
    };
    let mut attempts = 0;
    loop {
        attempts += 1;
        let mut round = match once(job, dest, options, &ws).await {
            Ok(w) => w,
            Err(GitError::Rejected(m)) if attempts < PUSH_ATTEMPTS => {
                let wait = backoff(attempts);
                tracing::info!(attempt = attempts, ?wait, message = %m, "push rejected: the branch moved; fetching again");
                tokio::time::sleep(wait).await;
                continue;
            }
            Err(e) => {
                let mut w = Written::failed(e.reason(), e.to_string());
                if matches!(e, GitError::Rejected(_)) {
                    w.message = format!("{} (after {attempts} attempts)", w.message);
                }
                w.attempts = attempts;
                return w;
            }
        };
        round.attempts = attempts;
        return round;
    }
}

/// 250 ms, doubled per attempt, with up to half again of jitter (two replicas of a bot never retry in
/// lockstep).
fn backoff(attempt: u32) -> Duration {
    let base = 250u64 << attempt.min(6);
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64 % (base / 2 + 1))
        .unwrap_or(0);
    Duration::from_millis(base + jitter)
}

async fn once(
    job: &Job,
    dest: &Destination,
    options: &PushOptions,
    ws: &Workspace,
) -> Result<Written, GitError> {
    let tip = ws.fetch_tip(&dest.branch).await?;
    // Our own commit at the tip: pushed before a crash or a lost lease kept the status from saying so.
    if !dest.dry_run && message::is_own(&ws.message(&tip).await?, job) {
        return Ok(Written {
            phase: WriteBackPhase::Pushed,
            message: format!(
                "{} (already pushed to {} by Serin)",
                short(&tip),
                dest.branch
            ),
            commit: Some(tip.clone()),
            branch: Some(dest.branch.clone()),
            ..Written::default()
        });
    }
    let mut tree = ws.list(&tip, &dest.path).await?;
    if let Some(origin) = &dest.origin
        && !tree.iter().any(|f| &f.path == origin)
    {
        tree.extend(ws.list(&tip, origin).await?);
    }
    let modes: BTreeMap<String, String> = tree
        .iter()
        .map(|f| (f.path.clone(), f.mode.clone()))
        .collect();
    let yaml: Vec<&String> = modes
        .keys()
        .filter(|p| {
            p.ends_with(".yaml")
                || p.ends_with(".yml")
                || p.ends_with("/Kustomization")
                || *p == "Kustomization"
        })
        .take(MAX_FILES)
        .collect();
    let mut files = BTreeMap::new();
    for path in yaml {
        if let Some(text) = ws.read(&tip, path).await? {
            files.insert(path.clone(), text);
        }
    }
    let query = locate::Query {
        canary_namespace: &job.canary_namespace,
        canary_name: &job.canary_name,
        kind: &job.kind,
        name: &job.name,
        origin: dest.origin.as_deref(),
        root: &dest.path,
        changes: &job.changes,
    };
    let outcomes = locate::locate(&files, &query);
    let tip_short = short(&tip);
    let mut problems = Vec::new();
    let mut superseded = Vec::new();
    let mut edits = 0;
    for (change, located) in &outcomes {
        match located {
            Located::NotFound(why) => problems.push(("NotFound", why.clone())),
            Located::Ambiguous(sites) => problems.push((
                "Ambiguous",
                format!(
                    "container {} ({}) is written in several places: {}",
                    change.container,
                    change.from,
                    sites.join(", ")
                ),
            )),
            Located::Superseded { file, line, value } => superseded.push(format!(
                "container {}: {file}:{line} says {value}, neither {} nor {}",
                change.container, change.from, change.to
            )),
            Located::Edit { .. } => edits += 1,
            Located::UpToDate { .. } => {}
        }
    }
    if let Some((reason, _)) = problems.first() {
        let text = problems
            .iter()
            .map(|(_, m)| m.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        return Ok(Written::failed(
            reason,
            format!(
                "nothing committed: {text} (at {tip_short} of {})",
                dest.branch
            ),
        ));
    }
    if edits == 0 {
        return Ok(if superseded.is_empty() {
            Written {
                phase: WriteBackPhase::AlreadyUpToDate,
                message: format!(
                    "{} of {} already names the restored image{}",
                    tip_short,
                    dest.branch,
                    if job.changes.len() > 1 { "s" } else { "" }
                ),
                commit: Some(tip),
                ..Written::default()
            }
        } else {
            Written {
                phase: WriteBackPhase::Superseded,
                message: format!(
                    "someone moved on, nothing committed: {} (at {tip_short} of {})",
                    superseded.join("; "),
                    dest.branch
                ),
                ..Written::default()
            }
        });
    }
    // A line image automation owns: it may push the failed tag again (Serin then holds it as a failed
    // revision); excluding the tag from its ImageRepository stops it.
    let automated: Vec<String> = outcomes
        .iter()
        .filter_map(|(_, l)| match l {
            Located::Edit {
                file, line, span, ..
            } if yaml::rest_of_line(&files[file], span.end).contains("$imagepolicy") => {
                Some(format!("{file}:{line}"))
            }
            _ => None,
        })
        .collect();
    let changed = match locate::apply_edits(&files, &outcomes) {
        Ok(changed) => changed,
        Err(why) => {
            return Ok(Written::failed(
                "NotEditable",
                format!(
                    "nothing committed: {why} (at {tip_short} of {})",
                    dest.branch
                ),
            ));
        }
    };
    let with_modes: BTreeMap<String, (String, String)> = changed
        .into_iter()
        .map(|(path, text)| {
            let mode = modes.get(&path).cloned().unwrap_or_else(|| "100644".into());
            (path, (mode, text))
        })
        .collect();
    let text = match message::render(&dest.message_template, job) {
        // Gerrit refuses a change without a Change-Id: one derived from the Canary and the revision, so a
        // push repeated after a crash updates the same change instead of opening another.
        Ok(text) if matches!(&dest.push, Push::Refspec(r) if r.starts_with("refs/for/")) => {
            format!("{text}Change-Id: I{}\n", message::change_id(job))
        }
        Ok(text) => text,
        Err(e) => {
            return Ok(Written::failed("InvalidSpec", e.to_string()));
        }
    };
    let author = Author {
        name: &dest.author_name,
        email: &dest.author_email,
    };
    let commit = ws.commit(&tip, &with_modes, &author, &text).await?;
    let files: Vec<String> = with_modes.keys().cloned().collect();
    let mut note = if superseded.is_empty() {
        String::new()
    } else {
        format!("; left alone: {}", superseded.join("; "))
    };
    if !automated.is_empty() {
        note.push_str(&format!(
            "; {} carries an $imagepolicy marker: image automation may push the failed tag again (add it to the ImageRepository's exclusionList)",
            automated.join(", ")
        ));
    }

    if dest.dry_run {
        let mut diff = ws.diff(&tip, &commit).await?;
        if diff.len() > MAX_DIFF {
            let mut cut = MAX_DIFF;
            while !diff.is_char_boundary(cut) {
                cut -= 1;
            }
            diff.truncate(cut);
            diff.push_str("\n[truncated]\n");
        }
        return Ok(Written {
            phase: WriteBackPhase::DryRun,
            message: format!(
                "dry run: would commit {} on {tip_short} of {}{note}",
                files.join(", "),
                dest.branch
            ),
            files,
            diff: Some(diff),
            ..Written::default()
        });
    }
    let (dest_ref, force) = match &dest.push {
        Push::Branch => (format!("refs/heads/{}", dest.branch), false),
        Push::Own(branch) => (format!("refs/heads/{branch}"), true),
        Push::Refspec(spec) => (spec.clone(), false),
    };
    ws.push(&commit, &dest_ref, force, options).await?;
    let shown_ref = dest_ref.trim_start_matches("refs/heads/").to_string();
    Ok(Written {
        phase: WriteBackPhase::Pushed,
        message: format!(
            "pushed {} to {shown_ref} ({}){note}",
            short(&commit),
            files.join(", ")
        ),
        commit: Some(commit),
        branch: Some(shown_ref),
        files,
        ..Written::default()
    })
}
