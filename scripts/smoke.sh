#!/usr/bin/env bash
# The smoke test of a deployment: submits one job to the API and waits for it, then reports the
# job id, its final status, its result and the seconds from submit to result, and whether a task
# was running when it submitted. A Fargate deploy starts one task (it proves the image; GPU workers
# start at zero), and the scaling controller parks the service at zero about one start-up later:
# from then on the seconds are the cold path (the submit's nudge, a task's start: image pull,
# handler start-up, the job).
# With the stack outputs at hand the script reads the service first and says "path: cold" or
# "path: warm".
#
#   scripts/smoke.sh                     the API of cdk/outputs.json (written by `make deploy`)
#   SLUICE_URL=http://127.0.0.1:8080 SLUICE_SMOKE_SIGV4=0 scripts/smoke.sh   the local stack
#
# Environment:
#   SLUICE_URL             the API's base URL (default: the ApiUrl output in cdk/outputs.json)
#   SLUICE_SMOKE_OUTPUTS   the stack outputs file (default cdk/outputs.json)
#   SLUICE_SMOKE_STACK     the stack whose ApiUrl to take when cdk/outputs.json holds several
#   SLUICE_SMOKE_INPUT     the job's input, JSON (default {})
#   SLUICE_SMOKE_TIMEOUT   seconds to wait for the job to end (default 900)
#   SLUICE_SMOKE_SIGV4     1 signs requests with SigV4 (IAM authorization, the default); 0 does not
#   SLUICE_BIN             the sluice command (default target/release/sluice)
#
# Exit status: 0 when the job SUCCEEDED, 1 otherwise (with the reason on stderr), 2 on a bad setting.
set -euo pipefail

caller_dir="$(pwd)"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
outputs="${SLUICE_SMOKE_OUTPUTS:-$repo/cdk/outputs.json}"

fail() {
  echo "smoke: $*" >&2
  exit 1
}
usage() {
  echo "smoke: $*" >&2
  exit 2
}

default_input='{}'
input="${SLUICE_SMOKE_INPUT:-$default_input}"
timeout="${SLUICE_SMOKE_TIMEOUT:-900}"
sigv4="${SLUICE_SMOKE_SIGV4:-1}"
bin="${SLUICE_BIN:-$repo/target/release/sluice}"

[[ "$timeout" =~ ^[1-9][0-9]*$ ]] || usage "SLUICE_SMOKE_TIMEOUT must be a whole number of seconds, got '$timeout'"
case "$sigv4" in
  1) sign=(--sigv4) ;;
  0) sign=() ;;
  *) usage "SLUICE_SMOKE_SIGV4 must be 1 or 0, got '$sigv4'" ;;
