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
cargo test --workspace --no-fail-fast "$@"
