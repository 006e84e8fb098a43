#!/bin/sh
# Bounded fuzzing of the scrubber (fuzz/fuzz_targets/scrub.rs): never panics,
# valid UTF-8 in gives valid UTF-8 out (WEIR_FUZZ_IDEMPOTENT=1: and scrubbing
# twice equals once).
#
#   scripts/fuzz.sh [SECONDS]      default 60
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). cargo-fuzz uses nightly-only
# compiler flags (-Z sanitizer); RUSTC_BOOTSTRAP=1 lets the stable toolchain
# accept them. The corpus is kept in fuzz/corpus/scrub between runs; a crash
# is saved in fuzz/artifacts/scrub/ and makes this script exit non-zero.
set -eu
cd "$(dirname "$0")/../fuzz"
secs="${1:-60}"
RUSTC_BOOTSTRAP=1 exec cargo fuzz run scrub -- -max_total_time="$secs" -max_len=4096
