//! A local bare repository standing in for `github.com/acme/shop`, and a `git` helper.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs git in `dir` and returns stdout (panics on failure).
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=Seed", "-c", "user.email=seed@example.com"])
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A bare repository at `<root>/remotes/acme/shop.git` with one commit (`Initial commit`,
/// `README.md`) on `main`, and a seed clone at `<root>/seed` to push more from.
#[derive(Debug, Clone)]
pub struct GitRemote {
    /// The bare repository.
    pub remote: PathBuf,
    /// A working clone of it.
    pub seed: PathBuf,
}

impl GitRemote {
    /// Creates the repository under `root`.
    pub fn create(root: &Path) -> Self {
        let remote = root.join("remotes/acme/shop.git");
        std::fs::create_dir_all(&remote).expect("creating the remote directory");
        git(&remote, &["init", "-q", "--bare", "-b", "main"]);
        let seed = root.join("seed");
        git(
            root,
            &[
                "clone",
                "-q",
                remote.to_str().expect("UTF-8 path"),
                seed.to_str().expect("UTF-8 path"),
            ],
        );
        git(&seed, &["checkout", "-q", "-b", "main"]);
        std::fs::write(seed.join("README.md"), "# Shop\n").expect("writing README.md");
        git(&seed, &["add", "-A"]);
        git(&seed, &["commit", "-q", "-m", "Initial commit"]);
        git(&seed, &["push", "-q", "origin", "main"]);
        Self { remote, seed }
    }

    /// The `file://` URL of the bare repository (its slug is `acme/shop`).
    pub fn url(&self) -> String {
        format!("file://{}", self.remote.display())
    }

    /// Output lines of a git command in the bare repository (empty on failure).
    pub fn lines(&self, args: &[&str]) -> Vec<String> {
        let out = Command::new("git")
            .args(args)
            .current_dir(&self.remote)
            .output()
            .expect("git");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Files of a branch (empty when the branch does not exist).
    pub fn files(&self, branch: &str) -> Vec<String> {
        self.lines(&["ls-tree", "-r", "--name-only", branch])
    }

    /// Commit subjects of a branch, newest first.
    pub fn log(&self, branch: &str) -> Vec<String> {
        self.lines(&["log", "--format=%s", branch])
    }

    /// The commit a branch points at.
    pub fn rev(&self, branch: &str) -> Option<String> {
        self.lines(&[
            "rev-parse",
            "--verify",
            "-q",
            &format!("refs/heads/{branch}"),
        ])
        .into_iter()
        .next()
    }

    /// Every branch.
    pub fn branches(&self) -> Vec<String> {
        self.lines(&["for-each-ref", "--format=%(refname:short)", "refs/heads"])
    }

    /// Pushes `branch` (from `main`) with one extra commit adding `file` (an earlier run's work).
    pub fn push_branch(&self, branch: &str, file: &str) {
        git(&self.seed, &["checkout", "-q", "-B", branch, "origin/main"]);
        std::fs::write(self.seed.join(file), "earlier work\n").expect("writing the file");
        git(&self.seed, &["add", "-A"]);
        git(&self.seed, &["commit", "-q", "-m", "Earlier work"]);
        git(
            &self.seed,
            &[
                "push",
                "-q",
                "origin",
                &format!("{branch}:refs/heads/{branch}"),
            ],
        );
    }
}
