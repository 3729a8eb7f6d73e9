#!/usr/bin/env bash
# The local stack: the AWS emulator on loopback, then the API (same handlers as in Lambda) and a
# worker. Ctrl-C stops everything this script started.
set -euo pipefail
cd "$(dirname "$0")/.."

port="${SLUICE_EMULATOR_PORT:-4566}"
export AWS_ENDPOINT_URL="http://127.0.0.1:${port}"
export AWS_REGION="${AWS_REGION:-us-east-1}"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-local}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-local}"

mkdir -p target
# Its own session: a Ctrl-C in the terminal stops the API and the worker first; the trap stops it last.
setsid .venv/bin/python scripts/emulator.py -H 127.0.0.1 -p "$port" >target/emulator.log 2>&1 &
emulator=$!
trap 'kill "$emulator" 2>/dev/null; wait "$emulator" 2>/dev/null || true' EXIT

for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/${port}") 2>/dev/null; then break; fi
  if ! kill -0 "$emulator" 2>/dev/null; then
    echo "the emulator did not start; see target/emulator.log (is port ${port} taken? set SLUICE_EMULATOR_PORT)" >&2
    exit 1
  fi
  sleep 0.1
done
echo "emulator on ${AWS_ENDPOINT_URL} (log: target/emulator.log)"
target/debug/sluice dev "$@"
