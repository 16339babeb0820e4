//! Git through the `git` CLI.
//!
//! The GitHub token never appears in a URL, an argument or `.git/config`: it is handed to each
//! git process as an `http.extraHeader` through the `GIT_CONFIG_COUNT`/`GIT_CONFIG_KEY_n`/
//! `GIT_CONFIG_VALUE_n` environment, scoped to the remote's origin.
//!
//! git runs with the allowlisted environment of [`crate::sandbox`] (no agent secret) and with
//! hooks and fsmonitor turned off: the worker can write `.git/hooks`, and a hook run by the
//! agent's own `git push` would otherwise see the token header. Only the network commands
//! (clone, ls-remote, fetch, push) get the header, with no global or system git config, and
//! only after the repository's own config was checked for settings that could send git
//! traffic elsewhere ([`risky_config_key`]), which the worker could have written.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;

use crate::config::Secret;
use crate::redact::Redactor;

/// Errors of a git command.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GitError {
    /// git could not be started.
    #[error("could not run git: {0}")]
    Spawn(String),
    /// git exited with a failure.
    #[error("git {command} failed: {message}")]
    Failed {
        /// The sub-command and its arguments (no secrets).
        command: String,
        /// git's stderr (redacted), or its exit status.
        message: String,
    },
    /// git did not finish in time.
    #[error("git {command} timed out after {seconds}s")]
    Timeout {
        /// The sub-command.
        command: String,
        /// The timeout.
        seconds: u64,
    },
}

/// Short timeout for local commands.
const LOCAL: Duration = Duration::from_secs(30);
/// Timeout of network commands (clone, fetch, push).
const NETWORK: Duration = Duration::from_secs(300);

/// The authentication environment of every git process.
#[derive(Clone, Default)]
pub struct GitAuth {
    env: Vec<(String, String)>,
}

impl std::fmt::Debug for GitAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GitAuth(header: {})", !self.env.is_empty())
    }
}

impl GitAuth {
    /// Authentication for `repo_url` with `token` (none without a token). For http(s) remotes
    /// the header is scoped to the remote's origin, so no other host ever receives it.
    pub fn new(repo_url: &str, token: Option<&Secret>) -> Self {
        let Some(token) = token else {
            return Self::default();
        };
        let key = match url::Url::parse(repo_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
                let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
                format!(
                    "http.{}://{}{}/.extraHeader",
                    u.scheme(),
                    u.host_str().unwrap_or_default(),
                    port
                )
            }
            _ => "http.extraHeader".to_owned(),
        };
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("x-access-token:{}", token.expose()));
        Self {
            env: vec![
                ("GIT_CONFIG_COUNT".into(), "1".into()),
                ("GIT_CONFIG_KEY_0".into(), key),
                (
                    "GIT_CONFIG_VALUE_0".into(),
                    format!("Authorization: Basic {basic}"),
                ),
            ],
        }
    }

    /// The variables to set on a git process.
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }
}

/// Whether a repository-local git config key could route the agent's authenticated git traffic
/// somewhere else or run a program during it (proxies, TLS settings, URL rewrites, credential
/// helpers, transport commands).
pub fn risky_config_key(key: &str) -> bool {
    let k = key.to_lowercase();
    const PREFIXES: [&str; 5] = ["http.", "url.", "credential.", "protocol.", "include"];
    const CORE: [&str; 5] = [
        "core.sshcommand",
        "core.gitproxy",
        "core.askpass",
        "core.hookspath",
        "core.fsmonitor",
    ];
    const REMOTE: [&str; 6] = [
        ".proxy",
        ".pushurl",
        ".receivepack",
        ".uploadpack",
        ".vcs",
        ".proxyauthmethod",
    ];
    PREFIXES.iter().any(|p| k.starts_with(p))
        || CORE.contains(&k.as_str())
        || (k.starts_with("remote.") && REMOTE.iter().any(|s| k.ends_with(s)))
}

/// The author and committer identity of the agent's commits.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Name.
    pub name: String,
    /// Email.
    pub email: String,
}

/// A git work tree.
#[derive(Debug, Clone)]
pub struct Repo {
    dir: PathBuf,
    auth: GitAuth,
    identity: Identity,
    redactor: Redactor,
}

