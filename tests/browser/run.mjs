// The web pages in a real browser (Debian's headless Chromium): axe-core
// (RGAA 4 and WCAG 2 AA) on every page, reflow at 320 px, at most 3
// requests and 30 KB per page as measured by the browser, and keyboard-only
// walks through the consent and mandate journeys.
//
// Run by `cargo test --test api browser` (tests/api/browser.rs), which
// starts a demo server and passes:
//   COFFRE_URL   the server's base URL
//   COFFRE_TOTP  a valid TOTP code of the demo aidants at the server's clock
//   COFFRE_SCREENSHOTS  (optional) a directory: save a PNG of each main page
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import {
  launch, newContext, axeViolations, measureLoad, assertReflow, tabUntil,
  activate, pressSpace, screenshot, check, report,
} from './lib.mjs';

const BASE = process.env.COFFRE_URL;
const TOTP = process.env.COFFRE_TOTP;
const SHOTS = process.env.COFFRE_SCREENSHOTS;
if (!BASE || !TOTP) {
  console.error('COFFRE_URL and COFFRE_TOTP are required');
  process.exit(2);
}
if (SHOTS) mkdirSync(SHOTS, { recursive: true });

const RESIDENT = '0b9a3c1e-5d6f-4a7b-8c9d-000000000001'; // Awa, who has a mandate
const RESIDENT_2 = '0b9a3c1e-5d6f-4a7b-8c9d-000000000002';
const RESIDENT_3 = '0b9a3c1e-5d6f-4a7b-8c9d-000000000003';
const AIDANT = 'a1d00000-0000-4000-8000-000000000001';
const REFERENT = 'a1d00000-0000-4000-8000-000000000003';
const DPO = 'a1d00000-0000-4000-8000-000000000004';
const MAX_REQUESTS = 3;
const MAX_BYTES = 30 * 1024;

const r = report();
const browser = await launch();

/** A context logged in as `persona` through the demo login form. */
async function session(persona) {
  const context = await newContext(browser);
  const page = await context.newPage();
  if (persona) {
    await page.goto(`${BASE}/`);
    await page.locator(`form[action="/dev/login"]:has(input[value="${persona}"]) button`).click();
    await page.waitForLoadState('load');
  }
  return { context, page };
}

/** Everything each page must satisfy. `name` is also the screenshot's. */
async function checkPage(who, page, path, name) {
  await r.step(`${who} ${path}: no axe violation (RGAA 4, WCAG 2 AA)`, async () => {
    const res = await page.goto(`${BASE}${path}`, { waitUntil: 'load' });
    check(res && res.headers()['content-type'].startsWith('text/html'), `not an HTML page: ${res && res.status()}`);
    const v = await axeViolations(page);
    check(v.length === 0, JSON.stringify(v, null, 2));
  });
  await r.step(`${who} ${path}: at most ${MAX_REQUESTS} requests and ${MAX_BYTES / 1024} KB`, async () => {
    const cookies = await page.context().cookies();
    const m = await measureLoad(browser, `${BASE}${path}`, cookies);
    check(m.requests <= MAX_REQUESTS, `${m.requests} requests: ${m.urls.join(', ')}`);
    check(m.bytes <= MAX_BYTES, `${m.bytes} bytes`);
    check(m.urls.every((u) => u.startsWith(BASE)), `a third-party request: ${m.urls.join(', ')}`);
  });
  await r.step(`${who} ${path}: reflows at 320 px without horizontal scrolling`, async () => {
    await page.goto(`${BASE}${path}`, { waitUntil: 'load' });
    const f = await assertReflow(page, 320);
    check(f.ok, `scrollWidth ${f.scrollWidth} > clientWidth ${f.clientWidth}`);
    await page.setViewportSize({ width: 1280, height: 800 });
  });
  if (SHOTS && name) {
    await page.goto(`${BASE}${path}`, { waitUntil: 'load' });
    await page.setViewportSize({ width: 1024, height: 768 });
    await screenshot(page, join(SHOTS, `${name}.png`));
    await page.setViewportSize({ width: 1280, height: 800 });
  }
}

/** JSON API call with the page's session (for setting up data). */
async function api(page, method, path, body) {
  const me = await (await page.request.get(`${BASE}/api/v1/me`)).json();
  const res = await page.request.fetch(`${BASE}${path}`, {
    method,
    headers: { 'content-type': 'application/json', 'x-csrf-token': me.csrf_token },
    data: body ? JSON.stringify(body) : undefined,
  });
  return res;
}

