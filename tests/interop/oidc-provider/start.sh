#!/usr/bin/env bash
# Start the interop authorization server in the background.
#
#   start.sh [PORT]        PORT: argument, else $PORT, else 0 (ephemeral)
#
# Prints the listening port on stdout (only that). State files go to
# $AS_STATE_DIR (default: <this dir>/.run):
#   server.pid   PID of the node process (used by stop.sh)
#   server.port  the port
#   server.log   the server's stdout and stderr (LISTENING line, notices,
#                one line per token request, interaction and error)
# Other env passed through to the server: ACCESS_TOKEN_TTL, REFRESH_TOKEN_TTL.
set -euo pipefail

DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE_DIR="${AS_STATE_DIR:-$DIR/.run}"
PORT_ARG="${1:-${PORT:-0}}"
PID_FILE="$STATE_DIR/server.pid"
PORT_FILE="$STATE_DIR/server.port"
LOG_FILE="$STATE_DIR/server.log"
WAIT_SECONDS="${AS_START_TIMEOUT:-20}"

mkdir -p "$STATE_DIR"

if [[ -f "$PID_FILE" ]]; then
  old_pid="$(cat "$PID_FILE")"
  if [[ -n "$old_pid" ]] && kill -0 "$old_pid" 2>/dev/null \
     && tr '\0' ' ' <"/proc/$old_pid/cmdline" 2>/dev/null | grep -q 'server\.mjs'; then
    echo "start.sh: already running (pid $old_pid, port $(cat "$PORT_FILE" 2>/dev/null || echo '?')); run stop.sh first" >&2
    exit 1
  fi
  rm -f "$PID_FILE" "$PORT_FILE"
fi

if [[ ! -d "$DIR/node_modules/oidc-provider" ]]; then
  echo "start.sh: node_modules missing, running npm ci" >&2
  (cd "$DIR" && npm ci --no-audit --no-fund --loglevel=error) >&2
fi

: >"$LOG_FILE"
cd "$DIR"
PORT="$PORT_ARG" nohup node server.mjs >>"$LOG_FILE" 2>&1 </dev/null &
pid=$!

port=""
deadline=$((SECONDS + WAIT_SECONDS))
while (( SECONDS < deadline )); do
  port="$(sed -n 's/^LISTENING \([0-9][0-9]*\)$/\1/p' "$LOG_FILE" | head -n1)"
  [[ -n "$port" ]] && break
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "start.sh: server exited before listening; log follows" >&2
    cat "$LOG_FILE" >&2
    exit 1
  fi
  sleep 0.1
done

if [[ -z "$port" ]]; then
  echo "start.sh: no LISTENING line within ${WAIT_SECONDS}s; stopping pid $pid; log follows" >&2
  kill "$pid" 2>/dev/null || true
  cat "$LOG_FILE" >&2
  exit 1
fi

echo "$pid" >"$PID_FILE"
echo "$port" >"$PORT_FILE"
echo "$port"