async fn run_git(
    cwd: Option<&Path>,
    args: &[&str],
    auth: &GitAuth,
    identity: Option<&Identity>,
    timeout: Duration,
    redactor: &Redactor,
) -> Result<String, GitError> {
    let command = args.iter().take(3).copied().collect::<Vec<_>>().join(" ");
    let mut cmd = tokio::process::Command::new("git");
    cmd.env_clear()
        .envs(crate::sandbox::worker_env(
            &crate::config::Env::from_process(),
        ))
        .args([
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "core.fsmonitor=false",
        ])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GCM_INTERACTIVE", "never")
        .env_remove("GIT_ASKPASS")
        .env_remove("SSH_ASKPASS");
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    if !auth.env().is_empty() {
        // Authenticated: the agent's own settings only (the worker can write ~/.gitconfig).
        cmd.env("GIT_CONFIG_GLOBAL", "/dev/null");
    }
    for (k, v) in auth.env() {
        cmd.env(k, v);
    }
    if let Some(id) = identity {
        cmd.env("GIT_AUTHOR_NAME", &id.name)
            .env("GIT_AUTHOR_EMAIL", &id.email)
            .env("GIT_COMMITTER_NAME", &id.name)
            .env("GIT_COMMITTER_EMAIL", &id.email);
    }
    let child = cmd.spawn().map_err(|e| GitError::Spawn(e.to_string()))?;
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(r) => r.map_err(|e| GitError::Spawn(e.to_string()))?,
        Err(_) => {
            return Err(GitError::Timeout {
                command,
                seconds: timeout.as_secs(),
            });
        }
    };
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        let message = if stderr.is_empty() {
            out.status.to_string()
        } else {
            crate::api::truncate_chars(&redactor.redact(&stderr), 2000)
        };
        Err(GitError::Failed { command, message })
    }
}

impl Repo {
    /// Clones `url` into `dir` (a missing or empty directory), shallowly.
    pub async fn clone_into(
        url: &str,
        dir: &Path,
        auth: GitAuth,
        identity: Identity,
        redactor: Redactor,
    ) -> Result<Self, GitError> {
        let dir_str = dir.to_string_lossy().into_owned();
        run_git(
            None,
            &["clone", "--depth", "1", "--no-tags", "--", url, &dir_str],
            &auth,
            None,
            NETWORK,
            &redactor,
        )
        .await?;
        Ok(Self {
            dir: dir.to_owned(),
            auth,
            identity,
            redactor,
        })
    }

    /// Opens an existing work tree.
    pub async fn open(
        dir: &Path,
        auth: GitAuth,
        identity: Identity,
        redactor: Redactor,
    ) -> Result<Self, GitError> {
        let repo = Self {
            dir: dir.to_owned(),
            auth,
            identity,
            redactor,
        };
        repo.git(&["rev-parse", "--is-inside-work-tree"], LOCAL)
            .await?;
        Ok(repo)
    }

    /// The work tree.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A local git command: no credentials.
    async fn git(&self, args: &[&str], timeout: Duration) -> Result<String, GitError> {
        run_git(
            Some(&self.dir),
            args,
            &GitAuth::default(),
            Some(&self.identity),
            timeout,
            &self.redactor,
        )
        .await
    }

    /// A network git command with the token header, after [`Repo::check_config`].
    async fn git_network(&self, args: &[&str]) -> Result<String, GitError> {
        if !self.auth.env().is_empty() {
            self.check_config().await?;
        }
        run_git(
            Some(&self.dir),
            args,
            &self.auth,
            Some(&self.identity),
            NETWORK,
            &self.redactor,
        )
        .await
    }

    /// Fails when the repository's config (includes followed) holds a [`risky_config_key`].
    pub async fn check_config(&self) -> Result<(), GitError> {
        let keys = self
            .git(
                &["config", "--local", "--includes", "--list", "--name-only"],
                LOCAL,
            )
            .await?;
        let risky: Vec<&str> = keys.lines().filter(|k| risky_config_key(k)).collect();
        if risky.is_empty() {
            return Ok(());
        }
        Err(GitError::Failed {
            command: "config".into(),
            message: format!(
                "refusing to use the GitHub token: the repository's git config sets {} (written during the run?), which could send it elsewhere",
                risky.join(", ")
            ),
        })
    }

