#!/usr/bin/env bash
# Runs the conformance suite against a Phoenix Channels server.
#
#   conformance/run.sh ws://127.0.0.1:4000/socket   # any server hosting the contract
#   conformance/run.sh                              # builds and starts phx-server itself
#
# Prints "N passed, N failed, N skipped" last and exits non-zero on any failure.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
cd "$here"

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi

url="${1:-}"
pid=""
cleanup() {
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT

if [ -z "$url" ]; then
  (cd "$root" && cargo build --release -p phx-server)
  port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
  RUST_LOG="${RUST_LOG:-warn}" "$root/target/release/phx-server" --port "$port" --bind 127.0.0.1 --conformance \
    --longpoll-window-ms 2000 >"$here/.server.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do
    if node -e "require('net').connect($port,'127.0.0.1').on('connect',()=>process.exit(0)).on('error',()=>process.exit(1))"; then
      break
    fi
    sleep 0.1
  done
  url="ws://127.0.0.1:$port/socket"
  export LP_WINDOW_MS=2000
fi

echo "conformance suite against $url"
export PHX_URL="$url"
set +e
node --test --test-reporter=tap --test-concurrency=8 test/*.test.js >"$here/.tap.out" 2>&1
rc=$?
set -e
grep -E '^(not )?ok |^    (error|expected|actual|location):' "$here/.tap.out" || true
count() { grep -E "^# $1 " "$here/.tap.out" | tail -1 | awk '{print $3}'; }
pass=$(count pass); fail=$(count fail); skip=$(count skipped)
echo "${pass:-0} passed, ${fail:-0} failed, ${skip:-0} skipped"
if [ "$rc" -ne 0 ] || [ "${fail:-1}" != "0" ]; then
  exit 1
fi
