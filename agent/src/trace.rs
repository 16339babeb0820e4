//! Debug trace files (`MIDDLE_AGENT_DEBUG`): full prompts, worker outputs and Director answers,
//! redacted, appended under the trace directory, which is never inside the repository.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::redact::Redactor;

/// An append-only trace file; a no-op when tracing is off.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    path: Option<PathBuf>,
    redactor: Redactor,
    lock: Arc<Mutex<()>>,
}

impl Trace {
    /// A trace at `<dir>/director_<session>.log` (the directory is created), or a no-op.
    pub fn new(enabled: bool, dir: &Path, session_id: &str, redactor: Redactor) -> Self {
        let path = enabled
            .then(|| {
                std::fs::create_dir_all(dir).ok()?;
                Some(dir.join(format!("director_{session_id}.log")))
            })
            .flatten();
        Self {
            path,
            redactor,
            lock: Arc::default(),
        }
    }

    /// The trace file, when tracing is on.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Appends an entry with a UTC timestamp header.
    pub fn write(&self, title: &str, body: &str) {
        let Some(path) = &self.path else { return };
        let _guard = self.lock.lock();
        let entry = format!(
            "=== {} ===\n{}\n{}\n\n",
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ"),
            title,
            self.redactor.redact(body)
        );
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = f.write_all(entry.as_bytes());
        }
    }
}
