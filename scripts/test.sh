#!/usr/bin/env bash
# Every check CI runs: formatting, lints, all tests (including those against
# the real Docker daemon and journald, which need root).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
# Benches are not run here (they are `cargo bench --bench NAME`); clippy checks they build.
cargo test --locked -- --test-threads 2
