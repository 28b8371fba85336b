// A real OpenID provider for the sign-in test: npm's `oidc-provider` (the certified implementation) on loopback,
// with one confidential client (PKCE required) and test accounts whose claims the dashboard maps to tenants.
// Its development login and consent pages accept any password.
//
//   node provider.mjs PORT REDIRECT_URI CLIENT_SECRET
import Provider from 'oidc-provider';

const [port, redirect, secret] = process.argv.slice(2);
const accounts = {
  ann: { sub: 'ann', name: 'Ann Lee', email: 'ann.lee@stoke.example.nhs.uk', email_verified: true, groups: ['pulse-stoke-analysts'] },
  rae: { sub: 'rae', name: 'Rae Khan', email: 'rae.khan@region.example.nhs.uk', email_verified: true, groups: ['pulse-region-leads'] },
  bob: { sub: 'bob', name: 'Bob Nobody', email: 'bob@elsewhere.example.org', email_verified: true, groups: ['staff'] },
};
const provider = new Provider(`http://127.0.0.1:${port}`, {
  clients: [{
    client_id: 'pulse-dashboard',
    client_secret: secret,
    redirect_uris: [redirect],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  pkce: { required: () => true },
  scopes: ['openid', 'email', 'profile', 'groups'],
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'], groups: ['groups'] },
  // The claims in the ID token itself (the dashboard reads no userinfo).
  conformIdTokenClaims: false,
  findAccount: async (ctx, id) => accounts[id] && { accountId: id, claims: async () => accounts[id] },
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ['pulse-oidc-test-cookie-key'] },
});
provider.listen(Number(port), '127.0.0.1', () => console.log(`oidc-provider listening on ${port}`));
