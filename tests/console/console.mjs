// Drives headless Chromium through the web console as each role and reports what the pages show.
// Run by tests/tests/it/console.rs, which compares the figures with the API's and checks the report.
// Env: BASE (the runtime), IDP (the dev identity provider), ARTIFACTS (screenshots go there),
// CHROMIUM (the browser binary; default /usr/bin/chromium). Every check that fails throws, naming it.
import { chromium } from 'playwright-core';
import { mkdirSync, writeFileSync } from 'node:fs';

const BASE = process.env.BASE;
const IDP = process.env.IDP;
const ARTIFACTS = process.env.ARTIFACTS;
const CREDENTIAL = process.env.CREDENTIAL_VALUE;
mkdirSync(ARTIFACTS, { recursive: true });

function check(ok, what) {
  if (!ok) throw new Error(`console check failed: ${what}`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu'],
});
const report = {};

async function signIn(tenant, subject, role) {
  // A laptop screen.
  const ctx = await browser.newContext({ viewport: { width: 1366, height: 768 } });
  const page = await ctx.newPage();
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  await page.goto(`${BASE}/console`);
  check(await page.locator('label[for=tenant]').count() === 1, 'the sign-in page labels its tenant field');
  if (tenant) {
    await page.fill('#tenant', tenant);
    await page.click('form.signin button[type=submit] >> nth=0');
  } else {
    await page.click('#staff');
  }
  await page.waitForURL(`${IDP}/authorize**`);
  const authorize = new URL(page.url());
  check(authorize.searchParams.get('code_challenge_method') === 'S256', 'the console asks for S256');
  check(authorize.searchParams.get('code_challenge')?.length === 43, 'the console sends a challenge');
  check(!!authorize.searchParams.get('nonce') && !!authorize.searchParams.get('state'), 'state and nonce');
  await page.fill('#subject', subject);
  await page.selectOption('#role', role);
  await page.click('#sign-in');
  try {
    await page.waitForURL((u) => u.pathname !== '/console/callback' && u.href.startsWith(`${BASE}/console/`), { timeout: 10000 });
  } catch (e) {
    throw new Error(`sign-in as ${subject} (${role}) did not reach the console: at ${page.url()}: ${await page.locator('body').innerText()}`);
  }
  const cookies = await ctx.cookies();
  const session = cookies.find((c) => c.name === 'tenantctl_console');
  check(session, 'a session cookie is set');
  check(session.httpOnly, 'the session cookie is HttpOnly');
  check(session.sameSite === 'Strict', `the session cookie is SameSite=Strict (${session.sameSite})`);
  check(session.path === '/console', 'the session cookie is scoped to /console');
  check(!session.secure, 'on loopback http the cookie cannot be Secure (it is off loopback)');
  check(!/^eyJ/.test(session.value) && !session.value.includes('.'), 'the cookie holds no readable token');
  check(await page.evaluate(() => document.cookie) === '', 'scripts cannot read the session cookie');
  check(!cookies.some((c) => c.name === 'tenantctl_console_signin' && c.value), 'the sign-in cookie is cleared');
  return { ctx, page, errors };
}

async function number(page, selector) {
  const v = await page.locator(selector).first().getAttribute('data-micro-usd');
  check(v !== null, `${selector} carries data-micro-usd on ${page.url()}`);
  return Number(v);
}

