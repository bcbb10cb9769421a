#!/usr/bin/env bash
# Smoke test of the interop MCP servers against the interop authorization
# server (../oidc-provider), with curl (node only parses JSON/SSE). Talks to
# 127.0.0.1 only.
#
#   smoke.sh              starts oidc-provider (its start.sh, state in a temp
#                         dir) and two MCP server processes, stops them all at
#                         the end
#   AS_BASE_URL=http://127.0.0.1:PORT smoke.sh
#                         uses an already running oidc-provider instead
#
# MCP servers started:
#   process 1: MCP_PATHS=/mcp-a,/mcp-b on one port   -> A and B (SSE replies)
#   process 2: MCP_PATHS=/mcp on another port,
#              MCP_JSON_RESPONSE=1                    -> C (JSON replies)
#   both: REQUIRED_SCOPES='tools/call:write_note=mcp:write'
#
# Exits non-zero if any check fails. Last line: "smoke: N passed, N failed".
set -uo pipefail

DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
AS_DIR="$DIR/../oidc-provider"
WORK="$(mktemp -d)"
STARTED_AS=""
STARTED_M1=""
STARTED_M2=""

cleanup() {
  [[ -n "$STARTED_M2" ]] && { MCP_STATE_DIR="$WORK/m2" "$DIR/stop.sh" || true; }
  [[ -n "$STARTED_M1" ]] && { MCP_STATE_DIR="$WORK/m1" "$DIR/stop.sh" || true; }
  [[ -n "$STARTED_AS" ]] && { AS_STATE_DIR="$WORK/as" "$AS_DIR/stop.sh" || true; }
  rm -rf "$WORK"
}
trap cleanup EXIT

if [[ -z "${AS_BASE_URL:-}" ]]; then
  as_port="$(AS_STATE_DIR="$WORK/as" "$AS_DIR/start.sh" 0)" || { echo "smoke: oidc-provider start.sh failed" >&2; exit 1; }
  STARTED_AS=1
  AS_BASE_URL="http://127.0.0.1:$as_port"
fi
ISSUER="$AS_BASE_URL"
RULES='tools/call:write_note=mcp:write'

p1="$(AS_ISSUER="$ISSUER" MCP_PATHS=/mcp-a,/mcp-b REQUIRED_SCOPES="$RULES" \
      MCP_STATE_DIR="$WORK/m1" "$DIR/start.sh" 0)" || { echo "smoke: start.sh (A, B) failed" >&2; exit 1; }
STARTED_M1=1
p2="$(AS_ISSUER="$ISSUER" MCP_PATHS=/mcp MCP_JSON_RESPONSE=1 REQUIRED_SCOPES="$RULES" \
      MCP_STATE_DIR="$WORK/m2" "$DIR/start.sh" 0)" || { echo "smoke: start.sh (C) failed" >&2; exit 1; }
STARTED_M2=1

O1="http://127.0.0.1:$p1"
O2="http://127.0.0.1:$p2"
A="$O1/mcp-a"
B="$O1/mcp-b"
C="$O2/mcp"
echo "smoke: AS $ISSUER; MCP A $A, B $B, C $C"

PASS=0
FAIL=0
ok()   { PASS=$((PASS + 1)); echo "  ok   $1"; }
bad()  { FAIL=$((FAIL + 1)); echo "  FAIL $1"; [[ -n "${2:-}" ]] && echo "       $2"; }
check() { # check NAME ACTUAL EXPECTED
  if [[ "$2" == "$3" ]]; then ok "$1"; else bad "$1" "expected [$3], got [$2]"; fi
}
contains() { # contains NAME HAYSTACK NEEDLE
  if [[ "$2" == *"$3"* ]]; then ok "$1"; else bad "$1" "[$3] not in [$2]"; fi
}

# j JSON EXPR: evaluate a JS expression over the parsed JSON `j`. Prints "" for
# undefined/null, JSON for objects/arrays, the plain value otherwise.
j() {
  JSON_IN="$1" node -e '
    let j; try { j = JSON.parse(process.env.JSON_IN); } catch { j = undefined; }
    let v; try { v = eval(process.argv[1]); } catch { v = undefined; }
    if (v === undefined || v === null) v = "";
    process.stdout.write(typeof v === "object" ? JSON.stringify(v) : String(v));
  ' "$2"
}

# jwt_claim TOKEN EXPR: decode (not verify) the JWT payload `p`, evaluate EXPR.
jwt_claim() {
  node -e '
    let p; try { p = JSON.parse(Buffer.from(process.argv[1].split(".")[1], "base64url")); } catch { p = undefined; }
    let v; try { v = eval(process.argv[2]); } catch { v = undefined; }
    if (v === undefined || v === null) v = "";
    process.stdout.write(typeof v === "object" ? JSON.stringify(v) : String(v));
  ' "$1" "$2"
}

