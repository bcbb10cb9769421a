// Interop MCP server(s) for audience-cache tests, built on the official
// TypeScript SDK (@modelcontextprotocol/sdk, pinned in package-lock.json).
// Test use only.
//
// One process, one port on 127.0.0.1, one or more streamable-HTTP MCP servers
// (one per path in MCP_PATHS). Each is its own OAuth protected resource with
// resource identifier http://127.0.0.1:<port><path>, protected by the SDK's
// requireBearerAuth and described by the SDK's mcpAuthMetadataRouter.
// Access tokens are JWTs from the authorization server AS_ISSUER, verified
// with jose against the AS's JWKS (issuer and audience checked exactly).
// For MCP servers on different ports, run one process per port.
//
// stdout carries exactly one line, `LISTENING <port> <resource-url>...`,
// printed once the server accepts connections. Everything else goes to stderr.

import * as http from 'node:http';
import { randomUUID } from 'node:crypto';

// ---------------------------------------------------------------------------
// Keep stdout clean (the SDK and express may print through console.*). This
// runs before the SDK is imported, hence the dynamic imports below.
const toStderr = (...args) => {
  process.stderr.write(`${args.map((a) => (typeof a === 'string' ? a : JSON.stringify(a))).join(' ')}\n`);
};
console.log = toStderr;
console.info = toStderr;
console.warn = toStderr;
console.debug = toStderr;

const log = (msg) => process.stderr.write(`[interop-mcp] ${msg}\n`);
const fail = (msg) => {
  log(msg);
  process.exit(2);
};

const { McpServer } = await import('@modelcontextprotocol/sdk/server/mcp.js');
const { StreamableHTTPServerTransport } = await import('@modelcontextprotocol/sdk/server/streamableHttp.js');
const { createMcpExpressApp } = await import('@modelcontextprotocol/sdk/server/express.js');
const { requireBearerAuth } = await import('@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js');
const { mcpAuthMetadataRouter, getOAuthProtectedResourceMetadataUrl } = await import('@modelcontextprotocol/sdk/server/auth/router.js');
const { InvalidTokenError, ServerError } = await import('@modelcontextprotocol/sdk/server/auth/errors.js');
const { isInitializeRequest } = await import('@modelcontextprotocol/sdk/types.js');
const { InMemoryEventStore } = await import('@modelcontextprotocol/sdk/examples/shared/inMemoryEventStore.js');
const { createRemoteJWKSet, jwtVerify, decodeJwt, errors: joseErrors } = await import('jose');
const { z } = await import('zod');

// ---------------------------------------------------------------------------
// Environment.

function intEnv(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) fail(`invalid ${name}=${JSON.stringify(raw)}; expected a non-negative integer`);
  return n;
}
const flagEnv = (name) => process.env[name] === '1' || process.env[name] === 'true';

const HOST = '127.0.0.1';
const PORT = intEnv('PORT', 0);
const AS_WAIT_SECONDS = intEnv('AS_WAIT_SECONDS', 10);
const JSON_RESPONSE = flagEnv('MCP_JSON_RESPONSE');
const STATELESS = flagEnv('MCP_STATELESS');
// MCP_RESUMABLE=1: the SDK's in-memory event store (resumable SSE streams, a priming event
// with `retry: 100`) and a tool `reconnect` that closes its own response stream before it
// answers, so that the client must resume the stream (GET with Last-Event-ID) to get it.
const RESUMABLE = flagEnv('MCP_RESUMABLE');
const SCOPES_SUPPORTED = (process.env.SCOPES_SUPPORTED ?? 'mcp:read mcp:write').split(/\s+/).filter(Boolean);

const AS_ISSUER = process.env.AS_ISSUER ?? '';
if (!AS_ISSUER) fail('AS_ISSUER is required, e.g. AS_ISSUER=http://127.0.0.1:PORT');
if (!URL.canParse(AS_ISSUER)) fail(`AS_ISSUER=${JSON.stringify(AS_ISSUER)} is not an absolute URL`);

