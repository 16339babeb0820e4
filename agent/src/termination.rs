//! The termination message: the agent's very last act is to write
//! `AgentOutcome::message_line(msg)` to the file named by `TERARCHITECT_TERMINATION_LOG`
//! (default `/dev/termination-log` when it exists and is writable) and to print the same line
//! last on stderr. Kubernetes copies the file into the pod's terminated state, where the operator
//! reads the reason.

use std::io::Write;
use std::path::PathBuf;

use crate::config::Env;
use crate::error::RunResult;

/// The Kubernetes default termination-message path.
pub const DEFAULT_TERMINATION_LOG: &str = "/dev/termination-log";

/// Where the termination line goes, if anywhere.
pub fn termination_path(env: &Env) -> Option<PathBuf> {
    if let Some(p) = env.get("TERARCHITECT_TERMINATION_LOG") {
        return Some(PathBuf::from(p));
    }
    let default = PathBuf::from(DEFAULT_TERMINATION_LOG);
    let writable = default.exists()
        && std::fs::OpenOptions::new()
            .append(true)
            .open(&default)
            .is_ok();
    writable.then_some(default)
}

/// Writes the termination line to the file (errors are ignored) and prints it on stderr.
/// Returns the line.
pub fn finish(env: &Env, result: &RunResult) -> String {
    let line = result.outcome.message_line(&result.message);
    if let Some(path) = termination_path(env) {
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
        if let Err(e) = written {
            let _ = writeln!(
                std::io::stderr(),
                "could not write the termination message to {}: {e}",
                path.display()
            );
        }
    }
    let _ = writeln!(std::io::stderr(), "{line}");
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use terarchitect_worker_api::AgentOutcome;

    #[test]
    fn writes_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("term");
        let env = Env::from_pairs([("TERARCHITECT_TERMINATION_LOG", path.to_str().unwrap())]);
        let line = finish(
            &env,
            &RunResult {
                outcome: AgentOutcome::PushFailed,
                message: "git push\nrejected".into(),
            },
        );
        assert_eq!(line, "PushFailed: git push rejected");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{line}\n"));
        let env = Env::from_pairs([("TERARCHITECT_TERMINATION_LOG", "/nonexistent-dir/x/term")]);
        finish(&env, &RunResult::succeeded("ok"));
    }
}
