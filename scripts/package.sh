#!/usr/bin/env bash
# Builds the Debian package (target/debian/weir_<version>-1_<arch>.deb) and
# checks it with lintian. One command on a fresh Debian 12 machine, as root:
# installs the build dependencies and cargo-deb if missing.
# Install the result with:  apt install ./target/debian/weir_*.deb
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh build
command -v lintian >/dev/null || { export DEBIAN_FRONTEND=noninteractive; apt-get install -y -q --no-install-recommends lintian; }
cargo deb --version >/dev/null 2>&1 || cargo install cargo-deb --locked
# --strip: the release profile keeps line tables for backtraces; the package
# ships a stripped binary (lintian: unstripped-binary-or-object).
deb=$(cargo deb --locked --strip | tail -n 1)
echo "built $deb"
# Errors fail the build; warnings and info are printed for the record.
lintian --fail-on error "$deb"
echo "lintian: no errors"
