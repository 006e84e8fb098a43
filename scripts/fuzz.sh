#!/bin/sh
# Bounded fuzzing of one target in fuzz/fuzz_targets:
#   scrub           never panics, valid UTF-8 in gives valid UTF-8 out,
#                   scrubbing twice equals once
#   forward_decode  the Forward protocol decoder never panics on any bytes;
#                   decoding a frame a few events at a time (as a connection
#                   does) gives exactly the events of decoding it at once
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
# Inputs up to 64 KiB for the scrubber (one log line); up to 1 MiB for the
# decoder, whose interesting inputs (many frames, big gzip frames) are larger.
case "$target" in
forward_decode) max_len=1048576 ;;
*) max_len=65536 ;;
esac
RUSTC_BOOTSTRAP=1 exec cargo fuzz run "$target" -- -max_total_time="$secs" -max_len="$max_len"
