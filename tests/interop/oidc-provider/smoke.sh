#!/usr/bin/env bash
# Smoke test of the interop authorization server, with curl only (node is used
# for base64url/JSON/PKCE helpers). Talks to 127.0.0.1 only.
#
#   smoke.sh              starts its own server (start.sh, state in a temp dir)
#                         and stops it at the end
#   AS_BASE_URL=http://127.0.0.1:PORT smoke.sh
#                         tests an already running server
#
# Exits non-zero if any check fails. Last line: "smoke: N passed, N failed".
set -uo pipefail

DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORK="$(mktemp -d)"
STARTED=""

cleanup() {
  if [[ -n "$STARTED" ]]; then
    AS_STATE_DIR="$WORK/state" "$DIR/stop.sh" || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

if [[ -z "${AS_BASE_URL:-}" ]]; then
  port="$(AS_STATE_DIR="$WORK/state" "$DIR/start.sh" 0)" || { echo "smoke: start.sh failed" >&2; exit 1; }
  STARTED=1
  AS_BASE_URL="http://127.0.0.1:$port"
fi
B="$AS_BASE_URL"
TTL="${ACCESS_TOKEN_TTL:-300}"
echo "smoke: testing $B"

PASS=0
FAIL=0
ok()   { PASS=$((PASS + 1)); echo "  ok   $1"; }
bad()  { FAIL=$((FAIL + 1)); echo "  FAIL $1"; [[ -n "${2:-}" ]] && echo "       $2"; }
check() { # check NAME ACTUAL EXPECTED
  if [[ "$2" == "$3" ]]; then ok "$1"; else bad "$1" "expected [$3], got [$2]"; fi
}

# j JSON EXPR: evaluate a JS expression over the parsed JSON `j` (and the
# decoded access-token payload `at`, if the access token is a JWT). Prints ""
# for undefined, JSON for objects/arrays, the plain value otherwise.
j() {
  JSON_IN="$1" node -e '
    let j; try { j = JSON.parse(process.env.JSON_IN); } catch { j = undefined; }
    let at, ath;
    if (j && typeof j.access_token === "string" && j.access_token.split(".").length === 3) {
      const [h, p] = j.access_token.split(".");
      ath = JSON.parse(Buffer.from(h, "base64url"));
      at = JSON.parse(Buffer.from(p, "base64url"));
    }
    let v; try { v = eval(process.argv[1]); } catch { v = undefined; }
    if (v === undefined || v === null) v = "";
    process.stdout.write(typeof v === "object" ? JSON.stringify(v) : String(v));
  ' "$2"
}

# post_token ARGS...: POST to /token; sets BODY and STATUS.
post_token() {
  local out
  out="$(curl -sS -w $'\n%{http_code}' "$@" "$B/token")"
  BODY="${out%$'\n'*}"
  STATUS="${out##*$'\n'}"
}

REDIRECT_URI="http://127.0.0.1:8976/callback"
urlenc() { node -e 'process.stdout.write(encodeURIComponent(process.argv[1]))' "$1"; }
b64url_sha256() { node -e 'process.stdout.write(require("node:crypto").createHash("sha256").update(process.argv[1]).digest("base64url"))' "$1"; }
random_b64url() { node -e 'process.stdout.write(require("node:crypto").randomBytes(32).toString("base64url"))'; }
qparam() { # qparam URL NAME
  node -e 'process.stdout.write(new URL(process.argv[1]).searchParams.get(process.argv[2]) ?? "")' "$1" "$2"
}

# authorize CLIENT QUERY: runs the authorization request headlessly, following
# redirects by hand (own cookie jar) until one points at REDIRECT_URI. Sets
# FINAL to that URL (empty on failure).
authorize() {
  local client="$1" query="$2" jar url loc i
  jar="$(mktemp -p "$WORK")"
  url="$B/auth?response_type=code&client_id=$client&redirect_uri=$(urlenc "$REDIRECT_URI")&$query"
  FINAL=""
  for i in $(seq 1 10); do
    loc="$(curl -sS -c "$jar" -b "$jar" -o /dev/null -w '%{redirect_url}' "$url")" || return 1
    if [[ -z "$loc" ]]; then
      echo "       no redirect from $url: $(curl -sS -b "$jar" "$url")"
      return 1
    fi
    if [[ "$loc" == "$REDIRECT_URI"* ]]; then FINAL="$loc"; return 0; fi
    url="$loc"
  done
  return 1
}

RES_LOCAL="http://127.0.0.1:9999/mcp"
RES_MCP="https://mcp.example.com"
RES_API="https://api.example.com"

echo "== discovery"
DISC="$(curl -sS "$B/.well-known/openid-configuration")"
check "openid-configuration issuer" "$(j "$DISC" 'j.issuer')" "$B"
check "code_challenge_methods_supported has S256" "$(j "$DISC" 'j.code_challenge_methods_supported.includes("S256")')" "true"
check "token_endpoint" "$(j "$DISC" 'j.token_endpoint')" "$B/token"
check "authorization_response_iss_parameter_supported" "$(j "$DISC" 'j.authorization_response_iss_parameter_supported')" "true"
check "grant_types_supported has client_credentials" "$(j "$DISC" 'j.grant_types_supported.includes("client_credentials")')" "true"
AS_META="$(curl -sS "$B/.well-known/oauth-authorization-server")"
check "RFC 8414 document equals openid-configuration" "$(j "$AS_META" 'JSON.stringify(j)')" "$(j "$DISC" 'JSON.stringify(j)')"
JWKS="$(curl -sS "$B/jwks")"
check "jwks has one RS256 signing key" "$(j "$JWKS" 'j.keys.filter(k => k.alg === "RS256" && k.kty === "RSA" && !k.d).length')" "1"

echo "== test counter"
RESET="$(curl -sS -X POST "$B/_test/reset")"
check "reset zeroes the counter" "$(j "$RESET" 'j.token_requests')" "0"

echo "== client_credentials"
post_token -u cc-client:cc-secret -d grant_type=client_credentials \
  --data-urlencode "resource=$RES_LOCAL" --data-urlencode 'scope=mcp:read files:write'
check "cc basic: status" "$STATUS" "200"
check "cc basic: aud is the resource sent" "$(j "$BODY" 'at.aud')" "$RES_LOCAL"
check "cc basic: JWT typ at+jwt" "$(j "$BODY" 'ath.typ')" "at+jwt"
check "cc basic: iss" "$(j "$BODY" 'at.iss')" "$B"
check "cc basic: token scope" "$(j "$BODY" 'at.scope')" "mcp:read files:write"
check "cc basic: response scope" "$(j "$BODY" 'j.scope')" "mcp:read files:write"
check "cc basic: sub and client_id" "$(j "$BODY" 'at.sub + " " + at.client_id')" "cc-client cc-client"
check "cc basic: token_type" "$(j "$BODY" 'j.token_type')" "Bearer"
check "cc basic: expires_in = ACCESS_TOKEN_TTL" "$(j "$BODY" 'j.expires_in')" "$TTL"
check "cc basic: exp - iat = ACCESS_TOKEN_TTL" "$(j "$BODY" 'at.exp - at.iat')" "$TTL"
check "cc basic: no refresh_token" "$(j "$BODY" 'j.refresh_token')" ""

post_token -d client_id=cc-post -d client_secret=cc-secret-post -d grant_type=client_credentials \
  --data-urlencode "resource=$RES_API/v1/files" -d scope=files:read
check "cc post: status" "$STATUS" "200"
check "cc post: aud keeps the path" "$(j "$BODY" 'at.aud')" "$RES_API/v1/files"

post_token -u cc-client:cc-secret -d grant_type=client_credentials \
  --data-urlencode "resource=$RES_MCP" --data-urlencode 'scope=mcp:read not-a-scope'
check "cc: unknown scope dropped silently" "$STATUS $(j "$BODY" 'at.scope')" "200 mcp:read"

# RFC 6749 §2.3.1: urlencode(id) ":" urlencode(secret), then base64.
SPECIAL_AUTH="$(node -e '
  const f = (s) => new URLSearchParams({ x: s }).toString().slice(2);
  process.stdout.write(Buffer.from(f("cc-special") + ":" + f("s3cr3t:+/%&")).toString("base64"));')"
post_token -H "Authorization: Basic $SPECIAL_AUTH" -d grant_type=client_credentials \
  --data-urlencode "resource=http://localhost:8080/" -d scope=mcp:write
check "cc special secret, form-urlencoded basic: status" "$STATUS" "200"
check "cc special secret: aud" "$(j "$BODY" 'at.aud')" "http://localhost:8080/"
post_token -u 'cc-special:s3cr3t:+/%&' -d grant_type=client_credentials --data-urlencode "resource=$RES_MCP"
check "cc special secret, raw (not urlencoded) basic: rejected" "$STATUS $(j "$BODY" 'j.error')" "400 invalid_request"

post_token -u cc-client:cc-secret -d grant_type=client_credentials \
  --data-urlencode "resource=https://unknown.example.com/mcp" -d scope=mcp:read
check "cc unknown resource: invalid_target" "$STATUS $(j "$BODY" 'j.error')" "400 invalid_target"
post_token -u cc-client:cc-secret -d grant_type=client_credentials \
  --data-urlencode "resource=https://evil.example.net/" -d scope=mcp:read
check "cc resource not on allow-list: invalid_target" "$STATUS $(j "$BODY" 'j.error')" "400 invalid_target"
post_token -u cc-client:cc-secret -d grant_type=client_credentials \
  --data-urlencode "resource=$RES_MCP" --data-urlencode "resource=$RES_API" -d scope=mcp:read
check "cc two resources: invalid_target" "$STATUS $(j "$BODY" 'j.error')" "400 invalid_target"
post_token -u cc-client:cc-secret -d grant_type=client_credentials --data-urlencode "resource=$RES_MCP#frag"
check "cc resource with fragment: invalid_target" "$STATUS $(j "$BODY" 'j.error')" "400 invalid_target"
post_token -u cc-client:wrong-secret -d grant_type=client_credentials --data-urlencode "resource=$RES_MCP"
check "cc wrong secret: 401 invalid_client" "$STATUS $(j "$BODY" 'j.error')" "401 invalid_client"

STATS="$(curl -sS "$B/_test/stats")"
check "stats: token_requests counted" "$(j "$STATS" 'j.token_requests')" "10"
check "stats: by_grant" "$(j "$STATS" 'JSON.stringify(j.by_grant)')" '{"client_credentials":10}'
check "stats: repeated resource recorded as array" "$(j "$STATS" 'JSON.stringify(j.resources[7])')" "[\"$RES_MCP\",\"$RES_API\"]"
check "stats: first resource" "$(j "$STATS" 'j.resources[0]')" "$RES_LOCAL"

echo "== authorization code + PKCE (public client code-client)"
VERIFIER="$(random_b64url)"
CHALLENGE="$(b64url_sha256 "$VERIFIER")"
PKCE="code_challenge=$CHALLENGE&code_challenge_method=S256"
STATE="st-$(random_b64url | cut -c1-12)"

# The one-liner variant: curl -L with a cookie jar. The last hop (to the
# redirect_uri, where nothing listens) fails to connect, so curl exits 7, but
# url_effective still shows where it ended.
EFFECTIVE="$(curl -s -c "$WORK/jar-L" -b "$WORK/jar-L" -L --max-redirs 10 -o /dev/null -w '%{url_effective}' \
  "$B/auth?response_type=code&client_id=code-client&redirect_uri=$(urlenc "$REDIRECT_URI")&scope=$(urlenc 'mcp:read')&state=x&$PKCE&resource=$(urlenc "$RES_MCP")")"
check "curl -L ends at redirect_uri with a code" "$([[ "$EFFECTIVE" == "$REDIRECT_URI?code="* ]] && echo yes)" "yes"

authorize code-client "scope=$(urlenc 'openid mcp:read mcp:write')&state=$STATE&$PKCE&resource=$(urlenc "$RES_LOCAL")"
check "authorization response reaches redirect_uri" "$([[ -n "$FINAL" ]] && echo yes)" "yes"
CODE="$(qparam "$FINAL" code)"
check "authorization response has code" "$([[ -n "$CODE" ]] && echo yes)" "yes"
check "authorization response state" "$(qparam "$FINAL" state)" "$STATE"
check "authorization response iss (RFC 9207)" "$(qparam "$FINAL" iss)" "$B"

post_token -d grant_type=authorization_code -d client_id=code-client -d "code=$CODE" \
  --data-urlencode "redirect_uri=$REDIRECT_URI" -d "code_verifier=$VERIFIER" --data-urlencode "resource=$RES_LOCAL"
check "code exchange: status" "$STATUS" "200"
check "code exchange: aud" "$(j "$BODY" 'at.aud')" "$RES_LOCAL"
check "code exchange: sub" "$(j "$BODY" 'at.sub')" "alice"
check "code exchange: scope limited to the resource's scopes" "$(j "$BODY" 'j.scope + " | " + at.scope')" "mcp:read mcp:write | mcp:read mcp:write"
check "code exchange: id_token present (openid requested)" "$(j "$BODY" '!!j.id_token')" "true"
RT1="$(j "$BODY" 'j.refresh_token')"
check "code exchange: refresh_token issued (no offline_access needed)" "$([[ -n "$RT1" ]] && echo yes)" "yes"

echo "== refresh_token rotation"
post_token -d grant_type=refresh_token -d client_id=code-client -d "refresh_token=$RT1" --data-urlencode "resource=$RES_LOCAL"
check "refresh: status" "$STATUS" "200"
check "refresh: aud" "$(j "$BODY" 'at.aud')" "$RES_LOCAL"
RT2="$(j "$BODY" 'j.refresh_token')"
check "refresh: rotated refresh_token differs" "$([[ -n "$RT2" && "$RT2" != "$RT1" ]] && echo yes)" "yes"

post_token -d grant_type=refresh_token -d client_id=code-client -d "refresh_token=$RT1" --data-urlencode "resource=$RES_LOCAL"
check "refresh with the old (rotated) token: invalid_grant" "$STATUS $(j "$BODY" 'j.error')" "400 invalid_grant"
post_token -d grant_type=refresh_token -d client_id=code-client -d "refresh_token=$RT2" --data-urlencode "resource=$RES_LOCAL"
check "reuse detection revoked the whole grant: new token dead too" "$STATUS $(j "$BODY" 'j.error')" "400 invalid_grant"

echo "== authorization code reuse"
authorize code-client "scope=mcp:read&state=s0&$PKCE&resource=$(urlenc "$RES_LOCAL")"
CODE="$(qparam "$FINAL" code)"
post_token -d grant_type=authorization_code -d client_id=code-client -d "code=$CODE" \
  --data-urlencode "redirect_uri=$REDIRECT_URI" -d "code_verifier=$VERIFIER" --data-urlencode "resource=$RES_LOCAL"
check "first code exchange: status" "$STATUS" "200"
RT="$(j "$BODY" 'j.refresh_token')"
post_token -d grant_type=authorization_code -d client_id=code-client -d "code=$CODE" \
  --data-urlencode "redirect_uri=$REDIRECT_URI" -d "code_verifier=$VERIFIER" --data-urlencode "resource=$RES_LOCAL"
check "code reuse: invalid_grant" "$STATUS $(j "$BODY" 'j.error')" "400 invalid_grant"
post_token -d grant_type=refresh_token -d client_id=code-client -d "refresh_token=$RT" --data-urlencode "resource=$RES_LOCAL"
check "code reuse revoked the grant: its refresh token is dead" "$STATUS $(j "$BODY" 'j.error')" "400 invalid_grant"

echo "== PKCE and authorization errors"
authorize code-client "scope=mcp:read&state=s1&resource=$(urlenc "$RES_MCP")"
check "no PKCE: error redirect invalid_request" "$(qparam "$FINAL" error)" "invalid_request"
check "no PKCE: error redirect carries iss" "$(qparam "$FINAL" iss)" "$B"
authorize code-client "scope=mcp:read&state=s2&$PKCE&resource=$(urlenc "https://unknown.example.com")"
check "unknown resource at /auth: error redirect invalid_target" "$(qparam "$FINAL" error)" "invalid_target"

echo "== resource rules on code and refresh grants (confidential client code-confidential)"
authorize code-confidential "scope=$(urlenc 'mcp:read files:read')&state=s3&$PKCE&resource=$(urlenc "$RES_MCP")&resource=$(urlenc "$RES_API")"
CODE="$(qparam "$FINAL" code)"
post_token -u code-confidential:code-secret -d grant_type=authorization_code -d "code=$CODE" \
  --data-urlencode "redirect_uri=$REDIRECT_URI" -d "code_verifier=$VERIFIER"
check "two resources granted, code exchange without resource: invalid_target" "$STATUS $(j "$BODY" 'j.error')" "400 invalid_target"

authorize code-confidential "scope=$(urlenc 'mcp:read files:read')&state=s4&$PKCE&resource=$(urlenc "$RES_MCP")&resource=$(urlenc "$RES_API")"
CODE="$(qparam "$FINAL" code)"
post_token -u code-confidential:code-secret -d grant_type=authorization_code -d "code=$CODE" \
  --data-urlencode "redirect_uri=$REDIRECT_URI" -d "code_verifier=$VERIFIER" --data-urlencode "resource=$RES_API"
check "two resources granted, exchange for one: aud" "$STATUS $(j "$BODY" 'at.aud')" "200 $RES_API"
RT="$(j "$BODY" 'j.refresh_token')"
post_token -u code-confidential:code-secret -d grant_type=refresh_token -d "refresh_token=$RT" --data-urlencode "resource=$RES_MCP"
check "refresh can switch to the other granted resource" "$STATUS $(j "$BODY" 'at.aud')" "200 $RES_MCP"
RT="$(j "$BODY" 'j.refresh_token')"
post_token -u code-confidential:code-secret -d grant_type=refresh_token -d "refresh_token=$RT" \
  --data-urlencode "resource=$RES_API" -d scope=files:read
check "refresh with narrower scope" "$STATUS $(j "$BODY" 'j.scope + " | " + at.scope')" "200 files:read | files:read"
RT="$(j "$BODY" 'j.refresh_token')"
post_token -u code-confidential:code-secret -d grant_type=refresh_token -d "refresh_token=$RT" \
  --data-urlencode "resource=$RES_API" -d 'scope=files:read files:write'
check "refresh asking for a scope never granted: invalid_scope" "$STATUS $(j "$BODY" 'j.error')" "400 invalid_scope"
post_token -u code-confidential:code-secret -d grant_type=refresh_token -d "refresh_token=$RT" --data-urlencode "resource=$RES_API"
check "invalid_scope did not consume the refresh token" "$STATUS $(j "$BODY" 'j.scope')" "200 mcp:read files:read"
RT="$(j "$BODY" 'j.refresh_token')"
post_token -u code-confidential:code-secret -d grant_type=refresh_token -d "refresh_token=$RT" --data-urlencode "resource=$RES_MCP/"
check "refresh with a resource not granted (trailing slash differs): invalid_target" "$STATUS $(j "$BODY" 'j.error')" "400 invalid_target"
post_token -u code-confidential:code-secret -d grant_type=refresh_token -d "refresh_token=$RT" --data-urlencode "resource=$RES_MCP"
check "...and that invalid_target burned the refresh token (oidc-provider rotates first)" "$STATUS $(j "$BODY" 'j.error')" "400 invalid_grant"

authorize code-client "scope=mcp:read&state=s5&$PKCE&resource=$(urlenc "$RES_MCP")"
CODE="$(qparam "$FINAL" code)"
post_token -d grant_type=authorization_code -d client_id=code-client -d "code=$CODE" \
  --data-urlencode "redirect_uri=$REDIRECT_URI" -d "code_verifier=$VERIFIER"
check "one resource granted, code exchange without resource: aud = granted resource" "$STATUS $(j "$BODY" 'at.aud')" "200 $RES_MCP"
RT="$(j "$BODY" 'j.refresh_token')"
post_token -d grant_type=refresh_token -d client_id=code-client -d "refresh_token=$RT"
check "one resource granted, refresh without resource: aud = granted resource" "$STATUS $(j "$BODY" 'at.aud')" "200 $RES_MCP"

authorize code-client "scope=mcp:read&state=s6&$PKCE&resource=$(urlenc "$RES_MCP")"
CODE="$(qparam "$FINAL" code)"
post_token -d grant_type=authorization_code -d client_id=code-client -d "code=$CODE" \
  --data-urlencode "redirect_uri=$REDIRECT_URI" -d "code_verifier=wrong-$VERIFIER"
check "wrong code_verifier: invalid_grant" "$STATUS $(j "$BODY" 'j.error')" "400 invalid_grant"

authorize code-client "scope=mcp:read&state=s7&$PKCE"
CODE="$(qparam "$FINAL" code)"
post_token -d grant_type=authorization_code -d client_id=code-client -d "code=$CODE" \
  --data-urlencode "redirect_uri=$REDIRECT_URI" -d "code_verifier=$VERIFIER" --data-urlencode "resource=$RES_MCP"
check "no resource at /auth, resource at /token: invalid_target" "$STATUS $(j "$BODY" 'j.error')" "400 invalid_target"

echo "smoke: $PASS passed, $FAIL failed"
[[ "$FAIL" -eq 0 ]]
