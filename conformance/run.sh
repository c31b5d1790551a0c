#!/usr/bin/env bash
# Runs the conformance suite against a Phoenix Channels server.
#
#   conformance/run.sh                                  # builds phx-server, starts it on a free port, runs, stops it
#   conformance/run.sh ws://127.0.0.1:4000/socket       # any server hosting the contract (the socket's mount URL)
#   conformance/run.sh --phoenix 1.7 ws://127.0.0.1:4000/socket   # a server with Phoenix 1.7's behaviour
#
# --phoenix 1.7|1.8 (default 1.8): the Phoenix generation whose server behaviour to
# expect. Every case is marked with the generation(s) it asserts ("{1.7 1.8}" or
# "{1.8}" in its title); the others are skipped, each with its reason printed.
# phx-server implements 1.8, so the build-and-start mode runs with 1.8 only.
#
# Environment: LP_WINDOW_MS = an external server's long-poll window in ms (default
# 10000, Phoenix's). Without a URL: PHX_SKIP_BUILD=1 starts the existing
# target/release/phx-server without running cargo first.
#
# The last line printed is "N passed, N failed, N skipped"; the exit status is
# non-zero on any failure.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
cd "$here"

# --- arguments ----------------------------------------------------------------------
usage() { echo "usage: $0 [--phoenix 1.7|1.8] [ws://HOST:PORT/socket]" >&2; exit 2; }
gen=1.8
url=""
while [ $# -gt 0 ]; do
  case "$1" in
    --phoenix) [ $# -ge 2 ] || usage; gen="$2"; shift 2 ;;
    --phoenix=*) gen="${1#--phoenix=}"; shift ;;
    -h|--help) usage ;;
    -*) echo "unknown option: $1" >&2; usage ;;
    *) [ -z "$url" ] || usage; url="$1"; shift ;;
  esac
done
case "$gen" in 1.7|1.8) ;; *) echo "--phoenix takes 1.7 or 1.8, not $gen" >&2; usage ;; esac
if [ -z "$url" ] && [ "$gen" != 1.8 ]; then
  echo "phx-server implements Phoenix 1.8: --phoenix $gen needs the URL of a Phoenix $gen server" >&2
  exit 2
fi
export PHX_SERVER_GEN="$gen"

SUITE_LIMIT_S=170   # the whole node run; every case also has its own timeout
# Artifacts of this run (several runs may share the checkout): the server log and the
# suite's output. Removed after a clean run, kept (and named) after a failure.
work="$(mktemp -d "${TMPDIR:-/tmp}/phx-conformance.XXXXXX")"
log="$work/server.log"
out="$work/suite.txt"

finish() { # passed failed skipped
  if [ "$2" -ne 0 ]; then
    echo "artifacts of this run: $work"
    echo "$1 passed, $2 failed, $3 skipped"
    exit 1
  fi
  rm -rf "$work"
  echo "$1 passed, $2 failed, $3 skipped"
  exit 0
}

# --- packages -----------------------------------------------------------------------
if [ ! -f node_modules/.package-lock.json ] \
   || [ package-lock.json -nt node_modules/.package-lock.json ] \
   || [ package.json -nt node_modules/.package-lock.json ]; then
  echo "installing packages (npm ci)"
  if ! npm ci --no-audit --no-fund --loglevel=error; then
    echo "npm ci failed"
    finish 0 1 0
  fi
fi

# --- server -------------------------------------------------------------------------
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.2
    done
    kill -9 "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_open() { # host port
  node -e '
    const s = require("net").connect(Number(process.argv[2]), process.argv[1]);
    s.setTimeout(500, () => process.exit(1));
    s.on("connect", () => { s.destroy(); process.exit(0); });
    s.on("error", () => process.exit(1));' "$1" "$2"
}

if [ -z "$url" ]; then
  if [ "${PHX_SKIP_BUILD:-}" = "1" ]; then
    echo "using the existing $root/target/release/phx-server (PHX_SKIP_BUILD=1)"
  else
    echo "building phx-server (cargo build --release -p phx-server)"
    if ! (cd "$root" && cargo build --release -p phx-server); then
      echo "cargo build failed"
      finish 0 1 0
    fi
  fi
  port=$(node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })')
  export LP_WINDOW_MS=2000
  "$root/target/release/phx-server" --port "$port" --bind 127.0.0.1 --conformance --database-url sqlite::memory: \
    --longpoll-window-ms "$LP_WINDOW_MS" >"$log" 2>&1 &
  server_pid=$!
  up=""
  for _ in $(seq 1 150); do   # up to ~30 s
    if ! kill -0 "$server_pid" 2>/dev/null; then break; fi
    if port_open 127.0.0.1 "$port"; then up=1; break; fi
    sleep 0.2
  done
  if [ -z "$up" ]; then
    echo "phx-server did not start listening on 127.0.0.1:$port; its log:"
    tail -n 40 "$log"
    finish 0 1 0
  fi
  url="ws://127.0.0.1:$port/socket"
fi

export PHX_URL="$url"
echo "conformance suite against $PHX_URL, expecting Phoenix $gen behaviour (long-poll window ${LP_WINDOW_MS:-10000} ms)"
hostport=$(node -e 'const u = new URL(process.argv[1].replace(/^http/, "ws")); console.log(u.hostname + " " + (u.port || (u.protocol === "wss:" ? 443 : 80)))' "$url") || {
  echo "not a URL: $url (expected e.g. ws://127.0.0.1:4000/socket)"
  finish 0 1 0
}
# shellcheck disable=SC2086
if ! port_open $hostport; then
  echo "warning: nothing accepts connections at $hostport; every case will fail"
fi

# --- the suite ----------------------------------------------------------------------
start=$(date +%s)
timeout --kill-after=5 "$SUITE_LIMIT_S" \
  node --test --test-reporter=./lib/reporter.mjs --test-concurrency=8 test/*.test.js 2>&1 | tee "$out"
rc=${PIPESTATUS[0]}
echo "(took $(( $(date +%s) - start )) s)"

passed=$(grep -c '^ok     - ' "$out")
failed=$(grep -c '^not ok - ' "$out")
skipped=$(grep -c '^skip   - ' "$out")
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
  echo "the suite exceeded ${SUITE_LIMIT_S} s and was stopped"
  failed=$((failed + 1))
elif [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
  echo "the test runner exited with status $rc"
  failed=1
fi
finish "$passed" "$failed" "$skipped"
