// Browser-test helpers for coffre: Debian's headless Chromium driven by
// playwright-core (no bundled browser download), accessibility via axe-core.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);
// axe source, injected into pages as an inline <script>.
const AXE_SOURCE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
const AXE_TAGS = ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'RGAAv4'];

const trunc = (s, n = 200) => (s && s.length > n ? s.slice(0, n) + '…' : s);

/** Headless Chromium (Debian package). --no-sandbox: we run as root. */
export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox'],
  });
}

/** Context for functional + axe checks. bypassCSP so axe's inline script
 *  can be injected despite the server's `default-src 'self'`. */
export function newContext(browser, { width = 1280, height = 800, locale = 'fr-FR' } = {}) {
  return browser.newContext({ viewport: { width, height }, locale, bypassCSP: true });
}

/** Run axe (WCAG 2.0/2.1 A+AA and RGAAv4 rules) on the current page;
 *  returns [{id, impact, help, nodes: [{target, html}]}] (empty = clean). */
export async function axeViolations(page) {
  if (!(await page.evaluate(() => typeof window.axe === 'object'))) {
    await page.addScriptTag({ content: AXE_SOURCE });
  }
  const violations = await page.evaluate(
    (tags) => window.axe.run(document, {
      runOnly: { type: 'tag', values: tags },
      resultTypes: ['violations'],
    }).then((r) => r.violations.map((v) => ({
      id: v.id, impact: v.impact, help: v.help,
      nodes: v.nodes.map((n) => ({ target: n.target, html: n.html })),
    }))),
    AXE_TAGS,
  );
  for (const v of violations) for (const n of v.nodes) n.html = trunc(n.html);
  return violations;
}

/** Cold load of `url` in a fresh context (empty cache, CSP enforced):
 *  counts every request the page caused and the bytes received (response
 *  headers + body as on the wire). Returns {requests, bytes, urls}.
 *  Playwright does not report requests made by the browser process itself
 *  (/favicon.ico), so a browser-level CDP Fetch interception also records
 *  responses for the page's frames and adds those Playwright missed.
 *  Gotcha: Chromium remembers a 404 favicon per browser process and origin,
 *  so only the first load of an origin in a browser shows it. Pass
 *  browser = null to measure in a throwaway browser (a true first visit).
 *  Don't navigate other pages of the same browser meanwhile. */
export async function measureLoad(browser, url, cookies = []) {
  const own = !browser;
  if (own) browser = await launch();
  const cdp = await browser.newBrowserCDPSession();
  const seen = []; // responses seen by CDP: {url, frameId, bytes}
  const pending = [];
  cdp.on('Fetch.requestPaused', (e) => pending.push((async () => {
    const head = `HTTP/1.1 ${e.responseStatusCode} ${e.responseStatusText || ''}\r\n`
      + (e.responseHeaders || []).map((h) => `${h.name}: ${h.value}\r\n`).join('') + '\r\n';
    let body = 0;
    try {
      const b = await cdp.send('Fetch.getResponseBody', { requestId: e.requestId });
      body = Buffer.byteLength(b.body, b.base64Encoded ? 'base64' : 'utf8');
    } catch { /* redirect or no body */ }
    seen.push({ url: e.request.url, frameId: e.frameId, bytes: head.length + body });
    await cdp.send('Fetch.continueRequest', { requestId: e.requestId }).catch(() => {});
  })()));
  await cdp.send('Fetch.enable', { patterns: [{ urlPattern: '*', requestStage: 'Response' }] });
  const context = await browser.newContext();
  try {
    if (cookies.length) await context.addCookies(cookies);
    const requests = [];
    context.on('request', (r) => requests.push(r));
    const page = await context.newPage();
    await page.goto(url, { waitUntil: 'load' });
    await page.waitForLoadState('networkidle');
    for (let n = -1; n !== pending.length;) { n = pending.length; await Promise.all(pending); }
    // Requests Playwright saw: exact sizes from the network stack.
    const urls = requests.map((r) => r.url());
    let bytes = 0;
    for (const req of requests) {
      const res = await req.response();
      if (!res) continue; // failed/aborted request: counted, no bytes
      const s = await req.sizes().catch(() => null);
      bytes += s && s.responseBodySize > 0 ? s.responseHeadersSize + s.responseBodySize
        : (s ? s.responseHeadersSize : 0) + (await res.body().catch(() => Buffer.alloc(0))).length;
    }
    // Plus CDP-seen responses of this page's frames that Playwright missed.
    const frames = new Set();
    const tree = (await (await context.newCDPSession(page)).send('Page.getFrameTree')).frameTree;
    (function walk(t) { frames.add(t.frame.id); (t.childFrames || []).forEach(walk); })(tree);
    const unmatched = [...urls];
    for (const s of seen.filter((x) => frames.has(x.frameId))) {
      const i = unmatched.indexOf(s.url);
      if (i >= 0) unmatched.splice(i, 1);
      else { urls.push(s.url); bytes += s.bytes; }
    }
    return { requests: urls.length, bytes, urls };
  } finally {
    await context.close();
    await cdp.send('Fetch.disable').catch(() => {});
    await cdp.detach().catch(() => {});
    if (own) await browser.close();
  }
}

