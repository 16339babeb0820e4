//! What the worker process may see of the agent: an environment built from an allowlist (no
//! GitHub token, no worker/run token, no Director key, no `GIT_CONFIG_*` auth header), and an
//! agent process that is not dumpable, so a worker running as the same uid cannot read
//! `/proc/<agent pid>/environ` or the agent's memory.

use crate::config::Env;
use crate::redact::is_secret_key;

/// Variables a worker process (`opencode serve`, `claude`, `dockerd`) inherits, when set.
pub const WORKER_ENV_ALLOWLIST: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TERM",
    "TMPDIR",
    "TMP",
    "TEMP",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "NODE_EXTRA_CA_CERTS",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "NPM_CONFIG_CACHE",
    "PIP_CACHE_DIR",
    "DOCKER_HOST",
    "JAVA_HOME",
    "CARGO_HOME",
    "RUSTUP_HOME",
    "GOPATH",
    "ANTHROPIC_BASE_URL",
    "DISABLE_TELEMETRY",
    "DISABLE_AUTOUPDATER",
];

/// Prefixes of variables a worker process inherits (locale, XDG base directories, Claude Code
/// settings).
pub const WORKER_ENV_PREFIXES: &[&str] = &["LC_", "XDG_", "CLAUDE_CODE_"];

/// Whether a variable may reach a worker process. Secret-looking names never do, even when
/// allowlisted (a proxy URL with a password is passed: egress needs it; see the README).
pub fn worker_may_see(key: &str) -> bool {
    let listed = WORKER_ENV_ALLOWLIST.contains(&key)
        || WORKER_ENV_PREFIXES.iter().any(|p| key.starts_with(p));
    listed && !is_secret_key(key)
}

/// The environment of a worker process: the allowlisted variables of `env`.
pub fn worker_env(env: &Env) -> Vec<(String, String)> {
    env.iter()
        .filter(|(k, _)| worker_may_see(k))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// A command for a worker process: cleared environment plus the allowlisted variables of `env`;
/// the process dies with the agent ([`crate::reaper::die_with_agent`]).
pub fn worker_command(program: &str, env: &Env) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    cmd.env_clear().envs(worker_env(env));
    crate::reaper::die_with_agent(&mut cmd);
    cmd
}

/// Marks this process non-dumpable (`prctl(PR_SET_DUMPABLE, 0)`): `/proc/<pid>/environ`,
/// `/proc/<pid>/mem` and ptrace become unavailable to other processes of the same uid
/// (the worker). Children do not inherit the flag. Returns whether it worked.
pub fn harden_process() -> bool {
    // SAFETY: prctl(2) with PR_SET_DUMPABLE takes plain integer arguments and has no memory
    // effects on this process.
    let rc = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if rc != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "could not make the agent non-dumpable"
        );
    }
    rc == 0
}

/// Whether this process is dumpable (`prctl(PR_GET_DUMPABLE)`).
pub fn is_dumpable() -> bool {
    // SAFETY: as above; PR_GET_DUMPABLE only returns a value.
    unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) == 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowlisted_non_secret_variables_pass() {
        let env = Env::from_pairs([
            ("PATH", "/usr/bin"),
            ("HOME", "/home/agent"),
            ("LC_ALL", "C.UTF-8"),
            ("XDG_DATA_HOME", "/x"),
            ("GITHUB_TOKEN", "ghp_secret"),
            ("TERARCHITECT_WORKER_API_KEY", "run-token"),
            ("AGENT_API_KEY", "sk-director"),
            ("WORKER_API_KEY", "sk-worker"),
            ("GIT_CONFIG_COUNT", "1"),
            ("GIT_CONFIG_VALUE_0", "Authorization: Basic x"),
            ("ANTHROPIC_API_KEY", "sk-ant"),
            ("OPENCODE_SERVER_PASSWORD", "pw"),
            ("XDG_SECRET_TOKEN", "nope"),
        ]);
        let mut keys: Vec<String> = worker_env(&env).into_iter().map(|(k, _)| k).collect();
        keys.sort();
        assert_eq!(keys, ["HOME", "LC_ALL", "PATH", "XDG_DATA_HOME"]);
    }

    /// Not a test: the agent side of the test below. Optionally hardens itself, then starts a
    /// child as the worker would (same uid, allowlisted environment) that reads this process's
    /// `/proc/<pid>/environ`; exits 10 when the read worked, 20 when it was refused.
    #[test]
    #[ignore = "helper process for a_non_dumpable_agent_hides_its_environ_from_the_worker"]
    fn dumpable_probe() {
        let Ok(mode) = std::env::var("DUMPABLE_PROBE") else {
            return;
        };
        if mode == "harden" {
            assert!(harden_process());
            assert!(!is_dumpable());
        }
        let env = Env::from_process();
        let status = std::process::Command::new("cat")
            .arg(format!("/proc/{}/environ", std::process::id()))
            .env_clear()
            .envs(worker_env(&env))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        std::process::exit(if status.success() { 10 } else { 20 });
    }

    #[test]
    fn a_non_dumpable_agent_hides_its_environ_from_the_worker() {
        use std::os::unix::process::CommandExt;
        // SAFETY: geteuid(2) only returns a value.
        let root = unsafe { libc::geteuid() } == 0;
        let run = |mode: &str| {
            let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
            cmd.args([
                "--exact",
                "sandbox::tests::dumpable_probe",
                "--ignored",
                "--test-threads=1",
            ])
            .env("DUMPABLE_PROBE", mode)
            .env("PROBE_API_KEY", "sk-must-stay-in-the-agent")
            .stdout(std::process::Stdio::null())
            .current_dir("/");
            if root {
                // Root may read any process; agent and worker share a non-root uid.
                cmd.uid(65534).gid(65534);
            }
            cmd.status().unwrap().code()
        };
        assert_eq!(
            run("plain"),
            Some(10),
            "control: a child of the same uid reads a dumpable parent's environ"
        );
        assert_eq!(run("harden"), Some(20), "non-dumpable: the read is refused");
    }
}