// MCP_PATHS: comma-separated, each "/segment[/segment...]", no trailing slash.
const PATHS = (process.env.MCP_PATHS ?? '/mcp').split(',').map((p) => p.trim()).filter(Boolean);
if (PATHS.length === 0) fail('MCP_PATHS is empty');
for (const p of PATHS) {
  if (!/^(\/[A-Za-z0-9._~-]+)+$/.test(p)) {
    fail(`invalid path ${JSON.stringify(p)} in MCP_PATHS: expected /seg[/seg...] of [A-Za-z0-9._~-], no trailing slash`);
  }
  if (p.startsWith('/.well-known') || p.startsWith('/_test')) fail(`path ${p} is reserved`);
}
if (new Set(PATHS).size !== PATHS.length) fail('MCP_PATHS has duplicates');

// REQUIRED_SCOPES: rules separated by ";" or newlines, each
//   [<path> ]<selector>=<scope>[ <scope>...]
// selector: "*" (every request to the MCP endpoint), a JSON-RPC method
// ("tools/call", "tools/list", ...) or "tools/call:<tool name>". Without a
// path the rule applies to every MCP path. A request needs the union of the
// scopes of all rules that match it (any message of a batch).
function parseRequiredScopes(raw) {
  const rules = [];
  for (const entry of (raw ?? '').split(/[;\n]/).map((e) => e.trim()).filter(Boolean)) {
    const eq = entry.indexOf('=');
    if (eq < 0) fail(`REQUIRED_SCOPES entry ${JSON.stringify(entry)}: expected [<path> ]<selector>=<scopes>`);
    const lhs = entry.slice(0, eq).trim().split(/\s+/);
    const scopes = entry.slice(eq + 1).trim().split(/\s+/).filter(Boolean);
    if (lhs.length > 2 || lhs[0] === '' || scopes.length === 0) {
      fail(`REQUIRED_SCOPES entry ${JSON.stringify(entry)}: expected [<path> ]<selector>=<scopes>`);
    }
    const [path, selector] = lhs.length === 2 ? lhs : [null, lhs[0]];
    if (path !== null && !PATHS.includes(path)) fail(`REQUIRED_SCOPES entry ${JSON.stringify(entry)}: path ${path} is not in MCP_PATHS`);
    rules.push({ path, selector, scopes });
  }
  return rules;
}
const SCOPE_RULES = parseRequiredScopes(process.env.REQUIRED_SCOPES);

// ---------------------------------------------------------------------------
// Request record (GET /_test/requests). One entry per HTTP request to this
// port except /_test/*; never the token itself.

const record = { next_seq: 1, requests: [] };

function bearerInfo(authorization) {
  if (typeof authorization !== 'string' || authorization === '') {
    return { authorization: null, bearer: false, aud: null, scope: null, jwt: false };
  }
  const [scheme, token] = authorization.split(' ');
  const bearer = scheme.toLowerCase() === 'bearer' && !!token;
  let aud = null;
  let scope = null;
  let jwt = false;
  if (bearer) {
    try {
      const claims = decodeJwt(token); // not verified: only to show which token arrived
      jwt = true;
      aud = claims.aud ?? null;
      scope = typeof claims.scope === 'string' ? claims.scope : null;
    } catch {
      jwt = false;
    }
  }
  return { authorization: scheme, bearer, aud, scope, jwt };
}

function rpcSummary(body) {
  const msgs = Array.isArray(body) ? body : [body];
  return msgs.map((m) => {
    if (!m || typeof m !== 'object') return { method: null };
    const out = { method: typeof m.method === 'string' ? m.method : null };
    if ('id' in m) out.id = m.id;
    if (m.method === 'tools/call' && typeof m.params?.name === 'string') out.tool = m.params.name;
    return out;
  });
}

