//! The `opencode` executable under test and the agent's user: finding the pinned OpenCode (or
//! saying why the suite is skipped), running the agent as `nobody` when the tests run as root,
//! and staging executables that user cannot reach.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The OpenCode version the agent is tested with (`Dockerfile.agent`'s `OPENCODE_VERSION`).
pub const OPENCODE_VERSION: &str = "1.18.33";
/// The marker `scripts/install-opencode.sh` leaves when it could not install OpenCode.
pub const INSTALL_FAILED_MARKER: &str = ".tools/opencode/INSTALL_FAILED";
/// Where `scripts/install-opencode.sh` installs the binary.
pub const INSTALLED_BIN: &str = ".tools/opencode/node_modules/.bin/opencode";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the e2e crate is inside the repository")
        .to_path_buf()
}

/// Says why the suite is skipped, once per process, on the real stderr (the test harness
/// captures `eprintln!` of passing tests).
fn skipped(why: &str) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), "SKIPPED (real OpenCode): {why}");
    });
}

/// The `opencode` executable to test with: `OPENCODE_BIN`, else the one
/// `scripts/install-opencode.sh` installed. `None` (after printing why, loudly) only when it is
/// missing and the installer left its failure marker, or outside CI.
///
/// # Panics
/// When it is missing under `CI=true` without the installer's failure marker, or when it is not
/// version [`OPENCODE_VERSION`].
pub fn opencode_bin() -> Option<PathBuf> {
    let root = repo_root();
    let bin = std::env::var_os("OPENCODE_BIN")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(INSTALLED_BIN));
    if !bin.is_file() {
        let marker = root.join(INSTALL_FAILED_MARKER);
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        if let Ok(reason) = std::fs::read_to_string(&marker) {
            skipped(&format!(
                "the real-OpenCode suite needs opencode-ai@{OPENCODE_VERSION}, which could not be installed: {}",
                reason.trim()
            ));
            return None;
        }
        assert!(
            !ci,
            "{} does not exist and scripts/install-opencode.sh left no failure marker ({INSTALL_FAILED_MARKER}); \
             run scripts/install-opencode.sh or set OPENCODE_BIN",
            bin.display()
        );
        skipped(&format!(
            "{} does not exist; run scripts/install-opencode.sh (or set OPENCODE_BIN) to run the real-OpenCode suite",
            bin.display()
        ));
        return None;
    }
    let out = std::process::Command::new(&bin)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("running {} --version: {e}", bin.display()));
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(
        version,
        OPENCODE_VERSION,
        "{} is not the pinned OpenCode",
        bin.display()
    );
    Some(bin)
}

/// The user the agent runs as: `nobody` (uid, gid) when the tests run as root, else the tests'
/// own (`None`).
pub fn agent_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&"nobody") && f.len() > 3)
            .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
            .flatten()
    })
}

/// Gives `path` and everything below it to `owner`.
pub(crate) fn chown_tree(path: &Path, owner: Option<(u32, u32)>) {
    let Some((uid, gid)) = owner else { return };
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).expect("chown");
    if path.is_dir() && !path.is_symlink() {
        for entry in std::fs::read_dir(path).expect("read_dir").flatten() {
            chown_tree(&entry.path(), owner);
        }
    }
}

/// Whether a user other than the file's owner (and not in its group) can execute `path`: every
/// directory on the way searchable by others, the file executable by others.
pub fn executable_by_others(path: &Path) -> bool {
    let Ok(real) = path.canonicalize() else {
        return false;
    };
    let mode = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode())
            .unwrap_or(0)
    };
    mode(&real) & 0o001 != 0 && real.ancestors().skip(1).all(|d| mode(d) & 0o001 != 0)
}

/// `path` where the agent's user can execute it: as is when it can, else a hard link (or copy)
/// in a shared staging directory under the temp dir, reused while the file is unchanged.
pub fn reachable(path: &Path, owner: Option<(u32, u32)>) -> PathBuf {
    if owner.is_none() || executable_by_others(path) {
        return path.to_path_buf();
    }
    let real = path.canonicalize().expect("the executable exists");
    let meta = std::fs::metadata(&real).expect("the executable's metadata");
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("bin")
        .to_owned();
    let dir = std::env::temp_dir().join("terarchitect-e2e-bin");
    std::fs::create_dir_all(&dir).expect("the staging directory");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let source = {
        use std::hash::{Hash as _, Hasher as _};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        real.hash(&mut h);
        format!("{name}-{:016x}-", h.finish())
    };
    let staged = dir.join(format!("{source}{}-{mtime}", meta.len()));
    if !staged.exists() {
        // Older versions of the same executable go (a running one keeps its inode).
        for old in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if old.file_name().to_string_lossy().starts_with(&source) {
                let _ = std::fs::remove_file(old.path());
            }
        }
        let tmp = dir.join(format!(".{name}-{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        if std::fs::hard_link(&real, &tmp).is_err() {
            std::fs::copy(&real, &tmp).expect("copying the executable");
        }
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::rename(&tmp, &staged).expect("staging the executable");
    }
    staged
}