/** WCAG 1.4.10: at `width` px (default 320) no horizontal scrolling. */
export async function assertReflow(page, width = 320) {
  await page.setViewportSize({ width, height: 800 });
  await page.reload({ waitUntil: 'load' });
  const { scrollWidth, clientWidth } = await page.evaluate(() => ({
    scrollWidth: document.documentElement.scrollWidth,
    clientWidth: document.documentElement.clientWidth,
  }));
  return { scrollWidth, clientWidth, ok: scrollWidth <= clientWidth };
}

/** Press Tab (at least once) until the focused element matches `selector`.
 *  Returns how many Tabs it took; throws naming the last focused element. */
export async function tabUntil(page, selector, maxTabs = 80) {
  let last = '';
  for (let i = 1; i <= maxTabs; i++) {
    await page.keyboard.press('Tab');
    const [hit, html] = await page.evaluate((sel) => {
      const el = document.activeElement;
      return [!!el && el.matches(sel), el ? el.outerHTML : '(none)'];
    }, selector);
    if (hit) return i;
    last = html;
  }
  throw new Error(`tabUntil: "${selector}" not reached after ${maxTabs} Tab presses; last focused: ${trunc(last)}`);
}

/** Enter on the focused element (buttons, links). */
export const activate = (page) => page.keyboard.press('Enter');
/** Space on the focused element (checkboxes, radios). */
export const pressSpace = (page) => page.keyboard.press('Space');

/** Full-page PNG. */
export const screenshot = (page, path) => page.screenshot({ path, fullPage: true });

/** Minimal assertion. */
export function check(cond, message) {
  if (!cond) throw new Error(message);
}

/** Failure collector: `await r.step(name, async () => {...})` runs a step,
 *  logs ok/FAIL and keeps going; `r.finish()` prints all failures and the
 *  closing line "N passed, N failed", then exits 1 if anything failed. */
export function report() {
  const failures = [];
  let passed = 0;
  return {
    async step(name, fn) {
      try {
        await fn();
        passed++;
        console.log(`ok   ${name}`);
      } catch (e) {
        failures.push({ name, message: e && e.message ? e.message : String(e) });
        console.log(`FAIL ${name}`);
      }
    },
    fail(name, message) {
      failures.push({ name, message });
      console.log(`FAIL ${name}`);
    },
    finish() {
      if (failures.length) {
        console.log('\nFailures:');
        for (const f of failures) console.log(`- ${f.name}\n  ${f.message.replace(/\n/g, '\n  ')}`);
      }
      console.log(`\n${passed} passed, ${failures.length} failed`);
      process.exit(failures.length ? 1 : 0);
    },
  };
}