// Accessibility basics, on every page shot: each field has a label, each table a caption and column
// headers, each chart a role and a title, one h1, the language set; nothing wider than the screen.
async function a11y(page) {
  const problems = await page.evaluate(() => {
    const out = [];
    for (const el of document.querySelectorAll('input:not([type=hidden]), select, textarea')) {
      const labelled = (el.id && document.querySelector(`label[for="${el.id}"]`)) || el.closest('label') || el.getAttribute('aria-label');
      if (!labelled) out.push(`unlabelled ${el.outerHTML.slice(0, 80)}`);
    }
    for (const t of document.querySelectorAll('table')) {
      if (!t.querySelector('caption')) out.push(`table ${t.id} has no caption`);
      if (!t.querySelector('th[scope=col]')) out.push(`table ${t.id} has no column headers`);
    }
    for (const svg of document.querySelectorAll('figure > svg')) {
      if (svg.getAttribute('role') !== 'img' || !svg.querySelector('title')) out.push(`chart ${svg.id} has no role or title`);
    }
    if (document.querySelectorAll('h1').length !== 1) out.push('not exactly one h1');
    if (!document.documentElement.lang) out.push('no lang');
    if (document.documentElement.scrollWidth > window.innerWidth + 1) out.push(`wider than the screen: ${document.documentElement.scrollWidth}`);
    return out;
  });
  check(problems.length === 0, `accessibility on ${page.url()}: ${problems.join('; ')}`);
}

async function shot(page, name) {
  await a11y(page);
  await page.screenshot({ path: `${ARTIFACTS}/${name}.png`, fullPage: true });
}

async function tableColumn(page, tableId, column) {
  return page.$$eval(`#${tableId} tbody tr`, (rows, column) => rows.map((r) => {
    const cell = r.querySelectorAll('td')[column];
    return cell ? (cell.getAttribute('data-micro-usd') ?? cell.textContent) : null;
  }), column);
}

// ---- a tenant member: own usage and models, nothing else ----
{
  const { ctx, page } = await signIn('acme', 'alice', 'tenant_member');
  check(new URL(page.url()).pathname === '/console/me', 'a member lands on their own usage');
  const nav = await page.$$eval('nav a', (as) => as.map((a) => a.textContent));
  check(nav.includes('My usage') && !nav.includes('Usage') && !nav.includes('Members'), `a member's navigation: ${nav}`);
  report.member = {
    own_total: await number(page, '#own-total'),
    models: await page.$$eval('#own-models tbody tr td:first-child', (t) => t.map((x) => x.textContent)),
  };
  await shot(page, 'member-my-usage');
  const r = await page.goto(`${BASE}/console/usage`);
  check(r.status() === 200, 'the page renders');
  const refusal = await page.locator('.error[data-status="403"]').count();
  check(refusal >= 1, 'a member sees the API refuse the tenant usage');
  report.member.usage_refused = refusal;
  await ctx.close();
}

