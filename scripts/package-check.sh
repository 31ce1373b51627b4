#!/usr/bin/env bash
# Packages every published crate (`cargo package`, which also builds each from its package) and
# then runs each package's own tests from the extracted packages, so a test that reads a file
# outside its crate fails here rather than for a user of the published crate. The extracted
# crates are joined in a throw-away workspace whose [patch.crates-io] points the not yet
# published msr-filter-* dependencies at each other; it shares this workspace's target
# directory and lock file, so only our crates are rebuilt.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
crates=(msr-filter-core msr-filter-kvm msr-filter-cli msr-filter-ffi)
args=()
for c in "${crates[@]}"; do args+=(-p "$c"); done
# --no-verify: cargo's own check builds each package against a local registry whose crates it
# takes for immutable, so on a machine that ran it before it links stale builds of the same
# version. The workspace below builds and tests every package from its extracted files instead.
rm -rf target/package
cargo package --no-verify --allow-dirty "${args[@]}"

version=$(sed -n 's/^version = "\(.*\)"/\1/p' msr-core/Cargo.toml | head -1)
# A fixed place: test binaries keep the CARGO_MANIFEST_DIR they were built with.
work="$root/target/package-check/ws"
rm -rf "$work"
mkdir -p "$work"
members=""
patches=""
for c in "${crates[@]}"; do
  tar -xzf "target/package/$c-$version.crate" -C "$work"
  members+="\"$c-$version\", "
  patches+="$c = { path = \"$c-$version\" }"$'\n'
done
cat >"$work/Cargo.toml" <<TOML
[workspace]
resolver = "2"
members = [${members%, }]

[patch.crates-io]
$patches
$(sed -n '/^\[profile/,$p' "$root/Cargo.toml")
TOML
cp Cargo.lock "$work/Cargo.lock"
# Archive members carry a fixed old mtime; make the sources newer than any earlier build.
find "$work" -type f -exec touch {} +
cd "$work"
CARGO_TARGET_DIR="$root/target" cargo test --workspace
