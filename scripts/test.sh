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
cargo test --workspace --no-fail-fast "$@"
if [ $# -eq 0 ]; then
  # Each optional part alone, and the leanest build's own tests: eventkit works without any of
  # them, and a program asking for one that is left out gets an error naming its feature.
  command -v cargo-hack >/dev/null || cargo install cargo-hack --locked --version 0.6.46 --quiet
  cargo hack check --each-feature -p eventkit --no-dev-deps --quiet
  cargo test -p eventkit --lib --no-default-features --quiet
fi
# The examples check themselves (a non-zero exit when what they print did not happen); they
# run on their own embedded broker.
if [ $# -eq 0 ]; then
  for example in user_service orders_dlq projections user_registration low_stock debate_service; do
    log="$(mktemp)"
    if ! env -u KAFKA_BOOTSTRAP_SERVERS RUST_LOG=warn cargo run -q --example "$example" >"$log" 2>&1; then
      echo "example $example failed:" >&2; cat "$log" >&2; rm -f "$log"; exit 1
    fi
    rm -f "$log"
    echo "example $example: ok" >&2
  done
fi
