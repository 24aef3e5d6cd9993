// A real OpenID Provider for interop tests: oidc-provider on a loopback port, issuing RS256 JWT access
// tokens (RFC 9068, typ at+jwt) with the client-credentials grant and resource indicators (RFC 8707).
// The client secret comes from the environment (never an argument); the signing key is generated here.
// Prints one JSON line {"issuer", "jwks_uri", "token_endpoint"} when ready.
import { createServer } from 'node:http';
import { generateKeyPairSync } from 'node:crypto';
import Provider, { errors } from 'oidc-provider';

const secret = process.env.IDP_CLIENT_SECRET;
const api = process.env.IDP_API_RESOURCE;
const other = process.env.IDP_OTHER_RESOURCE;
if (!secret || !api || !other) {
  console.error('set IDP_CLIENT_SECRET, IDP_API_RESOURCE and IDP_OTHER_RESOURCE');
  process.exit(2);
}

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'interop-1', alg: 'RS256', use: 'sig' };

const server = createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const tenants = { 'acme-service': 'acme', 'globex-service': 'globex' };
  const provider = new Provider(issuer, {
    clients: Object.keys(tenants).map((client_id) => ({
      client_id,
      client_secret: secret,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      scope: 'models:read chat:write usage:read',
    })),
    jwks: { keys: [jwk] },
    scopes: ['models:read', 'chat:write', 'usage:read'],
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => undefined,
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resource) => {
          if (resource !== api && resource !== other) throw new errors.InvalidTarget();
          return {
            scope: 'models:read chat:write usage:read',
            audience: resource,
            accessTokenTTL: 600,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
    extraTokenClaims: (ctx, token) => ({ tenant_id: tenants[token.clientId] }),
  });
  server.on('request', provider.callback());
  console.log(JSON.stringify({ issuer, jwks_uri: `${issuer}/jwks`, token_endpoint: `${issuer}/token` }));
});
