// Interop authorization server for audience-cache tests, built on
// panva/oidc-provider (pinned in package-lock.json). Test use only: in-memory
// storage, fixed secrets, headless auto-consent for the user "alice".
//
// stdout carries exactly one line, `LISTENING <port>`, printed once the server
// accepts connections. Everything else (oidc-provider notices, request and
// error log lines) goes to stderr.

import * as crypto from 'node:crypto';
import * as http from 'node:http';

// ---------------------------------------------------------------------------
// Keep stdout clean: oidc-provider prints notices through console.info/log.
// This must run before oidc-provider is imported (it warns at import time
// about the Node.js version), hence the dynamic import further down.
const toStderr = (...args) => {
  process.stderr.write(`${args.map((a) => (typeof a === 'string' ? a : JSON.stringify(a))).join(' ')}\n`);
};
console.log = toStderr;
console.info = toStderr;
console.warn = toStderr;
console.debug = toStderr;

const log = (msg) => process.stderr.write(`[interop-as] ${msg}\n`);

const { default: Provider, errors } = await import('oidc-provider');
const { decodeProtectedHeader, calculateJwkThumbprint, SignJWT, jwtVerify } = await import('jose');
const { startResourceServer } = await import('./resource_server.mjs');

// ---------------------------------------------------------------------------
// Environment.

function intEnv(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) {
    log(`invalid ${name}=${JSON.stringify(raw)}; expected a non-negative integer`);
    process.exit(2);
  }
  return n;
}

const PORT = intEnv('PORT', 0);
const HOST = '127.0.0.1';
const ACCESS_TOKEN_TTL = intEnv('ACCESS_TOKEN_TTL', 300) || 300;
const REFRESH_TOKEN_TTL = intEnv('REFRESH_TOKEN_TTL', 86400) || 86400;

// ---------------------------------------------------------------------------
// Resource servers (RFC 8707). Every allowed resource has the same scope set.

const RESOURCE_SCOPES = ['mcp:read', 'mcp:write', 'files:read', 'files:write'];
const HTTPS_ORIGINS = new Set(['https://mcp.example.com', 'https://api.example.com']);
const LOOPBACK_HOSTS = new Set(['127.0.0.1', 'localhost']);

function isAllowedResource(indicator) {
  if (typeof indicator !== 'string' || indicator.includes('unknown')) return false;
  const url = URL.parse(indicator);
  if (!url || url.hash || url.username || url.password) return false;
  if (url.protocol === 'http:' && LOOPBACK_HOSTS.has(url.hostname)) return true;
  if (url.protocol === 'https:' && HTTPS_ORIGINS.has(url.origin)) return true;
  return false;
}

// ---------------------------------------------------------------------------
// Signing key, generated fresh at every start.

const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingJwk = {
  ...privateKey.export({ format: 'jwk' }),
  kid: `interop-${crypto.randomBytes(6).toString('hex')}`,
  alg: 'RS256',
  use: 'sig',
};

// ---------------------------------------------------------------------------
// Workload identity federation (RFC 7523 §2.1, the JWT bearer grant): a workload
// platform whose tokens this server trusts, with a P-256 key generated at every
// start. GET /_test/workload-token mints one of its tokens for the tests (the
// platform's own job: a CI system, a Kubernetes API server).

const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const PLATFORM_ISSUER = 'https://platform.interop.test';
const platformKey = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });

// Enterprise-managed authorization: ID-JAGs (typ oauth-id-jag+jwt) from identity
// providers the tests name with POST /_test/trust-idp?issuer=…&key=… (an HS256 key,
// base64url: the embedded IdP of the crate's `testing` module signs that way).
const ID_JAG_TYP = 'oauth-id-jag+jwt';
const trustedIdps = new Map();

// ---------------------------------------------------------------------------
// Static clients.

const CODE_SCOPE = ['openid', 'offline_access', ...RESOURCE_SCOPES].join(' ');
const CC_SCOPE = RESOURCE_SCOPES.join(' ');

