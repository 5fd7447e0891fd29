//! git, through its command-line client and plumbing only: no work tree, no checkout. A private temporary
//! directory per write-back holds a bare repository fetched at depth 1; edited files become blobs, a
//! temporary index becomes a tree, the tree a commit on the fetched tip, and the commit is pushed without
//! force. Credentials reach git through its environment (GIT_CONFIG_* for an HTTP header), or, for SSH,
//! through files in that private directory; never through arguments, never into a log: every message git
//! prints is masked before it goes anywhere.

use std::collections::BTreeMap;
use std::process::Stdio;

use secrecy::SecretString;

use super::credentials;
pub use super::credentials::{Auth, Remote, shown_url};
use tokio::io::AsyncWriteExt;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum GitError {
    #[error("the git server refused the credentials: {0}")]
    Auth(String),
    /// Someone pushed first: fetch and try again.
    #[error("push rejected, the branch moved: {0}")]
    Rejected(String),
    /// A hook or branch protection said no.
    #[error("the git server refused the push: {0}")]
    Refused(String),
    #[error("{0}")]
    NotFound(String),
    #[error("git failed: {0}")]
    Other(String),
}

impl GitError {
    pub fn reason(&self) -> &'static str {
        match self {
            GitError::Auth(_) => "AuthFailed",
            GitError::Rejected(_) => "PushRejected",
            GitError::Refused(_) => "Refused",
            GitError::NotFound(_) => "NotFound",
            GitError::Other(_) => "GitError",
        }
    }
}

/// A private scratch repository bound to one remote.
pub struct Workspace {
    dir: tempfile::TempDir,
    remote: Remote,
    env: Vec<(String, String)>,
    /// Strings never to show: the password, the token, the header carrying them.
    secrets: Vec<String>,
}

/// A file of the tree at a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeFile {
    pub mode: String,
    pub path: String,
}

pub struct Author<'a> {
    pub name: &'a str,
    pub email: &'a str,
}