esac
# A relative SLUICE_BIN names a file from where the script was started, else from the repository.
if [[ "$bin" != /* ]]; then
  if [[ -e "$caller_dir/$bin" ]]; then bin="$caller_dir/$bin"; else bin="$repo/$bin"; fi
fi
[[ -x "$bin" ]] || fail "the sluice command is not at $bin: build it with \`cargo build --release --bin sluice\` (or \`make smoke\`), or set SLUICE_BIN"

json() {
  # json <python expression over `v`> reads a JSON document on stdin and prints the expression.
  python3 -c 'import json, sys
v = json.load(sys.stdin)
out = eval(sys.argv[1])
print(out if isinstance(out, str) else json.dumps(out))' "$1"
}

url="${SLUICE_URL:-}"
queue_url="" cluster="" service=""
if [[ -z "$url" ]]; then
  [[ -f "$outputs" ]] || fail "no API URL: set SLUICE_URL, or deploy with \`make deploy\`, which writes the stack outputs to cdk/outputs.json"
  read -r url queue_url cluster service < <(SLUICE_SMOKE_STACK="${SLUICE_SMOKE_STACK:-}" python3 - "$outputs" <<'PY'
import json, os, sys
path = sys.argv[1]
try:
    with open(path) as f:
        stacks = json.load(f)
except (OSError, ValueError) as e:
    sys.exit(f"smoke: cannot read {path}: {e}")
want = os.environ.get("SLUICE_SMOKE_STACK") or None
found = {name: o for name, o in stacks.items() if isinstance(o, dict) and o.get("ApiUrl")}
if want is not None:
    if want not in found:
        sys.exit(f"smoke: {path} has no ApiUrl output for stack {want} (stacks with one: {', '.join(sorted(found)) or 'none'})")
    o = found[want]
elif len(found) == 1:
    o = next(iter(found.values()))
elif not found:
    sys.exit(f"smoke: {path} has no ApiUrl output: is it from `make deploy` of this app?")
else:
    sys.exit(f"smoke: {path} has several stacks with an ApiUrl ({', '.join(sorted(found))}): set SLUICE_SMOKE_STACK")
print(o["ApiUrl"], o.get("QueueUrl", "-"), o.get("ClusterName", "-"), o.get("ServiceName", "-"))
PY
) || true
  [[ -n "$url" ]] || exit 1
fi
printf '%s' "$input" | python3 -c 'import json, sys; json.load(sys.stdin)' 2>/dev/null \
  || usage "SLUICE_SMOKE_INPUT must be JSON, got '$input'"

sluice() {
  "$bin" ${sign[@]+"${sign[@]}"} --url "$url" --json "$@"
}
now() {
  python3 -c 'import time; print(f"{time.time():.3f}")'
}
elapsed() {
  python3 -c 'import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.1f}")' "$1" "$2"
}

# Whether a task runs now: the cold path is the one a deploy must prove.
path="unknown (no stack outputs to read the service from)"
if [[ -n "$service" && "$service" != - && "$cluster" != - && "$queue_url" != - ]]; then
  if report="$("$bin" --json report --queue-url "$queue_url" --cluster "$cluster" --service "$service" 2>/dev/null)"; then
    running="$(json 'v["service"]["running"]' <<<"$report")"
    desired="$(json 'v["service"]["desired"]' <<<"$report")"
    if [[ "$running" == 0 ]]; then
      path="cold (0 tasks running, $desired desired)"
    else
      path="warm ($running tasks running): the seconds are not the cold path; run it again once the service has parked at zero"
    fi
  else
    path="unknown (could not read the service $service)"
  fi
fi

echo "smoke: submitting $input to $url (waiting up to $timeout s)" >&2
start="$(now)"
submitted="$(sluice submit "$input")" || fail "submit to $url failed (see the error above)"
id="$(json 'v["id"]' <<<"$submitted")" || fail "submit answered without a job id: $submitted"
echo "smoke: job $id submitted; waiting for it to finish" >&2

# `wait` exits 0 when the job SUCCEEDED, 3 when it ended otherwise (the view is printed either way),
# 1 when it gave up or could not ask.
rc=0
view="$(sluice wait "$id" --timeout "$timeout")" || rc=$?
end="$(now)"
seconds="$(elapsed "$start" "$end")"

if [[ $rc -ne 0 && $rc -ne 3 ]]; then
  last="$(sluice status "$id" 2>/dev/null | json 'v["status"]' 2>/dev/null || echo unknown)"
  echo "job: $id"
  echo "status: $last"
  echo "seconds: $seconds"
  fail "job $id did not finish within $timeout s (last status $last); a first task can take minutes to start, so raise SLUICE_SMOKE_TIMEOUT, or see the worker service's events and logs"
fi

status="$(json 'v["status"]' <<<"$view")"
echo "job: $id"
echo "status: $status"
if [[ "$status" == SUCCEEDED ]]; then
  echo "result: $(json 'v.get("result")' <<<"$view")"
else
  echo "error: $(json 'v.get("error") or ""' <<<"$view")"
fi
echo "seconds: $seconds"
echo "path: $path"
[[ "$status" == SUCCEEDED ]] || fail "job $id ended $status, not SUCCEEDED"
echo "smoke: ok, job $id SUCCEEDED $seconds s after its submit" >&2