const clients = [
  {
    client_id: 'cc-client',
    client_secret: 'cc-secret',
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    scope: CC_SCOPE,
  },
  {
    client_id: 'cc-post',
    client_secret: 'cc-secret-post',
    token_endpoint_auth_method: 'client_secret_post',
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    scope: CC_SCOPE,
  },
  {
    // RFC 6749 §2.3.1: the secret has to be form-urlencoded before it goes
    // into the Basic credentials.
    client_id: 'cc-special',
    client_secret: 's3cr3t:+/%&',
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    scope: CC_SCOPE,
  },
  {
    // application_type "native" makes oidc-provider ignore the port of
    // loopback http redirect URIs (RFC 8252 §7.3), so any
    // http://127.0.0.1:<port>/callback is accepted.
    client_id: 'code-client',
    application_type: 'native',
    token_endpoint_auth_method: 'none',
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    redirect_uris: ['http://127.0.0.1/callback', 'http://localhost/callback'],
    scope: CODE_SCOPE,
  },
  {
    client_id: 'code-confidential',
    client_secret: 'code-secret',
    application_type: 'native',
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    redirect_uris: ['http://127.0.0.1/callback', 'http://localhost/callback'],
    scope: CODE_SCOPE,
  },
  {
    // A client of enterprise-managed authorization: it presents ID-JAGs.
    client_id: 'enterprise-client',
    client_secret: 'enterprise-secret',
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: [JWT_BEARER],
    redirect_uris: [],
    response_types: [],
    scope: CC_SCOPE,
  },
  {
    // A workload: no secret (`none`), only the JWT bearer grant with a platform token.
    client_id: 'workload',
    token_endpoint_auth_method: 'none',
    grant_types: [JWT_BEARER],
    redirect_uris: [],
    response_types: [],
    scope: CC_SCOPE,
  },
];

// ---------------------------------------------------------------------------
// Token endpoint statistics.

// token_requests: every POST /token; by_grant: counts per grant_type;
// resources: the `resource` value of every request that had one (an array for
// a request that repeated the parameter); requests: one entry per POST /token
// in order, {grant_type, resource, scope, client_auth, status} (no secrets or
// tokens); authorization_requests: every request to the authorization endpoint
// (/auth), however it ended.
const stats = {
  token_requests: 0, by_grant: {}, resources: [], requests: [], authorization_requests: 0, assertions: [],
};

function resetStats() {
  stats.assertions = [];
  stats.authorization_requests = 0;
  stats.token_requests = 0;
  stats.by_grant = {};
  stats.resources = [];
  stats.requests = [];
}

// How the client authenticated, as far as the request shows it (not whether it
// succeeded): Basic header, form secret, or neither.
function clientAuthMethod(ctx) {
  const authorization = ctx.get('authorization');
  if (/^basic /i.test(authorization)) return 'client_secret_basic';
  if (typeof ctx.oidc?.body?.client_secret === 'string') return 'client_secret_post';
  return 'none';
}

function recordTokenRequest(body, status, clientAuth, dpop, error) {
  stats.token_requests += 1;
  const grant = typeof body?.grant_type === 'string' ? body.grant_type : '(none)';
  stats.by_grant[grant] = (stats.by_grant[grant] || 0) + 1;
  // querystring.parse yields an array for repeated parameters.
  const resource = body?.resource;
  if (resource !== undefined) {
    stats.resources.push(resource);
  }
  stats.requests.push({
    grant_type: grant,
    resource: resource ?? null,
    scope: body?.scope ?? null,
    client_auth: clientAuth,
    status,
    dpop_jkt: dpop?.jkt ?? null,
    dpop_nonce: dpop?.nonce ?? null,
    error,
  });
}

// What a token request's DPoP proof said (RFC 9449 §5), read without verifying it (the
// provider verifies it): the key's thumbprint and whether it carried a nonce.
async function dpopOf(ctx) {
  const proof = ctx.get('dpop');
  if (!proof) return null;
  try {
    const { jwk } = decodeProtectedHeader(proof);
    const payload = JSON.parse(Buffer.from(proof.split('.')[1], 'base64url').toString());
    return { jkt: await calculateJwkThumbprint(jwk), nonce: typeof payload.nonce === 'string' };
  } catch {
    return { jkt: '(unreadable)', nonce: false };
  }
}

// ---------------------------------------------------------------------------
// Listen first (PORT=0 means ephemeral), then build the provider with the
// issuer that includes the real port.

