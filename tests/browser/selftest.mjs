// Self-test of lib.mjs: serves a tiny accessible French page (and a
// deliberately broken one) under a strict CSP and runs every helper on it.
// Usage: node tests/browser/selftest.mjs   (exit 0 = harness works)
import http from 'node:http';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  launch, newContext, axeViolations, measureLoad, assertReflow,
  tabUntil, activate, pressSpace, screenshot, check, report,
} from './lib.mjs';

const page = (title, body) => `<!doctype html>
<html lang="fr"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title}</title><link rel="stylesheet" href="/s.css"></head>
<body><main>${body}</main></body></html>`;

const GOOD = page('Coffre — test', `<h1>Paramètres du coffre</h1>
<p>Page de test du harnais navigateur.</p>
<form method="post" action="/envoi">
  <p><input type="checkbox" id="c" name="c"> <label for="c">Activer la sauvegarde</label></p>
  <p><button type="submit">Enregistrer</button></p>
</form>`);
const BAD = page('Coffre — mauvaise page', `<h1>Mauvaise page</h1>
<img src="/s.css" width="10" height="10"><input type="text" name="x">`);
const DONE = page('Coffre — enregistré', '<h1>Enregistré</h1>');
const CSS = 'body{font:16px/1.5 sans-serif;margin:0 auto;max-width:40rem;padding:1rem}';

// Server-side request log: ground truth, includes browser-initiated
// requests (e.g. /favicon.ico) that Playwright does not report.
const hits = [];
const server = http.createServer((req, res) => {
  hits.push(req.url);
  const send = (status, type, body) => {
    res.writeHead(status, {
      'Content-Type': type,
      'Content-Security-Policy': "default-src 'self'",
    });
    res.end(body);
  };
  if (req.url === '/') send(200, 'text/html; charset=utf-8', GOOD);
  else if (req.url === '/mauvais') send(200, 'text/html; charset=utf-8', BAD);
  else if (req.url === '/envoi' && req.method === 'POST') send(200, 'text/html; charset=utf-8', DONE);
  else if (req.url === '/s.css') send(200, 'text/css', CSS);
  else send(404, 'text/plain', 'introuvable');
});
await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
const base = `http://127.0.0.1:${server.address().port}`;
console.log(`selftest server on ${base}`);

const r = report();
const browser = await launch();
console.log(`chromium ${browser.version()}`);
try {
  // Headless Chromium fetches /favicon.ico by itself (here a 404): the
  // page costs 3 requests, and measureLoad must count the same as the server.
  for (const [label, b] of [['shared browser', browser], ['throwaway browser', null]]) {
    await r.step(`cold load (${label}): counts match server, ≤ 3 requests, ≤ 30 KB`, async () => {
      hits.length = 0;
      const m = await measureLoad(b, `${base}/`, [{ name: 'sid', value: 'x', url: base }]);
      const paths = m.urls.map((u) => new URL(u).pathname);
      console.log(`     measured ${m.requests} requests, ${m.bytes} B: ${paths.join(' ')}`);
      console.log(`     server saw ${hits.length}: ${hits.join(' ')}`);
      check(paths.includes('/') && paths.includes('/s.css'), `page or stylesheet missing: ${paths}`);
      check(m.requests === hits.length, `measured ${m.requests} but server saw ${hits.length}`);
      check(m.requests <= 3, `too many requests: ${m.requests}`);
      check(m.bytes > 0 && m.bytes <= 30 * 1024, `bytes out of budget: ${m.bytes}`);
    });
  }

  const ctx = await newContext(browser);
  const p = await ctx.newPage();
  await p.goto(`${base}/`);

  await r.step('good page: zero axe violations', async () => {
    const v = await axeViolations(p);
    check(v.length === 0, `axe violations:\n${JSON.stringify(v, null, 2)}`);
  });

  await r.step('CSP header enforced (inline script blocked without bypass)', async () => {
    const strict = await browser.newContext();
    const sp = await strict.newPage();
    await sp.goto(`${base}/`);
    const blocked = await sp.addScriptTag({ content: 'window.__x = 1' }).then(() => false, () => true);
    await strict.close();
    check(blocked, 'inline script ran despite CSP: header not applied?');
  });

  await r.step('keyboard: Tab reaches checkbox, Space checks it, Tab reaches button, Enter submits', async () => {
    await tabUntil(p, 'input[type=checkbox]#c');
    await pressSpace(p);
    check(await p.isChecked('#c'), 'checkbox not checked by Space');
    await tabUntil(p, 'button[type=submit]');
    await Promise.all([p.waitForURL(`${base}/envoi`), activate(p)]);
    check((await p.textContent('h1')) === 'Enregistré', 'form not submitted by Enter');
    await p.goBack();
  });

  await r.step('tabUntil fails clearly on an unreachable selector', async () => {
    const err = await tabUntil(p, '#nulle-part', 5).then(() => null, (e) => e);
    check(err && /#nulle-part/.test(err.message) && /last focused/.test(err.message),
      `unexpected: ${err && err.message}`);
  });

  await r.step('reflow at 320 px', async () => {
    const rf = await assertReflow(p, 320);
    check(rf.ok, `horizontal scroll: scrollWidth ${rf.scrollWidth} > clientWidth ${rf.clientWidth}`);
  });

  await r.step('full-page screenshot', async () => {
    const out = join(mkdtempSync(join(tmpdir(), 'coffre-shot-')), 'selftest.png');
    await screenshot(p, out);
    console.log(`     ${out}`);
  });

  await r.step('bad page: axe reports image-alt and label', async () => {
    await p.goto(`${base}/mauvais`);
    const ids = (await axeViolations(p)).map((v) => v.id);
    console.log(`     violations: ${ids.join(', ')}`);
    check(ids.includes('image-alt'), `image-alt missing from ${ids}`);
    check(ids.includes('label'), `label missing from ${ids}`);
  });
  await ctx.close();
} finally {
  await browser.close();
  server.close();
}
r.finish();
