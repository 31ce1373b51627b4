//! The `rust-version` the crates declare is one every dependency in the lock file supports:
//! no dependency declares a newer minimum (heapless 0.9.4 needs 1.88, for one).

use std::process::Command;

use serde_json::Value;

/// `1.88` or `1.88.0` as (major, minor, patch).
fn version(text: &str) -> (u64, u64, u64) {
    let mut parts = text.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

#[test]
fn no_dependency_needs_a_newer_rust_than_we_declare() {
    let ours = env!("CARGO_PKG_RUST_VERSION");
    assert!(!ours.is_empty(), "the crate declares no rust-version");
    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("cargo metadata is JSON");
    let packages = metadata["packages"].as_array().expect("a package list");
    assert!(packages.len() > 10, "too few packages: {}", packages.len());
    let mut newer = Vec::new();
    let mut checked = 0;
    for p in packages {
        if let Some(needs) = p["rust_version"].as_str() {
            checked += 1;
            if version(needs) > version(ours) {
                newer.push(format!("{} {} needs Rust {needs}", p["name"], p["version"]));
            }
        }
    }
    assert!(checked > 0, "no package declares a rust-version");
    assert!(
        newer.is_empty(),
        "rust-version {ours} is too old for: {}",
        newer.join(", ")
    );
}

#[test]
fn versions_compare_numerically() {
    assert!(version("1.88") > version("1.87.1"));
    assert!(version("1.100") > version("1.88.0"));
    assert_eq!(version("1.88"), version("1.88.0"));
}