// ---------------------------------------------------------------------------
// Listen first (PORT=0 means ephemeral); the resource identifiers need the port.

const server = http.createServer();
server.on('error', (err) => {
  log(`server error: ${err.message}`);
  process.exit(1);
});
await new Promise((resolve) => { server.listen(PORT, HOST, resolve); });
const { port } = server.address();
const ORIGIN = `http://${HOST}:${port}`;

// ---------------------------------------------------------------------------
// Authorization server metadata (RFC 8414, else OpenID discovery), retried for
// up to AS_WAIT_SECONDS while the AS starts.

async function fetchAsMetadata() {
  const base = AS_ISSUER.replace(/\/$/, '');
  const urls = [`${base}/.well-known/oauth-authorization-server`, `${base}/.well-known/openid-configuration`];
  const deadline = Date.now() + AS_WAIT_SECONDS * 1000;
  let lastError = '';
  for (;;) {
    for (const url of urls) {
      try {
        const res = await fetch(url, { signal: AbortSignal.timeout(3000) });
        if (res.ok) return { url, metadata: await res.json() };
        lastError = `${url}: HTTP ${res.status}`;
      } catch (err) {
        lastError = `${url}: ${err.cause?.code ?? err.cause?.message ?? err.message}`;
      }
    }
    if (Date.now() >= deadline) fail(`cannot fetch authorization server metadata (${lastError})`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

const { url: asMetadataUrl, metadata: asMetadata } = await fetchAsMetadata();
if (asMetadata.issuer !== AS_ISSUER) {
  fail(`AS metadata at ${asMetadataUrl} has issuer ${JSON.stringify(asMetadata.issuer)}, expected AS_ISSUER=${JSON.stringify(AS_ISSUER)} exactly`);
}
if (typeof asMetadata.jwks_uri !== 'string') fail(`AS metadata at ${asMetadataUrl} has no jwks_uri`);

// A fresh oidc-provider generates a new key at every start; a short cooldown
// lets an unknown kid trigger a JWKS refetch after 1 s (jose default: 30 s).
const jwks = createRemoteJWKSet(new URL(asMetadata.jwks_uri), { cooldownDuration: 1000, timeoutDuration: 5000 });

// ---------------------------------------------------------------------------
// Token verification (the OAuthTokenVerifier given to requireBearerAuth).
// Error messages go verbatim into the SDK's WWW-Authenticate header, which it
// does not escape: keep them free of double quotes.

function toOAuthError(err, resource) {
  const code = err?.code;
  if (code === 'ERR_JWT_EXPIRED') return new InvalidTokenError('Token has expired');
  if (code === 'ERR_JWT_CLAIM_VALIDATION_FAILED') {
    if (err.claim === 'aud') return new InvalidTokenError(`Token audience is not ${resource}`);
    if (err.claim === 'iss') return new InvalidTokenError('Token issuer is not the authorization server');
    if (err.claim === 'typ') return new InvalidTokenError('Token type is not at+jwt');
    return new InvalidTokenError(`Token claim ${err.claim} is invalid`);
  }
  if (code === 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED') return new InvalidTokenError('Token signature is invalid');
  if (code === 'ERR_JWKS_NO_MATCHING_KEY') return new InvalidTokenError('No authorization server key matches the token');
  if (code === 'ERR_JOSE_ALG_NOT_ALLOWED') return new InvalidTokenError('Token algorithm is not RS256');
  if (code === 'ERR_JWS_INVALID' || code === 'ERR_JWT_INVALID' || code === 'ERR_JOSE_NOT_SUPPORTED') {
    return new InvalidTokenError('Token is not a JWT access token');
  }
  if (code === 'ERR_JWKS_TIMEOUT' || code === 'ERR_JWKS_INVALID' || code === 'ERR_JWKS_MULTIPLE_MATCHING_KEYS' || err instanceof TypeError) {
    return new ServerError('Cannot use the authorization server JWKS');
  }
  return new InvalidTokenError('Token is invalid');
}

function makeVerifier(resource) {
  return {
    async verifyAccessToken(token) {
      let payload;
      try {
        ({ payload } = await jwtVerify(token, jwks, {
          issuer: AS_ISSUER,
          audience: resource,
          algorithms: ['RS256'],
          typ: 'at+jwt',
        }));
      } catch (err) {
        const mapped = toOAuthError(err, resource);
        log(`token refused at ${resource}: ${err.code ?? err.name}: ${err.message} -> ${mapped.errorCode}`);
        throw mapped;
      }
      const scopes = typeof payload.scope === 'string' ? payload.scope.split(' ').filter(Boolean) : [];
      return {
        token,
        clientId: typeof payload.client_id === 'string' ? payload.client_id : String(payload.sub ?? ''),
        scopes,
        expiresAt: payload.exp,
        // jwtVerify accepted the audience, so it contains `resource` exactly.
        resource: new URL(resource),
        extra: { aud: payload.aud, sub: payload.sub ?? null, iss: payload.iss, jti: payload.jti ?? null },
      };
    },
  };
}

// ---------------------------------------------------------------------------
// The MCP servers, one per path.

function buildMcpServer(srv) {
  const mcp = new McpServer({ name: `audience-cache-interop-mcp${srv.path}`, version: '1.0.0' });

  const whoami = (extra) => {
    const a = extra.authInfo;
    return {
      resource: srv.resource,
      aud: a?.extra?.aud ?? null,
      scopes: a?.scopes ?? [],
      client_id: a?.clientId ?? null,
      sub: a?.extra?.sub ?? null,
      session_id: extra.sessionId ?? null,
    };
  };

  mcp.registerTool('whoami', {
    description: 'Returns the audience and scopes of the access token this call was made with.',
  }, async (extra) => {
    const info = whoami(extra);
    return { content: [{ type: 'text', text: JSON.stringify(info) }], structuredContent: info };
  });

  mcp.registerTool('write_note', {
    description: 'Stores a note on this server. Needs scope mcp:write when REQUIRED_SCOPES says so.',
    inputSchema: { text: z.string() },
  }, async ({ text }, extra) => {
    srv.notes.push(text);
    const info = { ...whoami(extra), stored: true, note_count: srv.notes.length };
    return { content: [{ type: 'text', text: JSON.stringify(info) }], structuredContent: info };
  });

  if (RESUMABLE) {
    mcp.registerTool('reconnect', {
      description: 'Closes its response stream, then answers on the stream the client resumes.',
    }, async (extra) => {
      extra.closeSSEStream?.();
      await new Promise((resolve) => setTimeout(resolve, 300));
      const info = whoami(extra);
      return { content: [{ type: 'text', text: JSON.stringify(info) }], structuredContent: info };
    });
  }

  return mcp;
}

function jsonRpcError(res, status, code, message) {
  res.status(status).json({ jsonrpc: '2.0', error: { code, message }, id: null });
}

const servers = PATHS.map((path) => {
  const resource = `${ORIGIN}${path}`;
  const srv = {
    path,
    resource,
    resourceMetadataUrl: getOAuthProtectedResourceMetadataUrl(new URL(resource)),
    verifier: makeVerifier(resource),
    sessions: new Map(), // Mcp-Session-Id -> transport (stateful mode)
    notes: [],
    authByScopes: new Map(), // "scope scope" -> requireBearerAuth middleware
  };
  srv.auth = (requiredScopes) => {
    const key = requiredScopes.join(' ');
    if (!srv.authByScopes.has(key)) {
      srv.authByScopes.set(key, requireBearerAuth({
        verifier: srv.verifier,
        requiredScopes,
        resourceMetadataUrl: srv.resourceMetadataUrl,
        expectedResource: new URL(resource),
      }));
    }
    return srv.authByScopes.get(key);
  };
  return srv;
});
const byPath = new Map(servers.map((s) => [s.path, s]));

function requiredScopesFor(srv, req) {
  const msgs = req.method === 'POST' && req.body !== undefined ? (Array.isArray(req.body) ? req.body : [req.body]) : [];
  const out = new Set();
  for (const rule of SCOPE_RULES) {
    if (rule.path !== null && rule.path !== srv.path) continue;
    const hit = rule.selector === '*' || msgs.some((m) => m && typeof m === 'object' && (
      m.method === rule.selector
      || (m.method === 'tools/call' && rule.selector === `tools/call:${m.params?.name}`)));
    if (hit) rule.scopes.forEach((s) => out.add(s));
  }
  return [...out].sort();
}

async function handleMcp(srv, req, res) {
  if (req.bodyParseFailed) {
    // What the SDK transport answers for a body that is not JSON.
    jsonRpcError(res, 400, -32700, 'Parse error: Invalid JSON');
    return;
  }

  if (STATELESS) {
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: JSON_RESPONSE });
    const mcp = buildMcpServer(srv);
    res.on('close', () => { transport.close(); mcp.close(); });
    await mcp.connect(transport);
    await transport.handleRequest(req, res, req.body);
    return;
  }

  const sid = req.headers['mcp-session-id'];
  if (typeof sid === 'string') {
    const transport = srv.sessions.get(sid);
    if (!transport) {
      jsonRpcError(res, 404, -32001, 'Session not found');
      return;
    }
    await transport.handleRequest(req, res, req.body);
    return;
  }

  if (req.method === 'POST' && req.body !== undefined && isInitializeRequest(req.body)) {
    const transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      enableJsonResponse: JSON_RESPONSE,
      ...(RESUMABLE ? { eventStore: new InMemoryEventStore(), retryInterval: 100 } : {}),
      onsessioninitialized: (id) => { srv.sessions.set(id, transport); },
      onsessionclosed: (id) => { srv.sessions.delete(id); },
    });
    transport.onclose = () => {
      if (transport.sessionId) srv.sessions.delete(transport.sessionId);
    };
    const mcp = buildMcpServer(srv);
    await mcp.connect(transport);
    await transport.handleRequest(req, res, req.body);
    return;
  }

  jsonRpcError(res, 400, -32000, 'Bad Request: Mcp-Session-Id header is required');
}

