#!/usr/bin/env bash
# Runs every check and test of the workspace: formatting, clippy, unit, property, integration
# (against the real /dev/kvm where present) and doc tests. README and .ci/run call this.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "== what a VMM links: msr-filter-kvm pulls neither clap nor serde_json"
if cargo tree -p msr-filter-kvm -e normal | grep -E '(clap|serde_json) v'; then
  echo "msr-filter-kvm depends on the tool's dependencies (above)" >&2
  exit 1
fi
echo "== packaged crates: cargo package, then each package's own tests"
bash scripts/package-check.sh
echo "== loom: the live-replacement protocol, model-checked (msr-kvm/tests/loom_swap.rs)"
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p msr-filter-kvm --release --test loom_swap
echo "== the stack the C docs promise, in a release build (msr-ffi/tests/stack.rs)"
cargo test -p msr-filter-ffi --release --test stack
echo "== cargo test"
cargo test --workspace