// ---- a tenant admin of acme ----
{
  const { ctx, page, errors } = await signIn('acme', 'admin-a', 'tenant_admin');
  const headers = (await page.goto(`${BASE}/console/usage`)).headers();
  const csp = headers['content-security-policy'] || '';
  check(csp.includes("default-src 'none'") && csp.includes("frame-ancestors 'none'") && !csp.includes('unsafe'), `strict CSP: ${csp}`);
  check(headers['cache-control'] === 'no-store', 'pages are not cached');
  check(headers['x-frame-options'] === 'DENY', 'pages are not framed');
  report.admin = {
    range_total: await number(page, '#range-total'),
    budget: await number(page, '#budget'),
    spent: await number(page, '#spent'),
    projected: await number(page, '#projected'),
    by_model: await tableColumn(page, 'by-model', 5),
    by_subject: await page.$$eval('#by-subject tbody tr td:first-child', (t) => t.map((x) => x.textContent)),
    chart_bars: await page.locator('#daily-chart rect').count(),
  };
  await shot(page, 'admin-usage');
  // Keyboard: the skip link is the first stop, and it leads to the content.
  await page.keyboard.press('Tab');
  check(await page.evaluate(() => document.activeElement?.className) === 'skip', 'Tab reaches the skip link first');

  // A reflected value is text, never markup: it cannot close its attribute and add elements (and no
  // script would run under the CSP anyway).
  const reflected = '"><script>window.pwned=1</script><b id="injected">x</b>';
  await page.goto(`${BASE}/console/audit?action=${encodeURIComponent(reflected)}`);
  check(await page.locator('#injected').count() === 0, 'a reflected value adds no element');
  check(await page.locator('body script').count() === 0, 'a reflected value adds no script');
  check(await page.inputValue('#action') === reflected, 'the reflected value is the field\'s text, as typed');
  check(await page.evaluate(() => window.pwned) === undefined, 'a reflected script does not run');

  // Grant a role through the form; the API's audit records it.
  await page.goto(`${BASE}/console/members`);
  await page.fill('#subject', 'bob');
  await page.check('input[name=role][value=tenant_finance]');
  await page.click('form[action="/console/members"] button[type=submit]');
  check(await page.locator('.ok').count() === 1, `the grant succeeded: ${await page.locator('main').innerText()}`);
  report.admin.members = await page.$$eval('#members tbody tr td:first-child', (t) => t.map((x) => x.textContent));
  await shot(page, 'admin-members');

  // A credential: write-only. The page never shows it, before or after.
  await page.goto(`${BASE}/console/credentials`);
  check(await page.getAttribute('#value', 'type') === 'password', 'the key field is a password field');
  await page.fill('#provider', 'mock');
  await page.fill('#value', CREDENTIAL);
  await page.click('form[action="/console/credentials"] button[type=submit]');
  check(await page.locator('.ok').count() === 1, `the credential was stored: ${await page.locator('main').innerText()}`);
  check(!(await page.content()).includes(CREDENTIAL), 'the credential is never shown');
  check(!page.url().includes(CREDENTIAL), 'the credential is not in the URL');
  await shot(page, 'admin-credentials');

  await page.goto(`${BASE}/console/audit`);
  report.admin.chain_ok = await page.getAttribute('#chain', 'data-ok');
  report.admin.audit_actions = await page.$$eval('#events tbody tr td:nth-child(4)', (t) => t.map((x) => x.textContent));
  await shot(page, 'admin-audit');
  await page.goto(`${BASE}/console/policy`);
  report.admin.policy = await page.locator('#policy').innerText();
  await shot(page, 'admin-policy');

  // ---- CSRF: a write without this session's token, or from another origin, is refused ----
  const forged = await ctx.request.post(`${BASE}/console/members`, { form: { subject: 'mallory', role: 'tenant_admin' }, maxRedirects: 0 });
  check(forged.status() === 403, `a write without a CSRF token is refused (${forged.status()})`);
  const wrong = await ctx.request.post(`${BASE}/console/members`, { form: { subject: 'mallory', role: 'tenant_admin', csrf: 'x'.repeat(32) }, maxRedirects: 0 });
  check(wrong.status() === 403, `a write with another token is refused (${wrong.status()})`);
  const csrf = await page.getAttribute('input[name=csrf]', 'value');
  const evil = await ctx.newPage();
  await evil.goto(`${IDP}/.well-known/openid-configuration`);
  await evil.setContent(`<form id="f" method="post" action="${BASE}/console/members"><input name="csrf" value="${csrf}"><input name="subject" value="mallory"><input name="role" value="tenant_admin"></form>`);
  const [cross] = await Promise.all([evil.waitForNavigation(), evil.evaluate(() => document.getElementById('f').submit())]);
  check(cross.status() === 403, `a form posted from another origin is refused even with the token (${cross?.status()})`);
  await evil.close();

  // ---- cross-tenant: nothing of globex's is reachable from acme's session ----
  const urls = [
    '/console/usage?tenant=globex', '/console/finance?tenant=globex&month=2026-01',
    '/console/platform', '/console/platform/spend', '/console/platform/prices',
    '/console/platform/reconciliations', `/console/platform/reconciliations?run=${process.env.GLOBEX_RUN}`,
  ];
  report.admin.cross = {};
  for (const u of urls) {
    await page.goto(`${BASE}${u}`);
    report.admin.cross[u] = await page.content();
  }
  // The cookie is no credential for the API, even sent there by hand.
  const session = (await ctx.cookies()).find((c) => c.name === 'tenantctl_console');
  const api = await ctx.request.get(`${BASE}/v1/usage`, { headers: { cookie: `tenantctl_console=${session.value}` } });
  check(api.status() === 401, `the session cookie opens no API route (${api.status()})`);
  // A tampered session is no session.
  await ctx.addCookies([{ ...session, value: session.value.slice(0, -2) + (session.value.endsWith('A') ? 'BB' : 'AA') }]);
  await page.goto(`${BASE}/console/usage`);
  check(new URL(page.url()).pathname === '/console', 'a tampered session goes back to sign-in');
  check(errors.length === 0, `no console errors (CSP violations included): ${errors}`);
  await ctx.close();
}

