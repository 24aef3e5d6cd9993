// A real OpenID Provider as a tenant's own issuer for the web console: oidc-provider on a loopback
// port with one public client (PKCE, no secret) whose redirect URI is the console's callback, its
// development login and consent pages, resource indicators (RFC 8707) for the API's audience, and
// RS256 JWT access tokens (RFC 9068, typ at+jwt) carrying the tenant of the login (`user@tenant`).
// Env: IDP_API_RESOURCE, IDP_REDIRECT_URI. Prints one JSON line {"issuer", "jwks_uri",
// "authorization_endpoint", "token_endpoint"} when ready.
import { createServer } from 'node:http';
import { generateKeyPairSync } from 'node:crypto';
import Provider, { errors } from 'oidc-provider';

const api = process.env.IDP_API_RESOURCE;
const redirect = process.env.IDP_REDIRECT_URI;
if (!api || !redirect) {
  console.error('set IDP_API_RESOURCE and IDP_REDIRECT_URI');
  process.exit(2);
}
const scopes = ['me:read', 'models:read', 'usage:read'];
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'console-1', alg: 'RS256', use: 'sig' };

const server = createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: 'tenantctl-console',
      token_endpoint_auth_method: 'none',
      redirect_uris: [redirect],
      grant_types: ['authorization_code'],
      response_types: ['code'],
    }],
    jwks: { keys: [jwk] },
    scopes: ['openid', ...scopes],
    features: {
      devInteractions: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => api,
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resource) => {
          if (resource !== api) throw new errors.InvalidTarget();
          return {
            scope: scopes.join(' '),
            audience: api,
            accessTokenTTL: 600,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
    extraTokenClaims: (ctx, token) => ({ tenant_id: String(token.accountId || '').split('@')[1] }),
  });
  server.on('request', provider.callback());
  console.log(JSON.stringify({
    issuer,
    jwks_uri: `${issuer}/jwks`,
    authorization_endpoint: `${issuer}/auth`,
    token_endpoint: `${issuer}/token`,
  }));
});
