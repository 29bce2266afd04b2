// A test "EHR" for the SMART app's browser tests: a real OAuth2 authorization server
// (oauth2-mock-server, auth code + PKCE S256, signed id_tokens with nonce) plus, under /fhir, the SMART
// discovery document and a pass-through proxy to a real FHIR server (sekmet).
//
// Launch contexts: the EHR-launch `launch` parameter is base64url(JSON) with
//   patient, need_patient_banner, appContext, deny (consent refused), bad_state (state tampered),
//   revoked (access token the FHIR server rejects), expires_in, refresh (offer a refresh token).
//
// Env: EHR_PORT, FHIR_UPSTREAM (e.g. http://127.0.0.1:8090/fhir), FHIR_TOKEN (static bearer token the
// FHIR server accepts). Prints "EHR READY <base>" when listening.
import http from 'node:http';
// oauth2-mock-server lives in tests/smart/node/node_modules (installed by tests/smart/setup.sh)
const { Events, OAuth2Issuer, OAuth2Service } = await import(
  new URL('./node/node_modules/oauth2-mock-server/dist/index.mjs', import.meta.url).href);

const port = Number(process.env.EHR_PORT);
const upstream = new URL(process.env.FHIR_UPSTREAM);
const fhirToken = process.env.FHIR_TOKEN;
const base = `http://127.0.0.1:${port}`;

const issuer = new OAuth2Issuer();
issuer.url = base;
await issuer.keys.generate('RS256');
const service = new OAuth2Service(issuer);

const byCode = new Map();     // authorization code -> {ctx, scope}
const byRefresh = new Map();  // refresh token -> {ctx, scope}

function parseLaunch(value) {
  if (!value) return {};
  try { return JSON.parse(Buffer.from(value, 'base64url').toString('utf8')); } catch { return { patient: value }; }
}

service.on(Events.BeforeAuthorizeRedirect, (redirect, req) => {
  const q = new URL(req.url, base).searchParams;
  const ctx = parseLaunch(q.get('launch'));
  ctx.patient = ctx.patient || process.env.DEFAULT_PATIENT;  // standalone launch: the "picked" patient
  const url = redirect.url;
  if (ctx.deny) {
    url.searchParams.delete('code');
    url.searchParams.set('error', 'access_denied');
    url.searchParams.set('error_description', 'The user declined');
  } else {
    byCode.set(url.searchParams.get('code'), { ctx, scope: q.get('scope') || '' });
  }
  if (ctx.bad_state) url.searchParams.set('state', 'tampered-' + (url.searchParams.get('state') || ''));
});

service.on(Events.BeforeTokenSigning, (token) => {
  token.payload.fhirUser = 'Practitioner/pgx-dr-1';
});

service.on(Events.BeforeResponse, (resp, req) => {
  const body = req.body || {};
  let entry;
  if (body.grant_type === 'authorization_code') {
    entry = byCode.get(body.code);
    byCode.delete(body.code);
  } else if (body.grant_type === 'refresh_token') {
    entry = byRefresh.get(body.refresh_token);
    byRefresh.delete(body.refresh_token);
  }
  if (!entry) {
    resp.statusCode = 400;
    resp.body = { error: 'invalid_grant' };
    return;
  }
  const { ctx, scope } = entry;
  const out = resp.body;
  out.access_token = ctx.revoked ? 'revoked-' + Math.random().toString(36).slice(2) : fhirToken;
  out.token_type = 'Bearer';
  out.expires_in = body.grant_type === 'refresh_token' ? 3600 : (ctx.expires_in ?? 3600);
  out.scope = scope;
  out.patient = ctx.patient;
  out.need_patient_banner = ctx.need_patient_banner ?? true;
  if (ctx.appContext) out.appContext = typeof ctx.appContext === 'string' ? ctx.appContext : JSON.stringify(ctx.appContext);
  if (body.grant_type === 'authorization_code' && !ctx.refresh) {
    delete out.refresh_token;
  } else {
    out.refresh_token = 'rt-' + Math.random().toString(36).slice(2);
    byRefresh.set(out.refresh_token, { ctx: { ...ctx, revoked: false }, scope });
  }
  if (body.grant_type === 'refresh_token') delete out.id_token;
});

function smartConfiguration() {
  return {
    issuer: base,
    jwks_uri: `${base}/jwks`,
    authorization_endpoint: `${base}/authorize`,
    token_endpoint: `${base}/token`,
    grant_types_supported: ['authorization_code', 'refresh_token'],
    code_challenge_methods_supported: ['S256'],
    token_endpoint_auth_methods_supported: ['none', 'client_secret_basic'],
    scopes_supported: ['openid', 'fhirUser', 'launch', 'launch/patient', 'online_access', 'patient/*.rs', 'patient/*.read'],
    response_types_supported: ['code'],
    capabilities: ['launch-ehr', 'launch-standalone', 'client-public', 'client-confidential-symmetric',
      'context-ehr-patient', 'context-standalone-patient', 'context-banner', 'sso-openid-connect',
      'permission-v1', 'permission-v2', 'permission-patient', 'permission-offline'],
  };
}

function proxy(req, res, suffix) {
  const target = new URL(upstream.pathname.replace(/\/$/, '') + suffix, upstream);
  const headers = { ...req.headers, host: target.host };
  const up = http.request(target, { method: req.method, headers }, (ur) => {
    res.writeHead(ur.statusCode, ur.headers);
    ur.pipe(res);
  });
  up.on('error', () => { res.writeHead(502); res.end(); });
  req.pipe(up);
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, base);
  if (url.pathname === '/fhir/.well-known/smart-configuration') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(smartConfiguration()));
    return;
  }
  if (url.pathname === '/fhir' || url.pathname.startsWith('/fhir/')) {
    proxy(req, res, url.pathname.slice('/fhir'.length) + url.search);
    return;
  }
  service.requestHandler(req, res);
});

server.listen(port, '127.0.0.1', () => console.log(`EHR READY ${base}`));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
