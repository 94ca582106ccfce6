// A real OpenID provider for the OAuth2 tests: panva's oidc-provider on
// 127.0.0.1 only, the client-credentials grant on, the clients given as JSON.
//
//   node server.mjs PORT
//
// OIDC_CLIENTS   JSON list of clients: {client_id, client_secret,
//                token_endpoint_auth_method, scope}; each may use the
//                client_credentials grant only. A client `inspector`
//                (secret `inspector-secret`) is always there to ask the
//                introspection endpoint whether a token is active.
// OIDC_TOKEN_TTL access token lifetime in seconds (default 600).
import http from 'node:http';
import Provider from 'oidc-provider';

const port = Number(process.argv[2]);
const issuer = `http://127.0.0.1:${port}`;
const ttl = Number(process.env.OIDC_TOKEN_TTL || 600);
const clients = [
  ...JSON.parse(process.env.OIDC_CLIENTS || '[]'),
  { client_id: 'inspector', client_secret: 'inspector-secret' },
].map((client) => ({
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
  ...client,
}));

const provider = new Provider(issuer, {
  clients,
  scopes: ['mlflow', 'admin'],
  features: {
    clientCredentials: { enabled: true },
    devInteractions: { enabled: false },
    introspection: { enabled: true },
    // A `resource` asked for gets a JWT access token for that audience.
    resourceIndicators: {
      enabled: true,
      defaultResource: () => undefined,
      getResourceServerInfo: (ctx, resource) => ({
        scope: 'mlflow',
        audience: resource,
        accessTokenTTL: ttl,
        accessTokenFormat: 'jwt',
      }),
    },
  },
  ttl: { ClientCredentials: ttl },
});
// Plain http on loopback: the tests' IdP has no certificate.
provider.proxy = false;

http.createServer(provider.callback()).listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${issuer}`);
});