// ---------------------------------------------------------------- public
{
  const { context, page } = await session(null);
  for (const [path, name] of [
    ['/', 'accueil'], ['/registre', 'registre'], ['/journal', 'journal'], ['/statistiques', 'statistiques'],
    ['/accessibilite', 'accessibilite'], ['/mentions-legales', null], ['/moi', null],
  ]) await checkPage('public', page, path, name);
  await r.step('public: English is available and remembered', async () => {
    await page.goto(`${BASE}/registre`);
    await page.getByRole('link', { name: 'English' }).click();
    await page.waitForLoadState('load');
    check(new URL(page.url()).pathname === '/registre', `back on ${page.url()}`);
    check(await page.evaluate(() => document.documentElement.lang) === 'en', 'lang is not en');
    await page.goto(`${BASE}/`);
    check(await page.evaluate(() => document.documentElement.lang) === 'en', 'English not remembered');
    await checkPage('public (en)', page, '/', null);
    await page.getByRole('link', { name: 'Français' }).click();
    await page.waitForLoadState('load');
  });
  await context.close();
}

// ---------------------------------------------------------------- partner asks for an extract (for the DPO pages)
{
  const ctx = await browser.newContext();
  const token = await ctx.request.post(`${BASE}/oauth/token`, {
    headers: { authorization: 'Basic ' + Buffer.from('demo-labo-mobilite:demo-secret-labo-mobilite-not-for-production').toString('base64') },
    form: { grant_type: 'client_credentials' },
  });
  await r.step('setup: a partner requests an extract', async () => {
    check(token.ok(), `token: ${token.status()}`);
    const { access_token } = await token.json();
    const res = await ctx.request.post(`${BASE}/api/v1/partner/extracts`, {
      headers: { authorization: `Bearer ${access_token}`, 'content-type': 'application/json' },
      data: JSON.stringify({ purpose: 'etude-mobilite', kind: 'records', categories: ['housing'] }),
    });
    check(res.status() === 201 || res.status() === 200, `extract request: ${res.status()} ${await res.text()}`);
  });
  await ctx.close();
}

// ---------------------------------------------------------------- resident
{
  const { context, page } = await session(RESIDENT);
  await r.step('setup: the resident asks the DPO for something', async () => {
    const res = await api(page, 'POST', '/api/v1/me/requests', { kind: 'objection', purpose: 'renovation-energetique' });
    check(res.status() === 201, `rights request: ${res.status()} ${await res.text()}`);
  });
  for (const [path, name] of [
    ['/moi', 'resident-espace'], ['/moi/donnees', 'resident-donnees'],
    ['/moi/consentements', 'resident-consentements'], ['/moi/acces', 'resident-acces'],
    ['/moi/mandats', 'resident-mandats'], ['/moi/recus', 'resident-recus'],
    ['/moi/demandes', 'resident-demandes'], ['/moi/notifications', 'resident-notifications'],
    ['/moi/effacement', null],
  ]) await checkPage('resident', page, path, name);
  await page.goto(`${BASE}/moi/mandats`);
  const attestation = await page.locator('a[href$="/attestation"]').first().getAttribute('href');
  await checkPage('resident', page, attestation, 'attestation');

  await r.step('resident: correcting data with the keyboard only', async () => {
    await page.goto(`${BASE}/moi/donnees`);
    await tabUntil(page, 'section:has(#c-contact) summary');
    await activate(page);
    await tabUntil(page, '#contact-phone');
    await page.keyboard.press('Control+A');
    await page.keyboard.type('0561000000');
    await tabUntil(page, 'section:has(#c-contact) button');
    await Promise.all([page.waitForNavigation(), activate(page)]);
    check(await page.locator('[role=status]').count() === 1, 'no confirmation after saving');
  });
  await r.step('resident: an invalid value is refused with a clear message', async () => {
    await page.goto(`${BASE}/moi/donnees`);
    await page.locator('section:has(#c-contact) summary').click();
    // A value the browser lets through but the vault refuses.
    await page.fill('#contact-phone', 'pas un numéro');
    await Promise.all([page.waitForNavigation(), page.locator('section:has(#c-contact) button').click()]);
    check(await page.locator('[role=alert]').count() === 1, 'no error message');
    const v = await axeViolations(page);
    check(v.length === 0, JSON.stringify(v, null, 2));
  });
  await context.close();
}