    /// The checked-out branch.
    pub async fn current_branch(&self) -> Result<String, GitError> {
        Ok(self
            .git(&["rev-parse", "--abbrev-ref", "HEAD"], LOCAL)
            .await?
            .trim()
            .to_owned())
    }

    /// The remote's default branch (`origin/HEAD`), falling back to `main`/`master` when they
    /// exist on the remote, then to the checked-out branch.
    pub async fn default_branch(&self) -> Result<String, GitError> {
        if let Ok(head) = self
            .git(
                &["symbolic-ref", "--short", "refs/remotes/origin/HEAD"],
                LOCAL,
            )
            .await
            && let Some(b) = head.trim().strip_prefix("origin/")
        {
            return Ok(b.to_owned());
        }
        for b in ["main", "master"] {
            if self
                .git(
                    &[
                        "rev-parse",
                        "--verify",
                        "--quiet",
                        &format!("refs/remotes/origin/{b}"),
                    ],
                    LOCAL,
                )
                .await
                .is_ok()
            {
                return Ok(b.to_owned());
            }
        }
        self.current_branch().await
    }

    /// Whether `branch` exists on `origin`.
    pub async fn remote_branch_exists(&self, branch: &str) -> Result<bool, GitError> {
        let out = self
            .git_network(&[
                "ls-remote",
                "--heads",
                "origin",
                &format!("refs/heads/{branch}"),
            ])
            .await?;
        Ok(!out.trim().is_empty())
    }

    /// Fetches `branch` from `origin` into `refs/remotes/origin/<branch>`.
    pub async fn fetch_branch(&self, branch: &str) -> Result<(), GitError> {
        self.git_network(&[
            "fetch",
            "--no-tags",
            "origin",
            &format!("+refs/heads/{branch}:refs/remotes/origin/{branch}"),
        ])
        .await
        .map(drop)
    }

    /// Checks out `branch`, created (or reset) at `start`.
    pub async fn checkout_at(&self, branch: &str, start: &str) -> Result<(), GitError> {
        self.git(&["checkout", "-B", branch, start], LOCAL)
            .await
            .map(drop)
    }

    /// Checks out `branch`, creating it from the current commit when it does not exist.
    pub async fn checkout_or_create(&self, branch: &str) -> Result<(), GitError> {
        if self
            .git(
                &[
                    "rev-parse",
                    "--verify",
                    "--quiet",
                    &format!("refs/heads/{branch}"),
                ],
                LOCAL,
            )
            .await
            .is_ok()
        {
            self.git(&["checkout", branch], LOCAL).await.map(drop)
        } else {
            self.git(&["checkout", "-b", branch], LOCAL).await.map(drop)
        }
    }

