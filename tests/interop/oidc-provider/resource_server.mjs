// A protected resource that takes only DPoP-bound tokens (RFC 9449 §7), for the interop
// tests: it verifies the access token (a JWT the provider signed, for this resource), the
// proof (ES256 over its embedded jwk, typ dpop+jwt, htm and htu of this request, a recent
// iat, a jti not seen before, ath of the token, the current nonce of this server), and that
// the proof's key is the token's cnf.jkt. It records what it saw at GET /_test/stats (no
// tokens, no proofs) and serves RFC 9728 metadata saying dpop_bound_access_tokens_required.
//
// `jose` is oidc-provider's own dependency (hoisted into node_modules by npm ci).

import * as crypto from 'node:crypto';
import * as http from 'node:http';

import { calculateJwkThumbprint, EmbeddedJWK, jwtVerify } from 'jose';

const PATH = '/mcp';
const METADATA = `/.well-known/oauth-protected-resource${PATH}`;

// Starts the server on 127.0.0.1 with an ephemeral port; resolves to its origin.
export async function startResourceServer({ issuer, publicKey, log }) {
  const server = http.createServer();
  await new Promise((resolve) => { server.listen(0, '127.0.0.1', resolve); });
  const origin = `http://127.0.0.1:${server.address().port}`;
  const resource = `${origin}${PATH}`;
  let nonce = crypto.randomBytes(16).toString('base64url');
  const seenJtis = new Set();
  const stats = { requests: [] };

  const answer = (res, status, body, headers = {}) => {
    res.writeHead(status, { 'content-type': 'application/json', ...headers });
    res.end(JSON.stringify(body));
  };
  const challenge = (error, description) => {
    const params = ['algs="ES256"'];
    if (error) params.push(`error="${error}"`, `error_description="${description}"`);
    params.push(`resource_metadata="${origin}${METADATA}"`);
    return `DPoP ${params.join(', ')}`;
  };

  async function check(req, url) {
    const seen = { method: req.method, path: url.pathname };
    const authorization = req.headers.authorization ?? '';
    const match = /^DPoP (\S+)$/i.exec(authorization);
    const proof = req.headers.dpop;
    seen.scheme = authorization.split(' ')[0] || null;
    if (!match) {
      return { seen, status: 401, error: authorization ? ['invalid_token', 'DPoP-bound tokens only'] : null };
    }
    const token = match[1];
    let claims;
    try {
      ({ payload: claims } = await jwtVerify(token, publicKey, { issuer, audience: resource }));
    } catch (e) {
      return { seen, status: 401, error: ['invalid_token', `token: ${e.code ?? e.message}`] };
    }
    if (typeof proof !== 'string') {
      return { seen, status: 401, error: ['invalid_dpop_proof', 'no DPoP proof'] };
    }
    let payload;
    let protectedHeader;
    try {
      ({ payload, protectedHeader } = await jwtVerify(proof, EmbeddedJWK, { typ: 'dpop+jwt', algorithms: ['ES256'] }));
    } catch (e) {
      return { seen, status: 401, error: ['invalid_dpop_proof', `proof: ${e.code ?? e.message}`] };
    }
    seen.htm = payload.htm;
    seen.htu = payload.htu;
    seen.nonce = payload.nonce ?? null;
    seen.jkt = await calculateJwkThumbprint(protectedHeader.jwk);
    seen.cnf_jkt = claims.cnf?.jkt ?? null;
    seen.ath_ok = payload.ath === crypto.hash('sha256', token, 'base64url');
    const htu = `${origin}${url.pathname}`;
    const problems = [
      [payload.htm !== req.method, 'htm is not the method'],
      [payload.htu !== htu, 'htu is not the URL'],
      [typeof payload.iat !== 'number' || Math.abs(Date.now() / 1000 - payload.iat) > 60, 'iat is not recent'],
      [typeof payload.jti !== 'string' || seenJtis.has(payload.jti), 'jti missing or replayed'],
      [!seen.ath_ok, 'ath is not the token hash'],
    ].filter(([bad]) => bad);
    if (problems.length) {
      return { seen, status: 401, error: ['invalid_dpop_proof', problems[0][1]] };
    }
    seenJtis.add(payload.jti);
    if (payload.nonce !== nonce) {
      return { seen, status: 401, error: ['use_dpop_nonce', 'the resource server requires its nonce'], nonce: true };
    }
    if (!seen.cnf_jkt || seen.cnf_jkt !== seen.jkt) {
      return { seen, status: 401, error: ['invalid_token', 'the token is not bound to the proof key'] };
    }
    return { seen, status: 200, body: { path: url.pathname, sub: claims.sub, jkt: seen.jkt } };
  }

  server.on('request', async (req, res) => {
    const url = new URL(req.url, origin);
    if (url.pathname === '/_test/stats' && req.method === 'GET') {
      return answer(res, 200, stats);
    }
    if (url.pathname === '/_test/reset' && req.method === 'POST') {
      stats.requests = [];
      return answer(res, 200, stats);
    }
    if (url.pathname === '/_test/rotate-nonce' && req.method === 'POST') {
      nonce = crypto.randomBytes(16).toString('base64url');
      return answer(res, 200, {});
    }
    if (url.pathname === METADATA && req.method === 'GET') {
      return answer(res, 200, {
        resource,
        authorization_servers: [issuer],
        bearer_methods_supported: ['header'],
        scopes_supported: ['mcp:read'],
        dpop_signing_alg_values_supported: ['ES256'],
        dpop_bound_access_tokens_required: true,
      });
    }
    if (url.pathname !== PATH && !url.pathname.startsWith(`${PATH}/`)) {
      return answer(res, 404, { error: 'not_found' });
    }
    // The body is not read: the tests send none that matters.
    req.resume();
    let result;
    try {
      result = await check(req, url);
    } catch (e) {
      result = { seen: { method: req.method, path: url.pathname }, status: 500, body: { error: e.message } };
    }
    stats.requests.push({ ...result.seen, status: result.status, error: result.error?.[0] ?? null });
    log(`resource ${req.method} ${url.pathname} -> ${result.status}${result.error ? ` ${result.error[0]}` : ''}`);
    const headers = {};
    if (result.status === 401) {
      headers['www-authenticate'] = challenge(...(result.error ?? []));
      if (result.nonce) headers['dpop-nonce'] = nonce;
    }
    return answer(res, result.status, result.body ?? { error: result.error?.[0] }, headers);
  });

  return { origin, resource, close: () => server.close() };
}