// ---------------------------------------------------------------------------
// Express app: the SDK's createMcpExpressApp (Host header check for
// localhost/127.0.0.1/[::1], then express.json()), the SDK's metadata routers,
// then the MCP endpoints behind the SDK's requireBearerAuth.

const app = createMcpExpressApp({ host: HOST });

// A body that is not valid JSON: let it reach requireBearerAuth first, so an
// unauthenticated request is still answered 401; handleMcp answers -32700.
app.use((err, req, res, next) => {
  if (err?.type === 'entity.parse.failed') {
    req.bodyParseFailed = true;
    req.body = undefined;
    next();
    return;
  }
  next(err);
});

app.use((req, _res, next) => {
  if (req.interopRecord && req.body !== undefined) req.interopRecord.rpc = rpcSummary(req.body);
  next();
});

for (const srv of servers) {
  app.use(mcpAuthMetadataRouter({
    oauthMetadata: asMetadata,
    resourceServerUrl: new URL(srv.resource),
    scopesSupported: SCOPES_SUPPORTED,
    resourceName: `audience-cache interop MCP server ${srv.path}`,
  }));
}

app.use((req, res, next) => {
  const srv = byPath.get(req.path); // exact, case-sensitive; no trailing-slash variant
  if (!srv) {
    next();
    return;
  }
  const auth = srv.auth(requiredScopesFor(srv, req));
  auth(req, res, () => {
    handleMcp(srv, req, res).catch((err) => {
      log(`error handling ${req.method} ${req.path}: ${err.stack ?? err}`);
      if (!res.headersSent) jsonRpcError(res, 500, -32603, 'Internal server error');
    });
  });
});

