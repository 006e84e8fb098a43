#!/bin/sh
# The end-to-end fault suite in its long form (20 kill -9, a 3-minute Loki
# outage, ...). Needs root (tmpfs, journald namespaces). CI runs the short form
# with `cargo test --test it e2e`.
set -eu
cd "$(dirname "$0")/.."
WEIR_E2E=full exec cargo test --release --test it e2e -- --nocapture --test-threads 1
