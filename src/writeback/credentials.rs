//! What git needs to prove Serin to the server, and to keep it secret: Flux's kinds of credentials as git
//! configuration passed through the environment (an HTTP header; never an argument, never a file in the
//! repository), SSH keys as private files of the run's temporary directory, URLs shown without user
//! information.

use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};

use super::git::GitError;

/// How Serin proves itself to the git server (Flux's GitRepository Secret keys).
#[derive(Clone, Default)]
pub enum Auth {
    #[default]
    None,
    /// `username` and `password`: HTTP basic.
    Basic {
        username: String,
        password: SecretString,
    },
    /// `bearerToken`.
    Bearer(SecretString),
    /// `identity` and `known_hosts` (required: no trust on first use).
    Ssh {
        identity: SecretString,
        known_hosts: String,
    },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Auth::None => "none",
            Auth::Basic { .. } => "basic",
            Auth::Bearer(_) => "bearer",
            Auth::Ssh { .. } => "ssh",
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct Remote {
    pub url: String,
    pub auth: Auth,
    /// `ca.crt`: a private CA for https.
    pub ca: Option<String>,
}

/// Git's configuration (key, value) for `remote`'s credentials, the SSH command's environment, and the
/// strings never to show.
#[allow(clippy::type_complexity)]
pub fn git_settings(
    remote: &Remote,
    dir: &Path,
) -> Result<(Vec<(String, String)>, Vec<(String, String)>, Vec<String>), GitError> {
    let mut config: Vec<(String, String)> = Vec::new();
    let mut ssh: Vec<(String, String)> = Vec::new();
    let mut secrets = Vec::new();
    match &remote.auth {
        Auth::None => {}
        Auth::Basic { username, password } => {
            use base64::Engine;
            let token = base64::engine::general_purpose::STANDARD
                .encode(format!("{username}:{}", password.expose_secret()));
            secrets.push(password.expose_secret().to_string());
            secrets.push(token.clone());
            config.push((
                "http.extraHeader".into(),
                format!("Authorization: Basic {token}"),
            ));
        }
        Auth::Bearer(token) => {
            secrets.push(token.expose_secret().to_string());
            config.push((
                "http.extraHeader".into(),
                format!("Authorization: Bearer {}", token.expose_secret()),
            ));
        }
        Auth::Ssh {
            identity,
            known_hosts,
        } => {
            let key = private_file(dir, "identity", identity.expose_secret())?;
            let hosts = private_file(dir, "known_hosts", known_hosts)?;
            ssh.push((
                "GIT_SSH_COMMAND".into(),
                format!(
                    "ssh -F /dev/null -i '{}' -o IdentitiesOnly=yes -o UserKnownHostsFile='{}' -o StrictHostKeyChecking=yes -o BatchMode=yes",
                    key.display(),
                    hosts.display()
                ),
            ));
        }
    }
    if let Some(ca) = &remote.ca {
        let path = private_file(dir, "ca.crt", ca)?;
        config.push(("http.sslCAInfo".into(), path.display().to_string()));
    }
    Ok((config, ssh, secrets))
}

pub fn private_file(dir: &Path, name: &str, content: &str) -> Result<PathBuf, GitError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| GitError::Other(format!("writing {name}: {e}")))?;
    let mut content = content.to_string();
    if !content.ends_with('\n') {
        content.push('\n');
    }
    f.write_all(content.as_bytes())
        .map_err(|e| GitError::Other(format!("writing {name}: {e}")))?;
    Ok(path)
}

/// A URL with a password in it, split into the URL without user information, the user and the password.
pub fn split_credentials(url: &str) -> Option<(String, String, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (userinfo, host) = rest[..authority_end].rsplit_once('@')?;
    let (user, password) = userinfo.split_once(':')?;
    Some((
        format!("{scheme}://{host}{}", &rest[authority_end..]),
        user.to_string(),
        password.to_string(),
    ))
}

/// A URL without its user information.
pub fn shown_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}{path}")
        }
        None => url.to_string(),
    }
}
