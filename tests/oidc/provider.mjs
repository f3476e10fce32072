// A real OpenID provider for coffre's login tests: `oidc-provider`, the
// software FranceConnect runs on, with a small configuration.
//
// It starts two issuers on loopback, as coffre sees them in production: one
// for residents (FranceConnect-like scopes and claims, acr eidas1) and one
// for agents (ProConnect-like, e-mail). It prints one JSON line on stdout,
// {"resident": "http://127.0.0.1:P1", "agent": "http://127.0.0.1:P2"}, and
// exits when its stdin closes (when the test process that started it ends).
//
// Test-only parts, outside the provider itself:
// - the login is scripted: `GET /interaction/{uid}?sub=alice` logs in the
//   account `alice` at once (no form), and consent is granted for the
//   static client, as a first-party client's would be;
// - the client's redirect URIs accept any loopback port (the coffre under
//   test listens on a port chosen at run time);
// - `POST /test/tamper?mode=M` makes the next token response carry a forged
//   ID token (alg none, another key, another issuer, another audience,
//   another nonce, already expired), so that coffre's verification is tested
//   against real signatures, not against a mock;
// - `POST /test/code-ttl?seconds=N` shortens the life of the next codes.

import http from 'node:http';
import { createInterface } from 'node:readline';
import Provider from 'oidc-provider';
import { SignJWT, decodeJwt, exportJWK, generateKeyPair } from 'jose';

const CLIENT_SECRET = 'test-secret-for-coffre-oidc-tests-only';

// FranceConnect's identity pivot, for a few test people.
const RESIDENTS = {
  alice: {
    given_name: 'Alice', family_name: 'Martin', birthdate: '1950-03-02',
    gender: 'female', birthplace: '16015', birthcountry: '99100',
    email: 'alice.martin@example.org',
  },
  bob: {
    given_name: 'Bob', family_name: 'Durand', birthdate: '1988-11-30',
    gender: 'male', birthplace: '75056', birthcountry: '99100',
    email: 'bob.durand@example.org',
  },
};

const AGENTS = {
  'claire': { given_name: 'Claire', family_name: 'Aidante', email: 'claire.aidante@ccas.example.org' },
  'denis': { given_name: 'Denis', family_name: 'Inconnu', email: 'denis@nowhere.example.org' },
};

async function signingKey(kid) {
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const jwk = await exportJWK(privateKey);
  return { ...jwk, kid, alg: 'RS256', use: 'sig' };
}