impl Workspace {
    pub async fn open(remote: Remote) -> Result<Workspace, GitError> {
        // A password written into the URL (https://user:token@host/...) would be an argument of every git
        // process, readable in /proc: it leaves the URL and goes the header's way instead.
        let mut remote = remote;
        let mut url_secret = None;
        if let Some((url, user, password)) = credentials::split_credentials(&remote.url) {
            remote.url = url;
            url_secret = Some(password.clone());
            if matches!(remote.auth, Auth::None) {
                remote.auth = Auth::Basic {
                    username: user,
                    password: SecretString::from(password),
                };
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("serin-git-")
            .tempdir()
            .map_err(|e| GitError::Other(format!("a private temporary directory: {e}")))?;
        let home = dir.path().join("home");
        std::fs::create_dir(&home).map_err(|e| GitError::Other(e.to_string()))?;
        let mut env = vec![
            (
                "GIT_DIR".to_string(),
                dir.path().join("repo.git").display().to_string(),
            ),
            ("HOME".into(), home.display().to_string()),
            ("GIT_CONFIG_NOSYSTEM".into(), "1".into()),
            ("GIT_CONFIG_GLOBAL".into(), "/dev/null".into()),
            ("GIT_TERMINAL_PROMPT".into(), "0".into()),
            ("GIT_ASKPASS".into(), "true".into()),
            ("SSH_ASKPASS".into(), "true".into()),
            ("LC_ALL".into(), "C".into()),
        ];
        let (config, ssh, mut secrets) = credentials::git_settings(&remote, dir.path())?;
        env.extend(ssh);
        env.push(("GIT_CONFIG_COUNT".into(), config.len().to_string()));
        for (i, (k, v)) in config.into_iter().enumerate() {
            env.push((format!("GIT_CONFIG_KEY_{i}"), k));
            env.push((format!("GIT_CONFIG_VALUE_{i}"), v));
        }
        secrets.extend(url_secret);
        secrets.retain(|s| !s.is_empty());
        let ws = Workspace {
            dir,
            remote,
            env,
            secrets,
        };
        ws.git(&["init", "--bare", "--quiet"], None).await?;
        Ok(ws)
    }

    /// `text` with every secret masked.
    pub fn mask(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            out = out.replace(s.as_str(), "***");
        }
        out
    }

    /// The URL as it may be shown: without a user or password in it.
    pub fn shown_url(&self) -> String {
        credentials::shown_url(&self.remote.url)
    }

    async fn git(&self, args: &[&str], input: Option<&[u8]>) -> Result<String, GitError> {
        self.git_with(args, input, &[]).await
    }

    async fn git_with(
        &self,
        args: &[&str],
        input: Option<&[u8]>,
        extra_env: &[(&str, &str)],
    ) -> Result<String, GitError> {
        let out = self.run(args, input, extra_env).await?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// git with `args` in the workspace's environment; its stdout as bytes, or its masked words.
    async fn run(
        &self,
        args: &[&str],
        input: Option<&[u8]>,
        extra_env: &[(&str, &str)],
    ) -> Result<Vec<u8>, GitError> {
        let mut cmd = tokio::process::Command::new("git");
        cmd.args(args)
            .env_clear()
            .env(
                "PATH",
                std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
            )
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(extra_env.iter().copied())
            .current_dir(self.dir.path())
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| GitError::Other(format!("running git (is it installed?): {e}")))?;
        if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin
                .write_all(input)
                .await
                .map_err(|e| GitError::Other(format!("git {}: {e}", args[0])))?;
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| GitError::Other(format!("git {}: {e}", args[0])))?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let said = self.mask(&format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr).trim(),
            if stdout.trim().is_empty() {
                String::new()
            } else {
                format!("\n{}", stdout.trim())
            }
        ));
        Err(classify(args[0], &said))
    }

    /// Fetches `branch` at depth 1; the tip's commit id.
    pub async fn fetch_tip(&self, branch: &str) -> Result<String, GitError> {
        let refspec = format!("+refs/heads/{branch}:refs/remotes/origin/{branch}");
        self.git(
            &[
                "fetch",
                "--quiet",
                "--depth",
                "1",
                "--no-tags",
                &self.remote.url,
                &refspec,
            ],
            None,
        )
        .await
        .map_err(|e| match e {
            GitError::Other(m) if m.contains("couldn't find remote ref") => {
                GitError::NotFound(format!("branch {branch} not found in {}", self.shown_url()))
            }
            e => e,
        })?;
        Ok(self
            .git(
                &[
                    "rev-parse",
                    &format!("refs/remotes/origin/{branch}^{{commit}}"),
                ],
                None,
            )
            .await?
            .trim()
            .to_string())
    }

    /// The blobs under `dir` ("" or "." for all) at `commit`.
    pub async fn list(&self, commit: &str, dir: &str) -> Result<Vec<TreeFile>, GitError> {
        let dir = dir.trim_start_matches("./").trim_end_matches('/');
        let mut args = vec!["ls-tree", "-r", "--full-tree", commit];
        if !dir.is_empty() && dir != "." {
            args.extend(["--", dir]);
        }
        let out = self.git(&args, None).await?;
        Ok(out
            .lines()
            .filter_map(|line| {
                let (meta, path) = line.split_once('\t')?;
                let mut meta = meta.split(' ');
                let (mode, kind) = (meta.next()?, meta.next()?);
                (kind == "blob").then(|| TreeFile {
                    mode: mode.to_string(),
                    path: path.to_string(),
                })
            })
            .collect())
    }

    /// The text of `path` at `commit`; None when it is not UTF-8.
    pub async fn read(&self, commit: &str, path: &str) -> Result<Option<String>, GitError> {
        let blob = self
            .run(
                &["cat-file", "blob", &format!("{commit}:{path}")],
                None,
                &[],
            )
            .await?;
        Ok(String::from_utf8(blob).ok())
    }

    /// Whether `ancestor` is in the history of `descendant`, both within the last 100 commits of `branch`.
    pub async fn is_ancestor(
        &self,
        branch: &str,
        ancestor: &str,
        descendant: &str,
    ) -> Result<bool, GitError> {
        let refspec = format!("+refs/heads/{branch}:refs/remotes/origin/{branch}");
        self.git(
            &[
                "fetch",
                "--quiet",
                "--depth",
                "100",
                "--no-tags",
                &self.remote.url,
                &refspec,
            ],
            None,
        )
        .await?;
        match self
            .git(&["merge-base", "--is-ancestor", ancestor, descendant], None)
            .await
        {
            Ok(_) => Ok(true),
            Err(GitError::Other(m)) if m.trim().ends_with("git merge-base:") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The full message of `commit`.
    pub async fn message(&self, commit: &str) -> Result<String, GitError> {
        self.git(&["log", "-1", "--format=%B", commit], None).await
    }

    /// A commit on `parent` with `files` (path → new text) changed, each keeping its mode.
    pub async fn commit(
        &self,
        parent: &str,
        files: &BTreeMap<String, (String, String)>,
        author: &Author<'_>,
        message: &str,
    ) -> Result<String, GitError> {
        let index = self.dir.path().join("index");
        let index = index.display().to_string();
        let env = [("GIT_INDEX_FILE", index.as_str())];
        self.git_with(&["read-tree", parent], None, &env).await?;
        for (path, (mode, text)) in files {
            let blob = self
                .git(&["hash-object", "-w", "--stdin"], Some(text.as_bytes()))
                .await?;
            let info = format!("{mode},{},{path}", blob.trim());
            self.git_with(&["update-index", "--cacheinfo", &info], None, &env)
                .await?;
        }
        let tree = self.git_with(&["write-tree"], None, &env).await?;
        let who = [
            ("GIT_AUTHOR_NAME", author.name),
            ("GIT_AUTHOR_EMAIL", author.email),
            ("GIT_COMMITTER_NAME", author.name),
            ("GIT_COMMITTER_EMAIL", author.email),
        ];
        let commit = self
            .git_with(
                &["commit-tree", tree.trim(), "-p", parent, "-F", "-"],
                Some(message.as_bytes()),
                &who,
            )
            .await?;
        Ok(commit.trim().to_string())
    }

    /// The unified diff between two commits (for a dry run).
    pub async fn diff(&self, from: &str, to: &str) -> Result<String, GitError> {
        self.git(&["diff", "--no-color", "--no-ext-diff", from, to], None)
            .await
    }

    /// Pushes `commit` to `dest` (a full ref), forced only when `force` (a branch Serin owns).
    pub async fn push(
        &self,
        commit: &str,
        dest: &str,
        force: bool,
        options: &BTreeMap<String, String>,
    ) -> Result<(), GitError> {
        let refspec = format!("{}{commit}:{dest}", if force { "+" } else { "" });
        let opts: Vec<String> = options
            .iter()
            .map(|(k, v)| {
                if v.is_empty() {
                    k.clone()
                } else {
                    format!("{k}={v}")
                }
            })
            .collect();
        let mut args = vec!["push", "--porcelain"];
        for o in &opts {
            args.extend(["-o", o.as_str()]);
        }
        args.extend([self.remote.url.as_str(), refspec.as_str()]);
        self.git(&args, None).await.map(|_| ())
    }
}

/// What git's words mean (LC_ALL=C).
fn classify(command: &str, said: &str) -> GitError {
    let lower = said.to_ascii_lowercase();
    let one_line = said
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    if lower.contains("authentication failed")
        || lower.contains("could not read username")
        || lower.contains("could not read password")
        || lower.contains(" 401")
        || lower.contains(" 403")
        || lower.contains("permission denied (publickey")
        || lower.contains("host key verification failed")
    {
        return GitError::Auth(one_line);
    }
    if command == "push" {
        if lower.contains("(fetch first)")
            || lower.contains("(non-fast-forward)")
            || lower.contains("failed to update ref")
            || lower.contains("cannot lock ref")
            || lower.contains("(stale info)")
        {
            return GitError::Rejected(one_line);
        }
        if lower.contains("[remote rejected]") || lower.contains("pre-receive hook declined") {
            return GitError::Refused(one_line);
        }
    }
    GitError::Other(format!("git {command}: {one_line}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_credentials() {
        assert_eq!(
            shown_url("https://u:p@git.example/x.git"),
            "https://git.example/x.git"
        );
        assert_eq!(
            shown_url("http://127.0.0.1:8080/a.git"),
            "http://127.0.0.1:8080/a.git"
        );
    }

    #[tokio::test]
    async fn every_secret_is_masked_the_urls_too() {
        let ws = Workspace::open(Remote {
            url: "https://bot:t0k3n-in-url@git.example/x.git".into(),
            auth: Auth::Basic {
                username: "bot".into(),
                password: SecretString::from("pa55-w0rd"),
            },
            ca: None,
        })
        .await
        .unwrap();
        let said = ws.mask("fatal: https://bot:t0k3n-in-url@git.example/x.git refused pa55-w0rd (Ym90OnBhNTUtdzByZA==)");
        assert!(
            !said.contains("t0k3n")
                && !said.contains("pa55")
                && !said.contains("Ym90OnBhNTUtdzByZA"),
            "{said}"
        );
        assert_eq!(ws.shown_url(), "https://git.example/x.git");
        assert_eq!(
            ws.remote.url, "https://git.example/x.git",
            "no password in git's arguments"
        );
        assert_eq!(
            credentials::split_credentials("ssh://git@host/x.git"),
            None,
            "a user alone is no secret"
        );
    }

    #[test]
    fn git_messages_are_classified() {
        assert!(matches!(
            classify(
                "push",
                "To http://x/a.git\n!\trefs/heads/main:refs/heads/main\t[rejected] (fetch first)\nDone"
            ),
            GitError::Rejected(_)
        ));
        assert!(matches!(
            classify(
                "push",
                "!\tabc:refs/heads/main\t[remote rejected] (pre-receive hook declined)"
            ),
            GitError::Refused(_)
        ));
        assert!(matches!(
            classify(
                "fetch",
                "fatal: Authentication failed for 'http://x/a.git/'"
            ),
            GitError::Auth(_)
        ));
        assert!(matches!(
            classify(
                "fetch",
                "fatal: unable to access 'http://x/': The requested URL returned error: 403"
            ),
            GitError::Auth(_)
        ));
    }
}
