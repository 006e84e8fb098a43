#!/bin/sh
# Bounded fuzzing of one target in fuzz/fuzz_targets:
#   scrub           never panics, valid UTF-8 in gives valid UTF-8 out,
#                   scrubbing twice equals once
#   forward_decode  the Forward protocol decoder never panics on any bytes
#
#   scripts/fuzz.sh [TARGET] [SECONDS]      default: scrub 60
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). cargo-fuzz uses nightly-only
# compiler flags (-Z sanitizer); RUSTC_BOOTSTRAP=1 lets the stable toolchain
# accept them. The corpus is kept in fuzz/corpus/TARGET between runs; a crash
# is saved in fuzz/artifacts/TARGET/ and makes this script exit non-zero.
set -eu
cd "$(dirname "$0")/../fuzz"
target="${1:-scrub}"
secs="${2:-60}"
RUSTC_BOOTSTRAP=1 exec cargo fuzz run "$target" -- -max_total_time="$secs" -max_len=65536
