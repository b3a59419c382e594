#!/usr/bin/env bash
# Runs every test: on the embedded broker and on a real Kafka-protocol broker.
# Uses EVENTKIT_TEST_BOOTSTRAP when set (any real Kafka); otherwise installs and starts
# the pinned noida-db broker on 127.0.0.1 for the run. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${EVENTKIT_TEST_BOOTSTRAP:-}" ]; then
  # shellcheck source=scripts/broker.sh
  . scripts/broker.sh
fi
# The official AsyncAPI parser (pinned in tests/asyncapi/package-lock.json) for tests/asyncapi.rs.
if [ ! -d tests/asyncapi/node_modules/@asyncapi/parser ]; then
  (cd tests/asyncapi && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
# The console's browser tests (tests/console.rs, tests/explorer.rs): Debian's Chromium, and Playwright (pinned in
# tests/ui-browser/package-lock.json; it drives that Chromium, it downloads no browser).
if ! command -v chromium >/dev/null; then
  { apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get install -y -q chromium >/dev/null; }; }
fi
if [ ! -d tests/ui-browser/node_modules/playwright-core ]; then
  (cd tests/ui-browser && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
# promtool checks and unit-tests the shipped alert rules (tests/dashboards.rs).
EVENTKIT_TEST_PROMTOOL="$(scripts/promtool.sh)"
export EVENTKIT_TEST_PROMTOOL
cargo test --workspace --no-fail-fast "$@"
if [ $# -eq 0 ]; then
  # Each optional part alone, and the leanest build's own tests: eventkit works without any of
  # them, and a program asking for one that is left out gets an error naming its feature.
  command -v cargo-hack >/dev/null || cargo install cargo-hack --locked --version 0.6.46 --quiet
  # The declared rust-version: what every crate eventkit builds on declares, and (clippy's
  # incompatible_msrv) the standard library items our code uses; then the docs, warnings denied.
  python3 scripts/rust-version.py
  cargo clippy -p eventkit-kafka -p eventkit-kafka-macros --all-features --quiet -- -A clippy::all -D clippy::incompatible_msrv
  RUSTDOCFLAGS="-D warnings --cfg docsrs" RUSTC_BOOTSTRAP=1 cargo doc -p eventkit-kafka -p eventkit-kafka-macros --all-features --no-deps --quiet
  cargo hack check --each-feature -p eventkit-kafka --no-dev-deps --quiet
  cargo test -p eventkit-kafka --lib --no-default-features --quiet
fi
# The examples check themselves (a non-zero exit when what they print did not happen); they
# run on their own embedded broker.
if [ $# -eq 0 ]; then
  # The first three as the README runs them (`cargo run --example NAME`, eventkit's default
  # features); the others need optional features and live in their own package.
  for example in user_service orders_dlq projections -p:eventkit-examples-full:user_registration \
      -p:eventkit-examples-full:low_stock -p:eventkit-examples-full:debate_service; do
    package=()
    case "$example" in -p:*) package=(-p "$(echo "$example" | cut -d: -f2)"); example="${example##*:}" ;; esac
    log="$(mktemp)"
    if ! env -u KAFKA_BOOTSTRAP_SERVERS RUST_LOG=warn cargo run -q "${package[@]}" --example "$example" >"$log" 2>&1; then
      echo "example $example failed:" >&2; cat "$log" >&2; rm -f "$log"; exit 1
    fi
    rm -f "$log"
    echo "example $example: ok" >&2
  done
fi
