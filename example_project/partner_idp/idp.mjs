// An OpenID provider this project did not write (panva's oidc-provider): the partner's, in the
// example project (`make partner-idp`, `python -m example_project.partner_idp`) and in the tests.
// Both start it through example_project/partner_idp/__init__.py, sign users in without a browser,
// and present the ID tokens and RFC 9068 JWT access tokens it issues to our token endpoint.
//
// Configured by the environment:
//   PORT              port on 127.0.0.1 (0: any free one); the issuer is http://127.0.0.1:PORT
//   JWKS_FILE         JSON {"keys": [...]} of private JWKs; the FIRST signs, all are published
//   CLIENTS_FILE      JSON [client metadata, ...] (optional; default: the confidential partner-app)
//   ID_TOKEN_TTL      seconds (default 600)
//   ACCESS_TOKEN_TTL  seconds (default 600), for user and client_credentials access tokens
//   EXTRA_CLAIMS      comma-separated claim names put in the ID token with the openid scope
//                     (default "tid,hd"); email, email_verified and the profile claims come with
//                     their scopes
//
// Sign-in: the authorization request's login_hint is base64url JSON {"sub": ..., <claims>...,
// "access_token_claims": {...}}. The interaction signs that account in and consents to whatever
// was requested, answering with redirects only. Prints "READY <issuer>" once listening.

import * as crypto from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as http from 'node:http';

import Provider from 'oidc-provider';

const env = (name, fallback) => process.env[name] ?? fallback;
const seconds = (name, fallback) => {
  const value = Number.parseInt(env(name, String(fallback)), 10);
  if (!Number.isSafeInteger(value) || value <= 0) throw new Error(`${name} must be a positive integer`);
  return value;
};

const ID_TOKEN_TTL = seconds('ID_TOKEN_TTL', 600);
const ACCESS_TOKEN_TTL = seconds('ACCESS_TOKEN_TTL', 600);
const PORT = Number.parseInt(env('PORT', '0'), 10);
if (!Number.isSafeInteger(PORT) || PORT < 0 || PORT > 65535) throw new Error('PORT must be 0..65535');
const EXTRA_CLAIMS = env('EXTRA_CLAIMS', 'tid,hd').split(',').map((name) => name.trim()).filter(Boolean);

function signingAlg(jwk) {
  if (jwk.kty === 'RSA') return 'RS256';
  if (jwk.kty === 'EC' && jwk.crv === 'P-256') return 'ES256';
  throw new Error(`unsupported signing key (kty ${jwk.kty}, crv ${jwk.crv})`);
}

// Every key gets the same use and an alg, so that the provider's key selection (stable, by score)
// picks the first key of the signing algorithm: the first key of the file.
const jwksFile = env('JWKS_FILE');
if (!jwksFile) throw new Error('JWKS_FILE is required');
const keys = JSON.parse(readFileSync(jwksFile, 'utf8')).keys.map((jwk) => ({
  ...jwk, use: 'sig', alg: jwk.alg ?? signingAlg(jwk),
}));
if (!keys.length) throw new Error('JWKS_FILE has no keys');
const ALG = keys[0].alg;
const SIGNING_KID = keys[0].kid;

const clients = env('CLIENTS_FILE')
  ? JSON.parse(readFileSync(env('CLIENTS_FILE'), 'utf8'))
  : [{
    client_id: 'partner-app',
    client_secret: 'partner-app-secret',
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
    response_types: ['code'],
    redirect_uris: ['http://127.0.0.1/callback'],
  }];

// Who signed in, with the claims the harness gave: findAccount answers for any id.
const accounts = new Map();

function decodeHint(value) {
  if (!value) throw new Error('login_hint is required: base64url JSON with at least "sub"');
  const hint = JSON.parse(Buffer.from(value, 'base64url').toString('utf8'));
  if (typeof hint.sub !== 'string' || !hint.sub) throw new Error('login_hint has no "sub"');
  return hint;
}

const configuration = {
  clients: clients.map((client) => ({ id_token_signed_response_alg: ALG, ...client })),
  jwks: { keys },
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  scopes: ['openid', 'email', 'profile', 'offline_access'],
  claims: {
    openid: ['sub', ...EXTRA_CLAIMS],
    email: ['email', 'email_verified'],
    profile: ['name', 'given_name', 'family_name', 'preferred_username', 'picture', 'locale', 'updated_at'],
  },
  // The claims of the requested scopes go in the ID token itself, not only at userinfo.
  conformIdTokenClaims: false,
  async findAccount(ctx, id) {
    const { access_token_claims: ignored, ...claims } = accounts.get(id) ?? {};
    return {
      accountId: id,
      async claims() {
        return { ...claims, sub: id };
      },
    };
  },
  async extraTokenClaims(ctx, token) {
    if (!token.accountId) return undefined;
    return accounts.get(token.accountId)?.access_token_claims;
  },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      async defaultResource(ctx, client, oneOf) {
        return oneOf ?? ctx.oidc.params?.resource ?? undefined;
      },
      async useGrantedResource() {
        return true;
      },
      async getResourceServerInfo(ctx, resourceIndicator) {
        return {
          scope: 'api read write',
          audience: resourceIndicator,
          accessTokenTTL: ACCESS_TOKEN_TTL,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: ALG, kid: SIGNING_KID } },
        };
      },
    },
  },
  // Every client allowed the refresh_token grant gets a refresh token, offline_access or not.
  async issueRefreshToken(ctx, client) {
    return client.grantTypeAllowed('refresh_token');
  },
  pkce: { required: () => true },
  ttl: {
    IdToken: ID_TOKEN_TTL,
    AccessToken: ACCESS_TOKEN_TTL,
    ClientCredentials: ACCESS_TOKEN_TTL,
    AuthorizationCode: 60,
    Interaction: 600,
    Session: 3600,
    Grant: 3600,
    RefreshToken: 3600,
  },
  async renderError(ctx, out) {
    ctx.type = 'json';
    ctx.body = out;
  },
};

// The interaction: login with the account of login_hint, then consent to everything requested.
async function interaction(provider, req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session } = details;
  if (prompt.name === 'login') {
    const hint = decodeHint(params.login_hint);
    accounts.set(hint.sub, hint);
    await provider.interactionFinished(req, res, { login: { accountId: hint.sub } }, {
      mergeWithLastSubmission: false,
    });
    return;
  }
  if (prompt.name === 'consent') {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const missing = prompt.details;
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    for (const [resource, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
      grant.addResourceScope(resource, scopes.join(' '));
    }
    const grantId = await grant.save();
    await provider.interactionFinished(req, res, { consent: details.grantId ? {} : { grantId } }, {
      mergeWithLastSubmission: true,
    });
    return;
  }
  throw new Error(`unexpected prompt ${prompt.name}`);
}

let handler = (req, res) => {
  res.statusCode = 503;
  res.end();
};
const server = http.createServer((req, res) => handler(req, res));

server.listen(PORT, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, configuration);
  const callback = provider.callback();
  handler = (req, res) => {
    if (!req.url.startsWith('/interaction/')) {
      callback(req, res);
      return;
    }
    interaction(provider, req, res).catch((error) => {
      console.error('interaction failed:', error);
      if (!res.headersSent) {
        res.statusCode = 400;
        res.setHeader('content-type', 'application/json');
      }
      res.end(JSON.stringify({ error: 'interaction_failed', error_description: String(error) }));
    });
  };
  provider.on('server_error', (ctx, error) => console.error('server_error:', error));
  process.stdout.write(`READY ${issuer}\n`);
});

function stop() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