const server = http.createServer();
server.on('error', (err) => {
  log(`server error: ${err.message}`);
  process.exit(1);
});
await new Promise((resolve) => { server.listen(PORT, HOST, resolve); });
const { port } = server.address();
const ISSUER = `http://${HOST}:${port}`;

async function resourceServerInfo(_ctx, resourceIndicator) {
  if (!isAllowedResource(resourceIndicator)) {
    throw new errors.InvalidTarget();
  }
  return {
    scope: RESOURCE_SCOPES.join(' '),
    audience: resourceIndicator,
    accessTokenFormat: 'jwt',
    accessTokenTTL: ACCESS_TOKEN_TTL,
    jwt: { sign: { alg: 'RS256' } },
  };
}

const configuration = {
  clients,
  jwks: { keys: [signingJwk] },
  // Opaque cookies signing keys; test use only.
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },

  // The resource scopes must be listed here too: oidc-provider validates
  // client `scope` metadata against this list.
  scopes: ['openid', 'offline_access', ...RESOURCE_SCOPES],
  claims: { openid: ['sub'] },
  async findAccount(_ctx, sub) {
    return { accountId: sub, async claims() { return { sub }; } };
  },

  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    revocation: { enabled: true },
    introspection: { enabled: true },
    // Dynamic client registration (RFC 7591) at /reg, open (no initial access token), for
    // clients that arrive with no credentials (MCP 2025-11-25 §10.3).
    registration: { enabled: true },
    // RFC 9449, with nonces required of every proof (a request without a proof is not
    // affected): the first proof a client sends is answered use_dpop_nonce.
    dPoP: {
      enabled: true,
      nonceSecret: crypto.randomBytes(32),
      requireNonce: () => true,
    },
    resourceIndicators: {
      enabled: true,
      // No default resource. When several resources were granted at the
      // authorization endpoint and the token request names none, return the
      // list unchanged: oidc-provider then answers invalid_target.
      async defaultResource(_ctx, _client, oneOf) {
        return oneOf;
      },
      // Code / refresh grants without a `resource` parameter reuse the single
      // resource granted at the authorization endpoint.
      async useGrantedResource() {
        return true;
      },
      getResourceServerInfo: resourceServerInfo,
    },
  },

  pkce: { required: () => true },

  // Refresh tokens for every client allowed the refresh_token grant, without
  // needing offline_access; they are not bound to the browser session.
  async issueRefreshToken(_ctx, client) {
    return client.grantTypeAllowed('refresh_token');
  },
  async expiresWithSession() {
    return false;
  },
  rotateRefreshToken: true,

  ttl: {
    AccessToken: (_ctx, token) => token.resourceServer?.accessTokenTTL || ACCESS_TOKEN_TTL,
    ClientCredentials: (_ctx, token) => token.resourceServer?.accessTokenTTL || ACCESS_TOKEN_TTL,
    AuthorizationCode: 60,
    IdToken: 3600,
    RefreshToken: REFRESH_TOKEN_TTL,
    Interaction: 600,
    Session: 86400,
    Grant: 86400 * 14,
  },

  interactions: {
    url: (_ctx, interaction) => `/interaction/${interaction.uid}`,
  },

  clientBasedCORS: () => true,

  // Errors that cannot be redirected back to the client are rendered as JSON
  // (instead of an HTML page) even for browsers.
  async renderError(ctx, out) {
    ctx.type = 'json';
    ctx.body = out;
  },
};

const provider = new Provider(ISSUER, configuration);

