// The oracle in front of MLflow for the OAuth2 tests: like oauth2-proxy with
// --skip-jwt-bearer-tokens, it lets a request through only with a bearer
// token the IdP signed (checked by `jose` against the IdP's JWKS: signature,
// issuer, audience, expiry — none of it by the code under test), and then
// speaks to MLflow with credentials of its own.
//
//   node gateway.mjs PORT
//
// GATEWAY_ISSUER         the IdP (its discovery document names the JWKS)
// GATEWAY_AUDIENCE       the `aud` a token must have
// GATEWAY_UPSTREAM       http://127.0.0.1:PORT of MLflow
// GATEWAY_UPSTREAM_AUTH  the Authorization sent to MLflow instead
//
// GET /gateway/stats answers {"accepted": n, "refused": n, "reasons": [...]}.
import http from 'node:http';
import { createRemoteJWKSet, jwtVerify } from 'jose';

const port = Number(process.argv[2]);
const issuer = process.env.GATEWAY_ISSUER;
const audience = process.env.GATEWAY_AUDIENCE;
const upstream = new URL(process.env.GATEWAY_UPSTREAM);
const upstreamAuth = process.env.GATEWAY_UPSTREAM_AUTH;

const discovery = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json();
const jwks = createRemoteJWKSet(new URL(discovery.jwks_uri));
const stats = { accepted: 0, refused: 0, reasons: [] };

function refuse(response, reason) {
  stats.refused += 1;
  stats.reasons.push(reason);
  response.writeHead(401, { 'Content-Type': 'application/json', 'WWW-Authenticate': 'Bearer' });
  response.end(JSON.stringify({ error_code: 'UNAUTHENTICATED', message: reason }));
}

http.createServer(async (request, response) => {
  if (request.url === '/gateway/stats') {
    response.writeHead(200, { 'Content-Type': 'application/json' });
    response.end(JSON.stringify(stats));
    return;
  }
  const match = /^Bearer ([A-Za-z0-9._~+/=-]+)$/.exec(request.headers.authorization || '');
  if (!match) {
    refuse(response, 'no bearer token');
    return;
  }
  try {
    await jwtVerify(match[1], jwks, { issuer, audience });
  } catch (error) {
    refuse(response, `${error.code || 'invalid'}: ${error.message}`);
    return;
  }
  stats.accepted += 1;
  const headers = { ...request.headers, host: upstream.host, authorization: upstreamAuth };
  const relay = http.request(
    { host: upstream.hostname, port: upstream.port, method: request.method, path: request.url, headers },
    (answer) => {
      response.writeHead(answer.statusCode, answer.headers);
      answer.pipe(response);
    },
  );
  relay.on('error', () => {
    response.writeHead(502);
    response.end();
  });
  request.pipe(relay);
}).listen(port, '127.0.0.1', () => {
  console.log(`gateway listening on http://127.0.0.1:${port}`);
});