// ---------------------------------------------------------------- consent journey, keyboard only
{
  const { context, page } = await session(RESIDENT_2);
  await r.step('consent: give with the keyboard only (nothing pre-ticked)', async () => {
    await page.goto(`${BASE}/moi/consentements`);
    const ticked = await page.locator('input[type=checkbox]:checked').count();
    check(ticked === 0, `${ticked} boxes ticked in advance`);
    await tabUntil(page, '#cat-agenda-culturel-culture');
    await pressSpace(page);
    await tabUntil(page, 'form:has(input[value="agenda-culturel"]) button[value="given"]');
    await Promise.all([page.waitForNavigation(), activate(page)]);
    check(await page.locator('[role=status]').count() === 1, 'no confirmation after giving');
    check(await page.locator('#f-agenda-culturel ~ p .state-given').count() === 1, 'consent not shown as given');
  });
  await r.step('consent: withdraw with the keyboard only, and learn how to give it again', async () => {
    await tabUntil(page, 'form[action$="/retrait"] button');
    await Promise.all([page.waitForNavigation(), activate(page)]);
    check(/^\/moi\/consentements\/[^/]+\/retire$/.test(new URL(page.url()).pathname), `on ${page.url()}`);
    const text = await page.locator('main').innerText();
    check(/redonner votre consentement/.test(text), 'no word on how to give it again');
    const v = await axeViolations(page);
    check(v.length === 0, JSON.stringify(v, null, 2));
  });
  await checkPage('resident', page, new URL(page.url()).pathname, 'resident-retrait');
  await r.step('consent: receipts to download', async () => {
    await page.goto(`${BASE}/moi/recus`);
    const links = await page.locator('a[href^="/moi/recus/"]').count();
    check(links >= 2, `${links} receipts`);
    const href = await page.locator('a[href^="/moi/recus/"]').first().getAttribute('href');
    const res = await page.request.get(`${BASE}${href}`);
    check(res.headers()['content-type'] === 'application/jose', res.headers()['content-type']);
    check((await res.text()).split('.').length === 3, 'not a compact JWS');
  });
  await context.close();
}

// ---------------------------------------------------------------- without JavaScript
{
  const context = await browser.newContext({ javaScriptEnabled: false });
  const page = await context.newPage();
  await r.step('no JavaScript: log in, give and withdraw a consent', async () => {
    await page.goto(`${BASE}/`);
    await page.locator(`form[action="/dev/login"]:has(input[value="${RESIDENT_3}"]) button`).click();
    await page.goto(`${BASE}/moi/consentements`);
    await page.locator('#cat-inventaire-arbres-patrimoine-environment').check();
    await page.locator('form:has(input[value="inventaire-arbres-patrimoine"]) button[value="given"]').click();
    check(await page.locator('#f-inventaire-arbres-patrimoine ~ p .state-given').count() === 1, 'not given');
    await page.locator('#f-inventaire-arbres-patrimoine ~ form[action$="/retrait"] button').click();
    check(/^\/moi\/consentements\/[^/]+\/retire$/.test(new URL(page.url()).pathname), `on ${page.url()}`);
  });
  await context.close();
}

// ---------------------------------------------------------------- a source's approval page, from logged out, keyboard only
{
  const { context, page } = await session(null);
  const back = 'https://energie-locale.example/coffre/retour';
  const approval = `/moi/sources/energie-locale/autoriser?state=browser-1&redirect_uri=${encodeURIComponent(back)}`;
  await r.step('source: logged out, the approval page asks for a login that comes back to it', async () => {
    await page.goto(`${BASE}${approval}`);
    await Promise.all([
      page.waitForNavigation(),
      page.locator(`form[action="/dev/login"]:has(input[value="${RESIDENT_2}"]) button`).click(),
    ]);
    const url = new URL(page.url());
    check(url.pathname === '/moi/sources/energie-locale/autoriser', `on ${page.url()}`);
    check(url.searchParams.get('state') === 'browser-1' && url.searchParams.get('redirect_uri') === back, `request lost: ${page.url()}`);
    check(await page.locator('#account strong').count() === 1, 'the account is not named');
  });
  await checkPage('resident', page, approval, 'source-autoriser');
  await r.step('source: approve with the keyboard only; a link back to the source carries the code', async () => {
    await page.goto(`${BASE}${approval}`);
    await tabUntil(page, 'form[action$="/autoriser"] button');
    await Promise.all([page.waitForNavigation(), activate(page)]);
    const href = await page.locator('#continue').getAttribute('href');
    const u = new URL(href);
    check(`${u.origin}${u.pathname}` === back, `back to ${href}`);
    check(u.searchParams.get('state') === 'browser-1' && (u.searchParams.get('code') || '').length > 0, `no code: ${href}`);
    const v = await axeViolations(page);
    check(v.length === 0, JSON.stringify(v, null, 2));
  });
  await checkPage('resident', page, '/moi/sources', 'resident-sources');
  await context.close();
}