// ---- tenant finance of acme: the month by model and cost-center, and its CSV ----
{
  const { ctx, page } = await signIn('acme', 'fin', 'tenant_finance');
  await page.goto(`${BASE}/console/finance`);
  report.finance = {
    month_total: await number(page, '#month-total'),
    cost_center: await page.locator('#cost-center').innerText(),
  };
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#csv')]);
  const path = `${ARTIFACTS}/finance.csv`;
  await download.saveAs(path);
  report.finance.csv_path = path;
  report.finance.csv_name = download.suggestedFilename();
  await shot(page, 'finance');
  await ctx.close();
}

// ---- platform staff: tenants, spend per tenant, reconciliation, price book ----
{
  const { ctx, page } = await signIn(null, 'op', 'platform_operator');
  check(new URL(page.url()).pathname === '/console/platform', 'an operator lands on the tenants');
  report.operator = {
    tenants: await page.$$eval('#tenants tbody tr td:first-child', (t) => t.map((x) => x.textContent)),
    drift: Object.fromEntries(await page.$$eval('#tenants tbody tr', (rows) => rows.map((r) => [r.cells[0].textContent, r.cells[5].textContent]))),
  };
  await shot(page, 'platform-tenants');
  await page.goto(`${BASE}/console/platform/spend`);
  report.operator.platform_total = await number(page, '#platform-total');
  report.operator.spend = await page.$$eval('#spend tbody tr', (rows) => rows.map((r) => [r.cells[0].textContent, Number(r.cells[5].getAttribute('data-micro-usd'))]));
  report.operator.stacked = await page.$$eval('#spend-chart rect', (rs) => rs.map((r) => [r.getAttribute('data-row'), r.getAttribute('data-series'), Number(r.getAttribute('data-micro-usd'))]));
  report.operator.llm_aws = Object.fromEntries(await page.$$eval('#llm-aws tbody tr', (rows) => rows.map((r) => {
    const v = (c) => (c.getAttribute('data-micro-usd') === null ? null : Number(c.getAttribute('data-micro-usd')));
    return [r.cells[0].textContent, [v(r.cells[2]), v(r.cells[3])]];
  })));
  await shot(page, 'platform-spend');
  await page.goto(`${BASE}/console/platform/reconciliations?run=${process.env.GLOBEX_RUN}`);
  report.operator.variance_rows = await page.locator('#variances tr.variance').count();
  report.operator.rows = await page.locator('#variances tbody tr').count();
  await shot(page, 'platform-reconciliation');
  await page.goto(`${BASE}/console/platform/prices`);
  report.operator.prices = await page.locator('#prices tbody tr').count();
  await shot(page, 'platform-prices');
  // Staff reach no tenant page: the API refuses an operator there.
  await page.goto(`${BASE}/console/members`);
  report.operator.members_refused = await page.locator('.error[data-status="403"]').count();
  await ctx.close();
}

// ---- platform finance: tenants, spend, reconciliation and the price book, as its role grants ----
{
  const { ctx, page } = await signIn(null, 'fin-op', 'platform_finance');
  report.platform_finance = {
    nav: await page.$$eval('nav a', (as) => as.map((a) => a.textContent)),
  };
  await page.goto(`${BASE}/console/platform/spend`);
  report.platform_finance.platform_total = await number(page, '#platform-total');
  await page.goto(`${BASE}/console/platform/reconciliations?run=${process.env.GLOBEX_RUN}`);
  report.platform_finance.variance_rows = await page.locator('#variances tr.variance').count();
  await ctx.close();
}

await browser.close();
writeFileSync(`${ARTIFACTS}/report.json`, JSON.stringify(report, null, 2));
console.log(JSON.stringify(report));
