#!/usr/bin/env bash
# Installs what building and testing weir needs on a fresh Debian 12 machine
# (as root). Idempotent; `deps.sh build` installs only what building needs.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

build_pkgs=(libsystemd-dev pkg-config gcc)
# Real peers for the integration tests: Docker's daemon and a busybox rootfs,
# Go with the Forward and GELF client libraries, journald and its tools
# (systemd-journal-remote writes the journal benchmark's multi-file journal).
# Units and package tests: lintian, procps, adduser, man-db. TLS test
# certificates: openssl.
test_pkgs=(docker.io busybox-static golang-go golang-github-fluent-fluent-logger-golang-dev
  golang-github-graylog2-go-gelf-dev systemd systemd-journal-remote python3-pip util-linux iproute2 e2fsprogs
  lintian procps adduser man-db openssl)

pkgs=("${build_pkgs[@]}")
[ "${1:-all}" = build ] || pkgs+=("${test_pkgs[@]}")

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ "${1:-all}" != build ]; then
  python3 -c 'import fluent' 2>/dev/null || pip install -q fluent-logger
fi
# promtool, Prometheus's own checker of the text format and of PromQL (the
# metrics tests run it on /metrics and on the dashboard's queries), taken out
# of Debian's prometheus package so that no Prometheus server or service is
# installed.
if [ "${1:-all}" != build ] && ! command -v promtool >/dev/null; then
  tmp=$(mktemp -d)
  (cd "$tmp" && { apt-get download -q prometheus || { apt-get update -q && apt-get download -q prometheus; }; })
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/root"
  install -m 755 "$tmp/root/usr/bin/promtool" /usr/local/bin/promtool
  rm -rf "$tmp"
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }
# The package tests build the .deb with cargo-deb.
if [ "${1:-all}" != build ]; then
  cargo deb --version >/dev/null 2>&1 || cargo install cargo-deb --locked
fi
