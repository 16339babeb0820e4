//! The `terarchitect-operator` and `terarchitect-agent` executables the tests run as child
//! processes.
//!
//! Cargo has no stable way for one package's tests to depend on another package's binaries, so
//! the first call in each test process runs
//! `$CARGO build --workspace --bin terarchitect-operator --bin terarchitect-agent` with the
//! profile of the test executable itself (`target/<profile>/deps/<test>` → `target/<profile>/`)
//! and takes the two executables from that profile directory. Cargo only rebuilds what is stale,
//! so this costs well under a second when they are up to date. The environment can change that:
//!
//! - `TERARCHITECT_OPERATOR_BIN` / `TERARCHITECT_AGENT_BIN`: use these executables (no build);
//! - `TERARCHITECT_E2E_SKIP_BUILD=1`: do not run cargo, use what is in the profile directory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Paths of the executables under test.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `terarchitect-operator`.
    pub operator: PathBuf,
    /// `terarchitect-agent`.
    pub agent: PathBuf,
}

static BINARIES: OnceLock<Binaries> = OnceLock::new();

/// The executables, built (once per test process) if missing or stale.
///
/// # Panics
/// When the build fails or an executable cannot be found.
pub fn binaries() -> &'static Binaries {
    BINARIES.get_or_init(locate_or_build)
}

/// `target/<profile>/`: the directory of the running test executable, without `deps/`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let dir = exe.parent().expect("the executable has a directory");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("deps/ has a parent").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

fn from_env(key: &str) -> Option<PathBuf> {
    std::env::var_os(key)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn locate_or_build() -> Binaries {
    let dir = profile_dir();
    let (op_env, agent_env) = (
        from_env("TERARCHITECT_OPERATOR_BIN"),
        from_env("TERARCHITECT_AGENT_BIN"),
    );
    let skip = std::env::var("TERARCHITECT_E2E_SKIP_BUILD").is_ok_and(|v| v == "1" || v == "true");
    if !skip && (op_env.is_none() || agent_env.is_none()) {
        cargo_build(&dir);
    }
    let found = Binaries {
        operator: op_env.unwrap_or_else(|| dir.join("terarchitect-operator")),
        agent: agent_env.unwrap_or_else(|| dir.join("terarchitect-agent")),
    };
    for path in [&found.operator, &found.agent] {
        assert!(
            path.is_file(),
            "{} does not exist; build it with `cargo build -p terarchitect-operator -p terarchitect-agent` \
             (or point TERARCHITECT_OPERATOR_BIN / TERARCHITECT_AGENT_BIN at the executables)",
            path.display()
        );
    }
    found
}

/// Builds both executables into `profile_dir` with the same profile as the tests.
fn cargo_build(profile_dir: &Path) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut cmd = Command::new(cargo);
    // `cargo test` gives the test process the variables of its own package (CARGO_MANIFEST_DIR,
    // CARGO_PKG_*, ...). Some build scripts track them (ring: CARGO_MANIFEST_DIR), so passing
    // them on would make this build and the next `cargo test` rebuild each other's dependencies.
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let per_package = key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_BIN_EXE_")
            || matches!(
                key,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_MANIFEST_LINKS"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "OUT_DIR"
            );
        if per_package {
            cmd.env_remove(key);
        }
    }
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(&manifest)
        // The whole workspace selected (so dependency features are unified as in
        // `cargo test --workspace`, whose build is then reused as is), only the two binaries built.
        .args([
            "--workspace",
            "--bin",
            "terarchitect-operator",
            "--bin",
            "terarchitect-agent",
        ]);
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(other) => {
            cmd.args(["--profile", other]);
        }
    }
    // The root of a target directory carries CACHEDIR.TAG; a `--target <triple>` build has one
    // more level, which CARGO_TARGET_DIR (inherited) or the default already describes.
    if let Some(target_dir) = profile_dir.parent()
        && target_dir.join("CACHEDIR.TAG").exists()
    {
        cmd.arg("--target-dir").arg(target_dir);
    }
    let out = cmd.output().expect("running cargo build");
    assert!(
        out.status.success(),
        "building the operator and agent executables failed ({:?}):\n{}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
}