// Last: anything else that failed (e.g. body too large) as JSON, no stack.
app.use((err, _req, res, _next) => {
  log(`express error: ${err.type ?? err.name}: ${err.message}`);
  if (res.headersSent) return;
  const status = Number.isInteger(err.status) ? err.status : 500;
  jsonRpcError(res, status, -32000, err.expose ? err.message : 'Internal server error');
});

// ---------------------------------------------------------------------------
// Raw request handler: /_test endpoints, request record, then the app.

server.on('request', (req, res) => {
  const path = new URL(req.url ?? '/', ORIGIN).pathname;

  if (path === '/_test/requests' && req.method === 'GET') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ count: record.requests.length, requests: record.requests }));
    return;
  }
  if (path === '/_test/reset' && req.method === 'POST') {
    record.requests = [];
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ count: 0, requests: [] }));
    return;
  }

  const sid = req.headers['mcp-session-id'];
  const entry = {
    seq: record.next_seq++,
    method: req.method,
    path,
    resource: byPath.get(path)?.resource ?? null,
    ...bearerInfo(req.headers.authorization),
    session_id: typeof sid === 'string' ? sid : null,
    last_event_id: typeof req.headers['last-event-id'] === 'string' ? req.headers['last-event-id'] : null,
    rpc: null,
    status: null,
  };
  record.requests.push(entry);
  req.interopRecord = entry;

  // The status is recorded when the response head is written, i.e. before
  // the client can see any of the response.
  const writeHead = res.writeHead;
  res.writeHead = function patchedWriteHead(status, ...rest) {
    entry.status = status;
    return writeHead.call(this, status, ...rest);
  };
  res.on('finish', () => {
    const rpc = entry.rpc ? ` rpc=${entry.rpc.map((r) => r.tool ? `${r.method}(${r.tool})` : r.method).join(',')}` : '';
    const aud = entry.bearer ? ` aud=${JSON.stringify(entry.aud)}` : '';
    log(`${entry.method} ${path} bearer=${entry.bearer ? 'yes' : 'no'}${aud}${rpc} -> ${entry.status ?? res.statusCode}`);
  });

  app(req, res);
});

