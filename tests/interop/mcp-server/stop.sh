#!/usr/bin/env bash
# Stop the server started by start.sh (by the PID in $MCP_STATE_DIR/server.pid).
set -euo pipefail

DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE_DIR="${MCP_STATE_DIR:-$DIR/.run}"
PID_FILE="$STATE_DIR/server.pid"
PORT_FILE="$STATE_DIR/server.port"

if [[ ! -f "$PID_FILE" ]]; then
  echo "stop.sh: no pid file at $PID_FILE; nothing to stop" >&2
  exit 0
fi

pid="$(cat "$PID_FILE")"
# Only signal the process if it is still our node server.mjs, started in this
# folder (PIDs get reused; oidc-provider's server is also `node server.mjs`).
if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null \
   && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'server\.mjs' \
     && [[ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" == "$DIR" ]]; then
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "stop.sh: pid $pid did not exit after SIGTERM; sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
else
  echo "stop.sh: pid $pid is not running (or not server.mjs); removing stale pid file" >&2
fi
rm -f "$PID_FILE" "$PORT_FILE" "$STATE_DIR/server.resources"
