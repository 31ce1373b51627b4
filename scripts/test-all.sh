#!/usr/bin/env bash
# Runs every check and test of the workspace: formatting, clippy, unit, property, integration
# (against the real /dev/kvm where present) and doc tests. README and .ci/run call this.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "== packaged crates: cargo package, then each package's own tests"
bash scripts/package-check.sh
echo "== cargo test"
cargo test --workspace
