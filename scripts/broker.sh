# Sourced by scripts/test.sh: installs the pinned test environment (tests/interop/
# requirements.txt: the noida-db broker, a single-binary Kafka-protocol server, and the Python
# clients of the interoperability tests) into .venv, starts the broker on a free 127.0.0.1
# port, exports EVENTKIT_TEST_BOOTSTRAP, EVENTKIT_TEST_PYTHON and EVENTKIT_TEST_NOIDA, and stops the broker when
# the calling shell exits.
root="$(pwd)"
venv="$root/.venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/interop/requirements.txt
export EVENTKIT_TEST_PYTHON="$venv/bin/python"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
data_dir="$(mktemp -d "${TMPDIR:-/tmp}/eventkit-noida.XXXXXX")"
# The launcher is a Python script that starts the broker binary as its child: run both in a
# process group of their own (setsid), and stop the whole group.
setsid "$venv/bin/noida-db" start --only kafka --kafka-port "$port" --host 127.0.0.1 --data-dir "$data_dir" \
  >"$data_dir/noida.log" 2>&1 &
broker_pid=$!
stop_broker() {
  kill -TERM -- "-$broker_pid" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 -- "-$broker_pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL -- "-$broker_pid" 2>/dev/null || true
  wait "$broker_pid" 2>/dev/null || true
  rm -rf "$data_dir"
}
trap stop_broker EXIT
for _ in $(seq 1 100); do
  if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then
    break
  fi
  if ! kill -0 "$broker_pid" 2>/dev/null; then
    echo "noida-db exited:" >&2; cat "$data_dir/noida.log" >&2; exit 1
  fi
  sleep 0.1
done
export EVENTKIT_TEST_BOOTSTRAP="127.0.0.1:$port"
# Tests that depend on a broker's limits (noida-db keeps Kafka's default 1 MiB record limit).
export EVENTKIT_TEST_BROKER=noida-db
# Tests that stop and restart a broker start their own noida-db with it.
export EVENTKIT_TEST_NOIDA="$venv/bin/noida-db"
echo "real broker: noida-db at $EVENTKIT_TEST_BOOTSTRAP" >&2