// ---------------------------------------------------------------- aidant and the mandate journey, keyboard only
{
  const { context, page } = await session(AIDANT);
  for (const [path, name] of [['/aidant', 'aidant-usagers'], ['/aidant/mandats/nouveau', 'aidant-nouveau-mandat']]) {
    await checkPage('aidant', page, path, name);
  }
  let mandatePath = null;
  await r.step('mandate: démarches and duration with the keyboard only', async () => {
    await page.goto(`${BASE}/aidant/mandats/nouveau`);
    await tabUntil(page, '#d-social');
    await pressSpace(page);
    await tabUntil(page, 'input[name=duration_days]');
    await page.keyboard.press('ArrowDown'); // 1 day → 1 month, selected
    check(await page.locator('#t-31').isChecked(), '1 month not selected');
    await tabUntil(page, 'form[action="/aidant/mandats/nouveau"] button');
    await Promise.all([page.waitForNavigation(), activate(page)]);
    check(/\/aidant\/brouillons\//.test(page.url()), `on ${page.url()}`);
  });
  const draftPath = new URL(page.url()).pathname;
  await checkPage('aidant', page, draftPath, 'aidant-connexion-usager');
  await r.step('mandate: the resident logs in (demo login) with the keyboard only', async () => {
    await page.goto(`${BASE}${draftPath}`);
    await tabUntil(page, '#persona');
    await tabUntil(page, 'form[action="/dev/mandate-login"] button');
    await Promise.all([page.waitForNavigation(), activate(page)]);
    check(await page.locator('#resident_confirmed').count() === 1, 'no recap after the resident login');
  });
  await checkPage('aidant', page, draftPath, 'aidant-recapitulatif');
  await r.step('mandate: recap, agreement and TOTP with the keyboard only', async () => {
    await page.goto(`${BASE}${draftPath}`);
    await tabUntil(page, '#resident_confirmed');
    await pressSpace(page);
    await tabUntil(page, '#totp');
    await page.keyboard.type(TOTP);
    await tabUntil(page, 'form[action$="/confirmation"] button');
    await Promise.all([page.waitForNavigation(), activate(page)]);
    check(/\/aidant\/mandats\//.test(page.url()), `on ${page.url()}: ${await page.locator('main').innerText()}`);
    check(await page.locator('[role=status]').count() === 1, 'no confirmation');
    mandatePath = new URL(page.url()).pathname;
  });
  await r.step('mandate: printable attestation reached with the keyboard', async () => {
    await tabUntil(page, 'a[href$="/attestation"]');
    await Promise.all([page.waitForNavigation(), activate(page)]);
    check(/Attestation/.test(await page.locator('h1').innerText()), 'not the attestation');
  });
  if (mandatePath) {
    await checkPage('aidant', page, mandatePath, 'aidant-mandat');
    await page.goto(`${BASE}${mandatePath}`);
    const act = await page.locator('a[href*="/aidant/usagers/"]').first().getAttribute('href');
    await checkPage('aidant', page, act, 'aidant-demarche');
    await r.step('aidant: acting within a démarche saves for the resident', async () => {
      await page.goto(`${BASE}${act}`);
      await Promise.all([page.waitForNavigation(), page.locator('main form button').first().click()]);
      check(await page.locator('[role=status]').count() === 1, await page.locator('main').innerText());
    });
  }
  await context.close();
}

// ---------------------------------------------------------------- référent
{
  const { context, page } = await session(REFERENT);
  await checkPage('referent', page, '/referent/alertes', 'referent-alertes');
  await context.close();
}

// ---------------------------------------------------------------- DPO
{
  const { context, page } = await session(DPO);
  await checkPage('dpo', page, '/dpo', 'dpo');
  await checkPage('dpo', page, '/dpo/rapport?annee=2026', 'rapport-annuel');
  await checkPage('dpo', page, '/dpo/courriers', 'dpo-courriers');
  await r.step('dpo: approve an extract and close a request', async () => {
    await page.goto(`${BASE}/dpo`);
    await Promise.all([page.waitForNavigation(), page.locator('button[value="approve"]').first().click()]);
    check(await page.locator('[role=status]').count() === 1, await page.locator('main').innerText());
    await Promise.all([page.waitForNavigation(), page.locator('button[value="extend"]').first().click()]);
    check(await page.locator('[role=status]').count() === 1, await page.locator('main').innerText());
    const v = await axeViolations(page);
    check(v.length === 0, JSON.stringify(v, null, 2));
  });
  await context.close();
}

await browser.close();
r.finish();