// ---------------------------------------------------------------------------
// Shutdown.

const shutdown = (signal) => {
  log(`received ${signal}, closing`);
  for (const srv of servers) {
    for (const transport of srv.sessions.values()) transport.close().catch(() => {});
  }
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
};
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));

// EXIT_ON_STDIN_CLOSE=1: exit when stdin reaches end of file or closes, so a
// harness that spawns the server with a pipe on stdin never leaves it behind.
if (flagEnv('EXIT_ON_STDIN_CLOSE')) {
  const stdinClosed = () => {
    log('stdin closed, exiting');
    process.exit(0);
  };
  process.stdin.on('end', stdinClosed);
  process.stdin.on('close', stdinClosed);
  process.stdin.on('error', stdinClosed);
  process.stdin.resume();
}

log(`authorization server ${AS_ISSUER} (metadata ${asMetadataUrl}, jwks ${asMetadata.jwks_uri})`);
for (const srv of servers) {
  const rules = SCOPE_RULES.filter((r) => r.path === null || r.path === srv.path)
    .map((r) => `${r.selector}=${r.scopes.join(' ')}`).join('; ') || 'none';
  log(`MCP server ${srv.resource} (metadata ${srv.resourceMetadataUrl}; required scopes: ${rules})`);
}
log(`mode: ${STATELESS ? 'stateless' : 'stateful (Mcp-Session-Id)'}, replies ${JSON_RESPONSE ? 'application/json' : 'text/event-stream'}`);
process.stdout.write(`LISTENING ${port} ${servers.map((s) => s.resource).join(' ')}\n`);