# http GET URL: sets STATUS, BODY, HDRS (raw header block).
http_get() {
  STATUS="$(curl -sS -D "$WORK/h" -o "$WORK/b" -w '%{http_code}' "$@")"
  BODY="$(cat "$WORK/b")"
  HDRS="$(tr -d '\r' <"$WORK/h")"
}
header() { # header NAME: value of the last header NAME in HDRS (case-insensitive)
  printf '%s\n' "$HDRS" | awk -v n="$(tr 'A-Z' 'a-z' <<<"$1")" '
    { i = index($0, ":"); if (i > 0 && tolower(substr($0, 1, i - 1)) == n) { v = substr($0, i + 1); sub(/^[ \t]+/, "", v); last = v } }
    END { printf "%s", last }'
}

# token RESOURCE SCOPE: client_credentials token from oidc-provider (cc-client,
# client_secret_basic). RESOURCE "" = no resource parameter (opaque token).
token() {
  local args=(-u cc-client:cc-secret -d grant_type=client_credentials --data-urlencode "scope=$2")
  [[ -n "$1" ]] && args+=(--data-urlencode "resource=$1")
  j "$(curl -sS "${args[@]}" "$ISSUER/token")" 'j.access_token'
}

# mcp URL TOKEN SESSION JSON [PROTOCOL_VERSION]: POST one JSON-RPC message the
# way a streamable-HTTP client does. Sets STATUS, BODY, HDRS, CT (content
# type), SID (Mcp-Session-Id response header), WWW (WWW-Authenticate) and MSG:
# the JSON-RPC message with the request's id, taken from a JSON body or from
# the SSE `data:` lines of an event-stream body.
mcp() {
  local url="$1" tok="$2" sid="$3" body="$4" pv="${5:-}"
  local args=(-X POST -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' --data-binary "$body")
  [[ -n "$tok" ]] && args+=(-H "Authorization: Bearer $tok")
  [[ -n "$sid" ]] && args+=(-H "Mcp-Session-Id: $sid")
  [[ -n "$pv" ]] && args+=(-H "MCP-Protocol-Version: $pv")
  http_get "${args[@]}" "$url"
  CT="$(header content-type)"
  SID="$(header mcp-session-id)"
  WWW="$(header www-authenticate)"
  local id
  id="$(j "$body" 'j.id')"
  MSG="$(BODY_IN="$BODY" CT_IN="$CT" node -e '
    const body = process.env.BODY_IN, ct = process.env.CT_IN, want = process.argv[1];
    let msgs = [];
    try {
      if (ct.startsWith("text/event-stream")) {
        // Events are separated by a blank line; data: lines of one event are
        // joined with "\n" (SSE spec); an event without data is skipped.
        for (const ev of body.split(/\r?\n\r?\n/)) {
          const data = ev.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) => l.slice(5).replace(/^ /, ""));
          if (data.length && data.join("\n").trim() !== "") msgs.push(JSON.parse(data.join("\n")));
        }
      } else if (body.trim() !== "") {
        const v = JSON.parse(body);
        msgs = Array.isArray(v) ? v : [v];
      }
    } catch { msgs = []; }
    const m = msgs.find((x) => String(x.id) === want) ?? (want === "" ? msgs[0] : undefined);
    process.stdout.write(m ? JSON.stringify(m) : "");
  ' "$id")"
}

INIT='{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"smoke","version":"1.0.0"}}}'
INITIALIZED='{"jsonrpc":"2.0","method":"notifications/initialized"}'
LIST='{"jsonrpc":"2.0","id":2,"method":"tools/list"}'
WHOAMI='{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"whoami","arguments":{}}}'
NOTE='{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"write_note","arguments":{"text":"hello"}}}'
prm_url() { # prm_url RESOURCE: the path-suffixed RFC 9728 URL
  node -e 'const u = new URL(process.argv[1]); process.stdout.write(`${u.origin}/.well-known/oauth-protected-resource${u.pathname === "/" ? "" : u.pathname}`)' "$1"
}

echo "== protected resource metadata (RFC 9728, path-suffixed)"
for R in "$A" "$B" "$C"; do
  http_get "$(prm_url "$R")"
  check "PRM $R status" "$STATUS" 200
  check "PRM $R resource" "$(j "$BODY" 'j.resource')" "$R"
  check "PRM $R authorization_servers" "$(j "$BODY" 'j.authorization_servers')" "[\"$ISSUER\"]"
  check "PRM $R scopes_supported" "$(j "$BODY" 'j.scopes_supported')" '["mcp:read","mcp:write"]'
done
http_get "$O1/.well-known/oauth-protected-resource"
check "no PRM at the origin-level well-known URL (404)" "$STATUS" 404
http_get "$O1/.well-known/oauth-authorization-server"
check "MCP origin serves the AS metadata (SDK copy) status" "$STATUS" 200
check "  ... with the AS's issuer" "$(j "$BODY" 'j.issuer')" "$ISSUER"

