// Signs in to the web console in headless Chromium with a tenant's own OpenID Provider (npm
// oidc-provider's login and consent pages), then reads the member's page. Run by
// tests/tests/it/console.rs; prints what the page showed as one JSON line.
// Env: BASE (the runtime), TENANT, LOGIN (`user@tenant`), CHROMIUM.
import { chromium } from 'playwright-core';

const { BASE, TENANT, LOGIN } = process.env;
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: ['--no-sandbox', '--disable-gpu'] });
const ctx = await browser.newContext({ viewport: { width: 1366, height: 768 } });
const page = await ctx.newPage();
await page.goto(`${BASE}/console`);
await page.fill('#tenant', TENANT);
await page.click('form.signin button[type=submit] >> nth=0');
// The provider's own pages: its login, then its consent.
await page.waitForSelector('input[name=login]');
const authorize = new URL(page.url());
await page.fill('input[name=login]', LOGIN);
await page.fill('input[name=password]', 'any');
await page.click('button[type=submit]');
await page.waitForSelector('button[type=submit]');
if (new URL(page.url()).origin !== new URL(BASE).origin) {
  await page.click('button[type=submit]');
}
await page.waitForURL((u) => u.href.startsWith(`${BASE}/console/`) && u.pathname !== '/console/callback', { timeout: 15000 }).catch(async () => {
  throw new Error(`no session: at ${page.url()}: ${await page.locator('body').innerText()}`);
});
const out = {
  provider_origin: authorize.origin,
  path: new URL(page.url()).pathname,
  who: await page.locator('#who').innerText(),
  own_total: await page.locator('#own-total').getAttribute('data-micro-usd'),
  models: await page.$$eval('#own-models tbody tr td:first-child', (t) => t.map((x) => x.textContent)),
};
await page.goto(`${BASE}/console/usage`);
out.range_total = await page.locator('#range-total').getAttribute('data-micro-usd');
await browser.close();
console.log(JSON.stringify(out));