// The JWT bearer grant (RFC 7523 §2.1) as a custom grant type: the assertion must be a
// platform token (ES256 under the platform key, iss the platform, aud this issuer,
// unexpired, with a sub); anything else is invalid_grant (§3.1). One resource
// indicator (RFC 8707), as for client credentials; the token acts for the client
// (a ClientCredentials token), and the workload's sub is recorded in the stats.
async function jwtBearerGrant(ctx) {
  const { client, params } = ctx.oidc;
  if (typeof params.assertion !== 'string' || params.assertion === '') {
    throw new errors.InvalidRequest('missing assertion');
  }
  if (typeof params.resource !== 'string') {
    throw new errors.InvalidTarget('exactly one resource indicator is required for this grant type');
  }
  let header;
  try {
    header = decodeProtectedHeader(params.assertion);
  } catch {
    header = {};
  }
  const idJag = header.typ === ID_JAG_TYP;
  const kind = idJag ? 'id-jag' : 'workload';
  let payload;
  try {
    if (idJag) {
      // The IdP named in the unverified iss must be trusted; its key then verifies it.
      const unverified = JSON.parse(Buffer.from(params.assertion.split('.')[1], 'base64url').toString());
      const key = trustedIdps.get(unverified.iss);
      if (!key) throw Object.assign(new Error('untrusted IdP'), { code: 'UNTRUSTED_IDP' });
      ({ payload } = await jwtVerify(params.assertion, key, {
        issuer: unverified.iss,
        audience: ISSUER,
        algorithms: ['HS256'],
        typ: ID_JAG_TYP,
        requiredClaims: ['sub', 'exp', 'resource', 'client_id'],
      }));
      if (payload.resource !== params.resource) {
        throw Object.assign(new Error('another resource'), { code: 'RESOURCE_MISMATCH' });
      }
      if (payload.client_id !== client.clientId) {
        throw Object.assign(new Error('another client'), { code: 'CLIENT_MISMATCH' });
      }
    } else {
      ({ payload } = await jwtVerify(params.assertion, platformKey.publicKey, {
        issuer: PLATFORM_ISSUER,
        audience: ISSUER,
        algorithms: ['ES256'],
        requiredClaims: ['sub', 'exp'],
      }));
    }
  } catch (err) {
    stats.assertions.push({ kind, sub: null, accepted: false, reason: err.code || err.name });
    throw new errors.InvalidGrant(`the assertion was refused (${err.code || err.name})`);
  }
  const resourceServer = new provider.ResourceServer(
    params.resource,
    await resourceServerInfo(ctx, params.resource),
  );
  const allowed = new Set(resourceServer.scope.split(' '));
  const scope = String(params.scope || '').split(' ').filter((s) => allowed.has(s)).join(' ');
  const token = new provider.ClientCredentials({ client, scope: scope || undefined });
  token.resourceServer = resourceServer;
  ctx.oidc.entity('ClientCredentials', token);
  const value = await token.save();
  stats.assertions.push({ kind, sub: payload.sub, accepted: true, reason: null });
  ctx.body = {
    access_token: value,
    expires_in: token.expiration,
    token_type: token.tokenType,
    scope: token.scope || undefined,
  };
}
provider.registerGrantType(JWT_BEARER, jwtBearerGrant, ['assertion', 'scope', 'resource']);

// ---------------------------------------------------------------------------
// Headless interaction: log in "alice" and consent to everything asked for.

async function handleInteraction(ctx) {
  const { req, res } = ctx;
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session } = details;

  let result;
  if (prompt.name === 'login') {
    result = { login: { accountId: 'alice' } };
  } else if (prompt.name === 'consent') {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const { missingOIDCScope, missingOIDCClaims, missingResourceScopes } = prompt.details;
    if (missingOIDCScope) grant.addOIDCScope(missingOIDCScope.join(' '));
    if (missingOIDCClaims) grant.addOIDCClaims(missingOIDCClaims);
    if (missingResourceScopes) {
      for (const [indicator, scopes] of Object.entries(missingResourceScopes)) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
    }
    const grantId = await grant.save();
    result = { consent: { grantId } };
  } else {
    result = { error: 'access_denied', error_description: `unsupported prompt ${prompt.name}` };
  }

  log(`interaction ${details.uid} prompt=${prompt.name} client=${params.client_id}`);
  ctx.respond = false; // interactionFinished writes the 303 itself
  await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
}

