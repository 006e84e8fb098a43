#!/usr/bin/env bash
# Builds weir and runs it on its built-in default config (or /etc/weir/weir.toml
# if present): the Docker forward socket /run/weir/forward.sock and the
# journal, into /var/log/weir/events.ndjson. Needs root for those paths.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh build
cargo build --release --locked
exec ./target/release/weir run "$@"