async function startIssuer({ name, scopes, people, clientId, acr }) {
  const server = http.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const jwk = await signingKey(`${name}-key-1`);
  const foreign = await signingKey(`${name}-key-1`); // same kid, another key
  const state = { tamper: null, codeTtl: 60 };

  const claims = { openid: ['sub'] };
  for (const scope of scopes) claims[scope] = [scope];
  claims.email = ['email', 'email_verified'];

  const provider = new Provider(issuer, {
    clients: [{
      client_id: clientId,
      client_secret: CLIENT_SECRET,
      redirect_uris: [`http://127.0.0.1/auth/${name === 'agent' ? 'agent/' : ''}callback`],
      post_logout_redirect_uris: ['http://127.0.0.1/'],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    }],
    jwks: { keys: [jwk] },
    claims,
    scopes: ['openid', ...scopes],
    acrValues: acr ? [acr] : [],
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: false },
      rpInitiatedLogout: {
        enabled: true,
        logoutSource: async (ctx, form) => {
          // Submit the logout confirmation at once (scripted test user).
          ctx.body = `<!DOCTYPE html><body>${form}<script>document.forms[0].submit()</script></body>`;
        },
      },
    },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    cookies: { keys: ['coffre-oidc-test-cookie-key'] },
    ttl: { AuthorizationCode: () => state.codeTtl },
    findAccount: async (ctx, sub) => {
      const person = people[sub];
      if (!person) return undefined;
      return { accountId: sub, claims: async () => ({ sub, email_verified: true, ...person }) };
    },
    loadExistingGrant: async (ctx) => {
      const existing = ctx.oidc.result?.consent?.grantId
        || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
      if (existing) return ctx.oidc.provider.Grant.find(existing);
      // The static client is first-party: consent is implied.
      const grant = new ctx.oidc.provider.Grant({
        clientId: ctx.oidc.client.clientId,
        accountId: ctx.oidc.session.accountId,
      });
      grant.addOIDCScope(['openid', ...scopes].join(' '));
      await grant.save();
      return grant;
    },
  });

  // Any loopback port for the registered paths (the test server's port is
  // only known at run time).
  const loopback = (uri) => {
    try {
      const u = new URL(uri);
      if (u.hostname !== '127.0.0.1') return undefined;
      u.port = '';
      return u.href;
    } catch { return undefined; }
  };
  provider.Client.prototype.redirectUriAllowed = function allowed(uri) {
    return this.redirectUris.includes(loopback(uri));
  };
  provider.Client.prototype.postLogoutRedirectUriAllowed = function allowed(uri) {
    return this.postLogoutRedirectUris.includes(loopback(uri));
  };

  provider.use(async (ctx, next) => {
    if (ctx.method === 'POST' && ctx.path === '/test/tamper') {
      state.tamper = ctx.query.mode;
      ctx.status = 204;
      return;
    }
    if (ctx.method === 'POST' && ctx.path === '/test/code-ttl') {
      state.codeTtl = Number(ctx.query.seconds);
      ctx.status = 204;
      return;
    }
    if (ctx.method === 'GET' && ctx.path.startsWith('/interaction/')) {
      const details = await provider.interactionDetails(ctx.req, ctx.res);
      if (details.prompt.name === 'login') {
        const sub = ctx.query.sub || 'alice';
        await provider.interactionFinished(ctx.req, ctx.res, {
          login: { accountId: sub, ...(acr ? { acr } : {}) },
        }, { mergeWithLastSubmission: false });
      } else {
        await provider.interactionFinished(ctx.req, ctx.res, {
          consent: {},
        }, { mergeWithLastSubmission: true });
      }
      ctx.respond = false;
      return;
    }
    await next();
    if (ctx.path === '/token' && state.tamper && ctx.body && ctx.body.id_token) {
      const mode = state.tamper;
      state.tamper = null;
      ctx.body = { ...ctx.body, id_token: await forge(mode, ctx.body.id_token, { issuer, jwk, foreign, clientId }) };
    }
  });

  server.on('request', provider.callback());
  return issuer;
}

async function forge(mode, idToken, { issuer, jwk, foreign, clientId }) {
  const claims = decodeJwt(idToken);
  const now = Math.floor(Date.now() / 1000);
  const sign = async (payload, key) => {
    const { importJWK } = await import('jose');
    return new SignJWT(payload)
      .setProtectedHeader({ alg: 'RS256', kid: key.kid })
      .sign(await importJWK(key, 'RS256'));
  };
  switch (mode) {
    case 'alg-none': {
      const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
      return `${b64({ alg: 'none', typ: 'JWT' })}.${b64(claims)}.`;
    }
    case 'foreign-key': return sign(claims, foreign);
    case 'unknown-kid': return sign(claims, { ...foreign, kid: 'nobody-knows-this-key' });
    case 'wrong-issuer': return sign({ ...claims, iss: 'http://127.0.0.1:1/evil' }, jwk);
    case 'wrong-audience': return sign({ ...claims, aud: 'another-client' }, jwk);
    case 'wrong-nonce': return sign({ ...claims, nonce: 'not-the-nonce-coffre-sent' }, jwk);
    case 'expired': return sign({ ...claims, iat: now - 7200, exp: now - 3600 }, jwk);
    case 'resigned': return sign(claims, jwk); // control: a faithful re-signature
    default: throw new Error(`unknown tamper mode ${mode} (client ${clientId})`);
  }
}

const resident = await startIssuer({
  name: 'resident',
  scopes: ['given_name', 'family_name', 'birthdate', 'gender', 'birthplace', 'birthcountry', 'email'],
  people: RESIDENTS,
  clientId: 'coffre-resident',
  acr: 'eidas1',
});
const agent = await startIssuer({
  name: 'agent',
  scopes: ['given_name', 'family_name', 'email'],
  people: AGENTS,
  clientId: 'coffre-agent',
  acr: null,
});

process.stdout.write(`${JSON.stringify({ resident, agent, secret: CLIENT_SECRET })}\n`);

// Stop with the test process that started us.
createInterface({ input: process.stdin }).on('close', () => process.exit(0));