    /// Adds patterns to `.git/info/exclude` (once each), so those paths are never committed.
    pub async fn exclude(&self, patterns: &[&str]) -> Result<(), GitError> {
        let path = self
            .git(&["rev-parse", "--git-path", "info/exclude"], LOCAL)
            .await?;
        let path = self.dir.join(path.trim());
        let existing = std::fs::read_to_string(&path).unwrap_or_default();
        let mut text = existing.clone();
        for p in patterns {
            if !existing.lines().any(|l| l.trim() == *p) {
                if !text.is_empty() && !text.ends_with('\n') {
                    text.push('\n');
                }
                text.push_str(p);
                text.push('\n');
            }
        }
        if text != existing {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| GitError::Spawn(e.to_string()))?;
            }
            std::fs::write(&path, text).map_err(|e| GitError::Spawn(e.to_string()))?;
        }
        Ok(())
    }

    /// Stages every change, new files included.
    pub async fn stage_all(&self) -> Result<(), GitError> {
        self.git(&["add", "-A"], LOCAL).await.map(drop)
    }

    /// The staged diff (call after [`Repo::stage_all`], so new files are in it).
    pub async fn staged_diff(&self) -> Result<String, GitError> {
        self.git(&["diff", "--cached", "--no-color"], LOCAL).await
    }

    /// Whether anything is staged.
    pub async fn has_staged_changes(&self) -> Result<bool, GitError> {
        Ok(!self
            .git(&["diff", "--cached", "--name-only"], LOCAL)
            .await?
            .trim()
            .is_empty())
    }

    /// Commits the staged changes.
    pub async fn commit(&self, message: &str) -> Result<(), GitError> {
        self.git(&["commit", "--no-verify", "-q", "-m", message], LOCAL)
            .await
            .map(drop)
    }

    /// Stages everything and commits it when there is something; returns whether it committed.
    pub async fn commit_all(&self, message: &str) -> Result<bool, GitError> {
        self.stage_all().await?;
        if self.has_staged_changes().await? {
            self.commit(message).await?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Number of commits of `HEAD` not in `base` (a ref such as `origin/main`).
    pub async fn commits_ahead(&self, base: &str) -> Result<u64, GitError> {
        let out = self
            .git(&["rev-list", "--count", &format!("{base}..HEAD")], LOCAL)
            .await?;
        Ok(out.trim().parse().unwrap_or(0))
    }

    /// Pushes `HEAD` to `refs/heads/<branch>` on `origin` (never forced).
    pub async fn push(&self, branch: &str) -> Result<(), GitError> {
        self.git_network(&["push", "origin", &format!("HEAD:refs/heads/{branch}")])
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_header_is_scoped_and_never_in_a_url() {
        let token = Secret::new("ghp_tok123");
        let a = GitAuth::new("https://github.com/acme/shop.git", Some(&token));
        let env: std::collections::HashMap<_, _> = a.env().iter().cloned().collect();
        assert_eq!(env["GIT_CONFIG_COUNT"], "1");
        assert_eq!(
            env["GIT_CONFIG_KEY_0"],
            "http.https://github.com/.extraHeader"
        );
        let expected =
            base64::engine::general_purpose::STANDARD.encode("x-access-token:ghp_tok123");
        assert_eq!(
            env["GIT_CONFIG_VALUE_0"],
            format!("Authorization: Basic {expected}")
        );
        let f = GitAuth::new("file:///tmp/acme/shop.git", Some(&token));
        assert_eq!(f.env()[1].1, "http.extraHeader");
        assert!(GitAuth::new("https://x/y", None).env().is_empty());
        assert!(!format!("{a:?}").contains("ghp"));
    }

    #[test]
    fn risky_config_keys() {
        for k in [
            "http.sslVerify",
            "http.https://github.com/.proxy",
            "url.https://evil/.insteadOf",
            "credential.helper",
            "include.path",
            "includeIf.gitdir:/.path",
            "core.sshCommand",
            "remote.origin.pushurl",
            "remote.origin.receivepack",
            "protocol.ext.allow",
        ] {
            assert!(risky_config_key(k), "{k}");
        }
        for k in [
            "core.bare",
            "remote.origin.url",
            "remote.origin.fetch",
            "branch.main.remote",
            "user.name",
        ] {
            assert!(!risky_config_key(k), "{k}");
        }
    }

    #[tokio::test]
    async fn a_repository_config_that_could_redirect_the_token_stops_network_commands() {
        let dir = tempfile::tempdir().unwrap();
        let r = Redactor::default();
        run_git(
            Some(dir.path()),
            &["init", "-q"],
            &GitAuth::default(),
            None,
            LOCAL,
            &r,
        )
        .await
        .unwrap();
        let token = Secret::new("ghp_tok123456");
        let identity = Identity {
            name: "a".into(),
            email: "a@b".into(),
        };
        let repo = Repo::open(
            dir.path(),
            GitAuth::new("https://github.com/acme/shop.git", Some(&token)),
            identity,
            r,
        )
        .await
        .unwrap();
        repo.check_config().await.unwrap();
        repo.git(&["config", "http.sslVerify", "false"], LOCAL)
            .await
            .unwrap();
        let err = repo.push("main").await.unwrap_err().to_string();
        assert!(
            err.contains("refusing to use the GitHub token") && err.contains("http.sslverify"),
            "{err}"
        );
    }
}