provider.use(async (ctx, next) => {
  // Test-only endpoints.
  if (ctx.path === '/_test/stats' && ctx.method === 'GET') {
    ctx.type = 'json';
    ctx.body = JSON.stringify(stats);
    return;
  }
  if (ctx.path === '/_test/resource-server' && ctx.method === 'GET') {
    ctx.type = 'json';
    ctx.body = JSON.stringify({ origin: resourceServer.origin, resource: resourceServer.resource });
    return;
  }
  if (ctx.path === '/_test/workload-token' && ctx.method === 'GET') {
    // ?sub=…&aud=…&ttl=… (seconds; negative for an expired token).
    const sub = ctx.query.sub || 'workload-1';
    const aud = ctx.query.aud || ISSUER;
    const ttl = Number(ctx.query.ttl ?? 300);
    const now = Math.floor(Date.now() / 1000);
    const jwt = await new SignJWT({})
      .setProtectedHeader({ alg: 'ES256', typ: 'JWT' })
      .setIssuer(PLATFORM_ISSUER)
      .setSubject(sub)
      .setAudience(aud)
      .setIssuedAt(now)
      .setExpirationTime(now + ttl)
      .setJti(crypto.randomUUID())
      .sign(platformKey.privateKey);
    ctx.type = 'json';
    ctx.body = JSON.stringify({ token: jwt });
    return;
  }
  if (ctx.path === '/_test/trust-idp' && ctx.method === 'POST') {
    trustedIdps.set(String(ctx.query.issuer), new Uint8Array(Buffer.from(String(ctx.query.key), 'base64url')));
    ctx.type = 'json';
    ctx.body = JSON.stringify({ trusted: [...trustedIdps.keys()] });
    return;
  }
  if (ctx.path === '/_test/reset' && ctx.method === 'POST') {
    resetStats();
    ctx.type = 'json';
    ctx.body = JSON.stringify(stats);
    return;
  }

  if (ctx.path === '/auth') {
    stats.authorization_requests += 1;
  }

  // RFC 8414 metadata: same document as OpenID discovery.
  if (ctx.path === '/.well-known/oauth-authorization-server' && ctx.method === 'GET') {
    ctx.path = '/.well-known/openid-configuration';
  }

  const interaction = /^\/interaction\/([^/]+)$/.exec(ctx.path);
  if (interaction && ctx.method === 'GET') {
    try {
      await handleInteraction(ctx);
    } catch (err) {
      const description = err.error_description || err.message;
      log(`interaction error: ${err.name}: ${description}`);
      ctx.respond = true;
      ctx.status = err.statusCode || 500;
      ctx.type = 'json';
      ctx.body = JSON.stringify({ error: err.error || 'server_error', error_description: description });
    }
    return;
  }

  if (ctx.path === '/token' && ctx.method === 'POST') {
    try {
      await next();
    } finally {
      // ctx.oidc.body is the parsed form body; undefined when it could not be
      // parsed (still counted, under grant "(none)").
      let error = null;
      try {
        error = ctx.status >= 400 ? JSON.parse(ctx.body)?.error ?? null : null;
      } catch {
        error = ctx.body?.error ?? null;
      }
      recordTokenRequest(ctx.oidc?.body, ctx.status, clientAuthMethod(ctx), await dpopOf(ctx), error);
      log(`token grant_type=${ctx.oidc?.body?.grant_type} resource=${JSON.stringify(ctx.oidc?.body?.resource)} -> ${ctx.status}`);
    }
    return;
  }

  await next();
});

for (const event of ['grant.error', 'authorization.error', 'server_error', 'introspection.error', 'revocation.error']) {
  provider.on(event, (ctx, err) => {
    log(`${event}: ${err.error || err.name}: ${err.error_description || err.message}${err.error_detail ? ` (detail: ${err.error_detail})` : ''}`);
  });
}

server.on('request', provider.callback());

// The DPoP resource server (resource_server.mjs), trusting this provider's signing key.
const resourceServer = await startResourceServer({
  issuer: ISSUER,
  publicKey: crypto.createPublicKey(privateKey),
  log,
});

const shutdown = (signal) => {
  log(`received ${signal}, closing`);
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
};
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));

// EXIT_ON_STDIN_CLOSE=1: a harness that spawns the server with a pipe on stdin
// (the Rust interop tests) gets it stopped when the harness process ends, even
// if that process is killed and never runs its cleanup. Opt-in, because
// start.sh runs the server with stdin from /dev/null.
if (process.env.EXIT_ON_STDIN_CLOSE === '1') {
  const stdinClosed = () => {
    log('stdin closed, exiting');
    process.exit(0);
  };
  process.stdin.on('end', stdinClosed);
  process.stdin.on('close', stdinClosed);
  process.stdin.on('error', stdinClosed);
  process.stdin.resume();
}

log(`issuer ${ISSUER}; access token ttl ${ACCESS_TOKEN_TTL}s; refresh token ttl ${REFRESH_TOKEN_TTL}s`);
process.stdout.write(`LISTENING ${port}\n`);
