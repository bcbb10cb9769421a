#!/usr/bin/env bash
# Start the interop MCP server process in the background.
#
#   AS_ISSUER=http://127.0.0.1:ASPORT start.sh [PORT]
#                          PORT: argument, else $PORT, else 0 (ephemeral)
#
# Prints the listening port on stdout (only that). State files go to
# $MCP_STATE_DIR (default: <this dir>/.run); use one state dir per process to
# run several (e.g. one MCP server per port):
#   server.pid        PID of the node process (used by stop.sh)
#   server.port       the port
#   server.resources  the resource identifiers served, one per line
#   server.log        the server's stdout and stderr (LISTENING line, one line
#                     per request, refused-token reasons)
# Env passed through to the server: AS_ISSUER (required), MCP_PATHS,
# REQUIRED_SCOPES, SCOPES_SUPPORTED, MCP_JSON_RESPONSE, MCP_STATELESS,
# AS_WAIT_SECONDS.
set -euo pipefail

DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE_DIR="${MCP_STATE_DIR:-$DIR/.run}"
PORT_ARG="${1:-${PORT:-0}}"
PID_FILE="$STATE_DIR/server.pid"
PORT_FILE="$STATE_DIR/server.port"
RES_FILE="$STATE_DIR/server.resources"
LOG_FILE="$STATE_DIR/server.log"
WAIT_SECONDS="${MCP_START_TIMEOUT:-20}"

if [[ -z "${AS_ISSUER:-}" ]]; then
  echo "start.sh: AS_ISSUER is required (e.g. AS_ISSUER=http://127.0.0.1:PORT)" >&2
  exit 1
fi

mkdir -p "$STATE_DIR"

if [[ -f "$PID_FILE" ]]; then
  old_pid="$(cat "$PID_FILE")"
  if [[ -n "$old_pid" ]] && kill -0 "$old_pid" 2>/dev/null \
     && tr '\0' ' ' <"/proc/$old_pid/cmdline" 2>/dev/null | grep -q 'server\.mjs' \
     && [[ "$(readlink "/proc/$old_pid/cwd" 2>/dev/null)" == "$DIR" ]]; then
    echo "start.sh: already running (pid $old_pid, port $(cat "$PORT_FILE" 2>/dev/null || echo '?')); run stop.sh first" >&2
    exit 1
  fi
  rm -f "$PID_FILE" "$PORT_FILE" "$RES_FILE"
fi

if [[ ! -d "$DIR/node_modules/@modelcontextprotocol/sdk" ]]; then
  echo "start.sh: node_modules missing, running npm ci" >&2
  (cd "$DIR" && npm ci --no-audit --no-fund --loglevel=error) >&2
fi

: >"$LOG_FILE"
cd "$DIR"
PORT="$PORT_ARG" nohup node server.mjs >>"$LOG_FILE" 2>&1 </dev/null &
pid=$!

line=""
deadline=$((SECONDS + WAIT_SECONDS))
while (( SECONDS < deadline )); do
  line="$(grep -m1 -E '^LISTENING [0-9]+( [^ ]+)+$' "$LOG_FILE" || true)"
  [[ -n "$line" ]] && break
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "start.sh: server exited before listening; log follows" >&2
    cat "$LOG_FILE" >&2
    exit 1
  fi
  sleep 0.1
done

if [[ -z "$line" ]]; then
  echo "start.sh: no LISTENING line within ${WAIT_SECONDS}s; stopping pid $pid; log follows" >&2
  kill "$pid" 2>/dev/null || true
  cat "$LOG_FILE" >&2
  exit 1
fi

read -r _ port resources <<<"$line"
echo "$pid" >"$PID_FILE"
echo "$port" >"$PORT_FILE"
tr ' ' '\n' <<<"$resources" >"$RES_FILE"
echo "$port"