echo "== no token"
mcp "$A" "" "" "$INIT"
check "no token -> 401" "$STATUS" 401
contains "  WWW-Authenticate Bearer error=invalid_token (SDK quirk: even without a token)" "$WWW" 'Bearer error="invalid_token"'
contains "  WWW-Authenticate resource_metadata" "$WWW" "resource_metadata=\"$(prm_url "$A")\""
check "  body" "$BODY" '{"error":"invalid_token","error_description":"Missing Authorization header"}'
md="$(sed -n 's/.*resource_metadata="\([^"]*\)".*/\1/p' <<<"$WWW")"
http_get "$md"
check "  resource_metadata URL from the header gives resource A" "$(j "$BODY" 'j.resource')" "$A"

echo "== tokens from oidc-provider (client_credentials, resource = MCP server)"
TA="$(token "$A" 'mcp:read mcp:write')"
TB="$(token "$B" 'mcp:read mcp:write')"
TC="$(token "$C" 'mcp:read mcp:write')"
TAR="$(token "$A" 'mcp:read')"
TOPAQUE="$(token "" 'mcp:read')"
check "token A aud" "$(jwt_claim "$TA" 'p.aud')" "$A"
check "token A scope" "$(jwt_claim "$TA" 'p.scope')" 'mcp:read mcp:write'
check "token B aud" "$(jwt_claim "$TB" 'p.aud')" "$B"
check "token C aud" "$(jwt_claim "$TC" 'p.aud')" "$C"
check "token A (read only) scope" "$(jwt_claim "$TAR" 'p.scope')" 'mcp:read'
check "token without resource is opaque (43 chars)" "${#TOPAQUE}" 43

# session URL TOKEN LABEL EXPECTED_CT: initialize, initialized, tools/list, whoami.
session() {
  local url="$1" tok="$2" label="$3" ct="$4" sid pv
  mcp "$url" "$tok" "" "$INIT"
  check "$label initialize -> 200" "$STATUS" 200
  contains "$label   reply content-type" "$CT" "$ct"
  sid="$SID"
  if [[ -n "$sid" ]]; then ok "$label   Mcp-Session-Id header present"; else bad "$label   Mcp-Session-Id header present"; fi
  pv="$(j "$MSG" 'j.result.protocolVersion')"
  check "$label   result.protocolVersion" "$pv" '2025-11-25'
  check "$label   serverInfo.name" "$(j "$MSG" 'j.result.serverInfo.name')" "audience-cache-interop-mcp$(node -p 'new URL(process.argv[1]).pathname' "$url")"
  mcp "$url" "$tok" "$sid" "$INITIALIZED" "$pv"
  check "$label notifications/initialized -> 202" "$STATUS" 202
  check "$label   empty body" "$BODY" ""
  mcp "$url" "$tok" "$sid" "$LIST" "$pv"
  check "$label tools/list -> 200" "$STATUS" 200
  check "$label   tools" "$(j "$MSG" 'j.result.tools.map((t) => t.name).sort()')" '["whoami","write_note"]'
  mcp "$url" "$tok" "$sid" "$WHOAMI" "$pv"
  check "$label tools/call whoami -> 200" "$STATUS" 200
  check "$label   whoami aud" "$(j "$MSG" 'j.result.structuredContent.aud')" "$url"
  check "$label   whoami scopes" "$(j "$MSG" 'j.result.structuredContent.scopes')" '["mcp:read","mcp:write"]'
  check "$label   whoami session_id = Mcp-Session-Id" "$(j "$MSG" 'j.result.structuredContent.session_id')" "$sid"
  check "$label   whoami text content is the same JSON" "$(j "$MSG" 'JSON.stringify(JSON.parse(j.result.content[0].text)) === JSON.stringify(j.result.structuredContent)')" true
  SESSION="$sid"
  PV="$pv"
}

echo "== MCP session at A (SSE replies)"
session "$A" "$TA" "A" "text/event-stream"
SA="$SESSION"
echo "== MCP session at B (SSE replies, same port as A)"
session "$B" "$TB" "B" "text/event-stream"
SB="$SESSION"
echo "== MCP session at C (JSON replies, other port)"
session "$C" "$TC" "C" "application/json"

echo "== a token for one server sent to another"
mcp "$B" "$TA" "" "$INIT"
check "token A at B (same origin) -> 401" "$STATUS" 401
contains "  invalid_token" "$WWW" 'error="invalid_token"'
contains "  resource_metadata of B" "$WWW" "resource_metadata=\"$(prm_url "$B")\""
check "  body" "$BODY" "{\"error\":\"invalid_token\",\"error_description\":\"Token audience is not $B\"}"
mcp "$A" "$TB" "$SA" "$WHOAMI" "$PV"
check "token B at A, inside A's session -> 401" "$STATUS" 401
contains "  invalid_token" "$WWW" 'error="invalid_token"'
mcp "$C" "$TA" "" "$INIT"
check "token A at C (other port) -> 401" "$STATUS" 401
contains "  invalid_token" "$WWW" 'error="invalid_token"'
mcp "$A" "$TC" "" "$INIT"
check "token C at A -> 401" "$STATUS" 401
mcp "$A" "$TOPAQUE" "" "$INIT"
check "opaque token (no resource) at A -> 401" "$STATUS" 401
contains "  invalid_token" "$WWW" 'error="invalid_token"'
mcp "$B" "$TB" "$SA" "$WHOAMI" "$PV"
check "A's session id at B (B's token) -> 404" "$STATUS" 404
check "  body" "$BODY" '{"jsonrpc":"2.0","error":{"code":-32001,"message":"Session not found"},"id":null}'

echo "== insufficient scope (REQUIRED_SCOPES $RULES)"
mcp "$A" "$TAR" "$SA" "$WHOAMI" "$PV"
check "read-only token, whoami at A -> 200" "$STATUS" 200
check "  whoami scopes" "$(j "$MSG" 'j.result.structuredContent.scopes')" '["mcp:read"]'
mcp "$A" "$TAR" "$SA" "$NOTE" "$PV"
check "read-only token, write_note at A -> 403" "$STATUS" 403
check "  WWW-Authenticate" "$WWW" "Bearer error=\"insufficient_scope\", error_description=\"Insufficient scope\", scope=\"mcp:write\", resource_metadata=\"$(prm_url "$A")\""
check "  body" "$BODY" '{"error":"insufficient_scope","error_description":"Insufficient scope"}'
mcp "$A" "" "$SA" "$NOTE" "$PV"
check "no token, write_note at A -> 401" "$STATUS" 401
contains "  401 also names the scope" "$WWW" 'scope="mcp:write"'
mcp "$A" "$TA" "$SA" "$NOTE" "$PV"
check "read-write token, write_note at A -> 200" "$STATUS" 200
check "  stored" "$(j "$MSG" 'j.result.structuredContent.stored')" true
check "  aud" "$(j "$MSG" 'j.result.structuredContent.aud')" "$A"

echo "== /_test/requests"
http_get "$O1/_test/requests"
REQS="$BODY"
check "record is JSON with count = requests.length" "$(j "$REQS" 'j.count === j.requests.length && j.count > 0')" true
if [[ "$REQS" == *"$TA"* || "$REQS" == *"$TB"* || "$REQS" == *"$TAR"* ]]; then bad "record holds no token"; else ok "record holds no token"; fi
check "every request to B that carried token A was refused" \
  "$(j "$REQS" "JSON.stringify([...new Set(j.requests.filter((r) => r.path === '/mcp-b' && r.aud === '$A').map((r) => r.status))])")" '[401]'
check "every request to A that carried token B was refused" \
  "$(j "$REQS" "JSON.stringify([...new Set(j.requests.filter((r) => r.path === '/mcp-a' && r.aud === '$B').map((r) => r.status))])")" '[401]'
check "every request accepted by A or B carried its own aud" \
  "$(j "$REQS" "j.requests.filter((r) => r.resource && r.status < 300).every((r) => r.aud === r.resource)")" true
check "no-token request recorded as bearer=false" \
  "$(j "$REQS" "j.requests.some((r) => r.path === '/mcp-a' && !r.bearer && r.aud === null && r.status === 401)")" true
check "write_note 403 recorded with rpc and scope" \
  "$(j "$REQS" "j.requests.some((r) => r.status === 403 && r.rpc?.[0]?.tool === 'write_note' && r.scope === 'mcp:read')")" true
http_get -X POST "$O1/_test/reset"
check "POST /_test/reset" "$BODY" '{"count":0,"requests":[]}'
mcp "$B" "$TB" "$SB" "$WHOAMI" "$PV"
http_get "$O1/_test/requests"
check "after reset: one request recorded" "$(j "$BODY" 'j.count')" 1
check "  its fields" "$(j "$BODY" "const r = j.requests[0]; [r.method, r.path, r.resource, r.bearer, r.aud, r.session_id === '$SB', r.rpc[0].method, r.rpc[0].tool, r.status].join(' ')")" \
  "POST /mcp-b $B true $B true tools/call whoami 200"
http_get "$O2/_test/requests"
check "C's record (other process) has no token for A or B" \
  "$(j "$BODY" "j.requests.filter((r) => r.aud && r.aud !== '$C').every((r) => r.status === 401)")" true

echo "smoke: $PASS passed, $FAIL failed"
[[ "$FAIL" -eq 0 ]]
