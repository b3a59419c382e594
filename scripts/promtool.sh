#!/usr/bin/env bash
# Prints the path of a promtool (Prometheus's rule checker), installing it first when needed:
# the one on PATH, or Debian's `prometheus` package (pinned below) unpacked into .tools/ (only
# its promtool is used: nothing is installed system-wide, no server runs).
set -euo pipefail
cd "$(dirname "$0")/.."
version="2.42.0+ds-5+deb12u1"
if command -v promtool >/dev/null; then
  command -v promtool
  exit 0
fi
dir="$PWD/.tools/prometheus-$version"
if [ ! -x "$dir/usr/bin/promtool" ]; then
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && { apt-get download "prometheus=$version" >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null && apt-get download "prometheus=$version" >/dev/null 2>&1; }; })
  mkdir -p "$dir"
  dpkg-deb -x "$work"/prometheus_*.deb "$dir"
fi
echo "$dir/usr/bin/promtool"
