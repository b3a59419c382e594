#!/usr/bin/env bash
# The benchmark against raw rust-rdkafka (release build): prints a table and writes
# BENCHMARKS.md. Uses EVENTKIT_BENCH_BOOTSTRAP when set (any Kafka); otherwise installs and
# starts the pinned noida-db broker on 127.0.0.1 for the run, and stops it afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${EVENTKIT_BENCH_BOOTSTRAP:-}" ]; then
  # shellcheck source=scripts/broker.sh
  . scripts/broker.sh
  export EVENTKIT_BENCH_BOOTSTRAP="$EVENTKIT_TEST_BOOTSTRAP"
  export EVENTKIT_BENCH_BROKER="noida-db $("$venv/bin/pip" show noida-db 2>/dev/null | sed -n 's/^Version: //p') (single node, 127.0.0.1)"
fi
cargo bench -p eventkit-kafka --bench engine "$@"
