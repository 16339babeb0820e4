//! `crds/agentjob.yaml` is generated from the Rust types; this fails when it is stale.

use std::path::PathBuf;

#[test]
fn committed_crd_matches_the_generated_one() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds/agentjob.yaml");
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let generated = terarchitect_operator::crd::crd_yaml();
    assert!(
        committed == generated,
        "{} is stale; regenerate it with `cargo run -p terarchitect-operator -- crd > crds/agentjob.yaml`",
        path.display()
    );
}
