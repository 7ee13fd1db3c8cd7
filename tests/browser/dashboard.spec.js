// The dashboard in Chromium against a real server (tests/api/dashboard.rs starts it and
// provisions tenants A and B: DASH_* variables).
import { randomUUID } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { createServer } from 'node:http';
import { test, expect, request as playwrightRequest } from '@playwright/test';
import AxeBuilder from '@axe-core/playwright';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set (run through tests/api/dashboard.rs)`);
  return value;
};
const BASE = env('DASH_BASE_URL');
const A = { slug: env('DASH_A_SLUG'), email: env('DASH_A_EMAIL'), password: env('DASH_A_PASSWORD'), token: env('DASH_A_TOKEN') };
const B = { slug: env('DASH_B_SLUG'), email: env('DASH_B_EMAIL'), password: env('DASH_B_PASSWORD'), token: env('DASH_B_TOKEN') };
const MEMBER = { email: env('DASH_MEMBER_EMAIL'), password: env('DASH_MEMBER_PASSWORD') };
const OPERATOR = env('DASH_OPERATOR_TOKEN');
const SHOTS = process.env.DASH_SCREENSHOTS || '../../target/screenshots';
mkdirSync(SHOTS, { recursive: true });

// Calls the API as a tenant's admin.
async function apiAs(tenant, method, path, data) {
  const ctx = await playwrightRequest.newContext({ baseURL: BASE });
  const response = await ctx.fetch(path, {
    method,
    headers: { Authorization: `Bearer ${tenant.token}` },
    data,
  });
  const body = response.status() === 204 ? null : await response.json().catch(() => null);
  await ctx.dispose();
  return { status: response.status(), body };
}

async function signIn(page, who, tenant, { succeeds = true } = {}) {
  await page.goto('/app/');
  await page.getByLabel('Tenant', { exact: true }).fill(tenant);
  await page.getByLabel('Email', { exact: true }).fill(who.email);
  await page.getByLabel('Password', { exact: true }).fill(who.password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  if (succeeds) await expect(page.getByRole('heading', { name: 'Overview', level: 1 })).toBeVisible();
}

// Logos are https URLs of other origins: the browser gets a local stand-in, and no request
// leaves this machine.
const LOGO = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 40 40"><circle cx="20" cy="20" r="18" fill="#444"/></svg>';
async function offline(context) {
  await context.route(/^https?:\/\/(?!127\.0\.0\.1[:/]|([a-z0-9-]+\.)?localhost[:/])/, (route) =>
    route.fulfill({ status: 200, contentType: 'image/svg+xml', body: LOGO }));
}
test.beforeEach(async ({ context }) => offline(context));

async function axe(page, name) {
  const results = await new AxeBuilder({ page }).analyze();
  const bad = results.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  expect(bad.map((v) => `${name}: ${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`)).toEqual([]);
}

async function shoot(page, name) {
  await page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true });
}

// No page may break its own Content-Security-Policy.
function watchCsp(page) {
  const violations = [];
  page.on('console', (msg) => {
    if (msg.type() === 'error' && /Content Security Policy/i.test(msg.text())) violations.push(msg.text());
  });
  page.on('pageerror', (err) => violations.push(`page error: ${err.message}`));
  return violations;
}

test('sign in as an admin: the overview and every admin page in the navigation', async ({ page }) => {
  const problems = watchCsp(page);
  await page.goto('/app/');
  await axe(page, 'login');
  await shoot(page, 'login');
  await signIn(page, A, A.slug);
  await expect(page.getByRole('heading', { name: 'Overview' })).toBeVisible();
  const nav = page.getByRole('navigation', { name: 'Main' });
  for (const name of ['Overview', 'Tasks', 'Usage & billing', 'Webhooks', 'Settings', 'Audit log']) {
    await expect(nav.getByRole('link', { name })).toBeVisible();
  }
  await expect(page.locator('#who')).toContainText(A.email);
  await page.getByRole('button', { name: 'Sign out' }).click();
  await expect(page.getByRole('button', { name: 'Sign in' })).toBeVisible();
  expect(problems).toEqual([]);
});

test('the subdomain names the tenant: no tenant field to fill in', async ({ page }) => {
  // Chromium resolves every *.localhost name to the loopback address; BASE_DOMAIN is localhost.
  const url = new URL(BASE);
  const info = await apiAs(A, 'GET', '/tenant');
  await page.goto(`http://${info.body.subdomain}.localhost:${url.port}/app/`);
  await expect(page.getByText('Optional: this address already names your tenant.')).toBeVisible();
  await page.getByLabel('Email', { exact: true }).fill(A.email);
  await page.getByLabel('Password', { exact: true }).fill(A.password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expect(page.getByRole('heading', { name: 'Overview', level: 1 })).toBeVisible();
  await expect(page).toHaveTitle(`Overview · ${info.body.name}`);
  await expect(page.getByTestId('live-status')).toHaveText('(live)');
});

test('the keyboard alone reaches every page', async ({ page }) => {
  await signIn(page, A, A.slug);
  await page.goto('/app/tasks');
  await page.keyboard.press('Tab');
  await expect(page.getByRole('link', { name: 'Skip to content' })).toBeFocused();
  let reached = false;
  for (let i = 0; i < 15 && !reached; i += 1) {
    await page.keyboard.press('Tab');
    reached = await page.evaluate(() => document.activeElement && document.activeElement.textContent === 'Settings');
  }
  expect(reached).toBe(true);
  await page.keyboard.press('Enter');
  await expect(page.getByRole('heading', { name: 'Settings', level: 1 })).toBeVisible();
  await expect(page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Settings' })).toHaveAttribute('aria-current', 'page');
});

test('a wrong password shows the API error', async ({ page }) => {
  await signIn(page, { email: A.email, password: 'not-the-password-123' }, A.slug, { succeeds: false });
  const alert = page.getByRole('alert');
  await expect(alert).toBeVisible();
  const login = await playwrightRequest.newContext({ baseURL: BASE });
  const answer = await login.post('/auth/login', {
    headers: { 'X-Tenant-ID': A.slug },
    data: { email: A.email, password: 'not-the-password-123' },
  });
  expect(answer.status()).toBe(401);
  const problem = await answer.json();
  await login.dispose();
  await expect(alert).toContainText(problem.detail || problem.title);
  await expect(page.getByRole('navigation', { name: 'Main' })).toBeHidden();
  await shoot(page, 'login-error');
});

test('a member does not see the admin pages', async ({ page }) => {
  await signIn(page, MEMBER, A.slug);
  await expect(page.getByRole('heading', { name: 'Overview' })).toBeVisible();
  const nav = page.getByRole('navigation', { name: 'Main' });
  await expect(nav.getByRole('link', { name: 'Tasks' })).toBeVisible();
  await expect(nav.getByRole('link', { name: 'Audit log' })).toHaveCount(0);
  await expect(nav.getByRole('link', { name: 'Webhooks' })).toHaveCount(0);
  await page.goto('/app/audit');
  await expect(page.getByText('This page is for tenant admins.')).toBeVisible();
  await page.goto('/app/webhooks');
  await expect(page.getByText('This page is for tenant admins.')).toBeVisible();
  // Usage is every user's; billing (GET /billing, invoices) is the admins'.
  await page.goto('/app/billing');
  await expect(page.getByText('Billing: for tenant admins.')).toBeVisible();
  await expect(page.getByText('Invoices: for tenant admins.')).toBeVisible();
  await expect(page.getByTestId('usage-by-day').or(page.getByText('No usage in the last 30 days.'))).toBeVisible();
  await shoot(page, 'member-billing');
  await page.goto('/app/settings');
  await expect(page.getByRole('heading', { name: 'Feature flags in effect' })).toBeVisible();
  await expect(page.getByRole('heading', { name: 'Branding' })).toHaveCount(0);
  await expect(page.getByRole('heading', { name: 'API keys' })).toHaveCount(0);
  await shoot(page, 'member-settings');
});

test('branding: each tenant sees its own colours, logo and name', async ({ browser }) => {
  const brands = {
    // Literal public addresses: the server refuses a logo host that does not resolve, and this
    // machine resolves no name.
    [A.slug]: { primary_color: '#6a1b9a', accent_color: '#ffd54f', logo_url: 'https://93.184.216.34/a-logo.svg' },
    [B.slug]: { primary_color: '#e0f2f1', accent_color: '#00695c', logo_url: 'https://93.184.216.34/b-logo.svg' },
  };
  for (const tenant of [A, B]) {
    const r = await apiAs(tenant, 'PUT', '/settings/branding', brands[tenant.slug]);
    expect(r.status, JSON.stringify(r.body)).toBeLessThan(300);
  }
  for (const tenant of [A, B]) {
    const context = await browser.newContext();
    await offline(context);
    const page = await context.newPage();
    await signIn(page, tenant, tenant.slug);
    await expect(page.getByRole('heading', { name: 'Overview' })).toBeVisible();
    const want = brands[tenant.slug];
    await expect.poll(() => page.evaluate(() => getComputedStyle(document.documentElement).getPropertyValue('--primary').trim()))
      .toBe(want.primary_color);
    const hex = (rgb) => `#${rgb.match(/\d+/g).slice(0, 3).map((n) => Number(n).toString(16).padStart(2, '0')).join('')}`;
    const bar = await page.locator('header.topbar').evaluate((el) => getComputedStyle(el).backgroundColor);
    expect(hex(bar)).toBe(want.primary_color);
    await expect(page.locator('img[data-brand-logo]')).toHaveAttribute('src', want.logo_url);
    const info = await apiAs(tenant, 'GET', '/tenant');
    await expect(page).toHaveTitle(`Overview · ${info.body.name}`);
    // A light primary colour gets dark text on it, a dark one light text.
    const fg = await page.locator('header.topbar').evaluate((el) => getComputedStyle(el).color);
    expect(hex(fg)).toBe(tenant === A ? '#ffffff' : '#000000');
    await page.goto('/app/settings');
    await expect(page.getByRole('heading', { name: 'Branding' })).toBeVisible();
    await shoot(page, `settings-${tenant === A ? 'a' : 'b'}`);
    await context.close();
  }
});

test('the branding editor shows the API validation messages', async ({ page }) => {
  await signIn(page, A, A.slug);
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Settings' }).click();
  await page.getByLabel('Primary colour', { exact: true }).fill('purple');
  await page.getByLabel('Logo URL', { exact: true }).fill('http://insecure.example.com/x.png');
  await page.getByRole('button', { name: 'Save branding' }).click();
  const alert = page.getByRole('alert');
  await expect(alert).toContainText('primary_color');
  await expect(alert).toContainText('logo_url');
  await expect(page.getByLabel('Primary colour', { exact: true })).toHaveAttribute('aria-invalid', 'true');
  await axe(page, 'settings');
});

test('live: the chart counts the tenant\'s events within 2 s, never another tenant\'s', async ({ page }) => {
  await signIn(page, A, A.slug);
  await expect(page.getByTestId('live-status')).toHaveText('(live)');
  const total = page.getByTestId('live-total');
  await expect(total).toHaveText('0');
  const events = Array.from({ length: 3 }, () => ({ event_type: 'a_live_click', user_id: randomUUID(), feature: 'live' }));
  const posted = await apiAs(A, 'POST', '/analytics/events', { events });
  expect(posted.status).toBe(202);
  await expect(total).toHaveText('3', { timeout: 2_000 });
  await expect(page.getByTestId('live-events')).toContainText('a_live_click');

  const other = await apiAs(B, 'POST', '/analytics/events', { events: [{ event_type: 'b_secret_event', user_id: randomUUID() }] });
  expect(other.status).toBe(202);
  // B's event reached B's own stream before A's page is checked (a second socket as B).
  const seenByB = await page.evaluate(async ({ token, user }) => new Promise((resolve) => {
    const ws = new WebSocket(`ws://${location.host}/ws/analytics?token=${encodeURIComponent(token)}`);
    ws.onopen = () => fetch('/analytics/events', {
      method: 'POST',
      headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ events: [{ event_type: 'b_secret_event', user_id: user }] }),
    });
    ws.onmessage = (m) => { ws.close(); resolve(JSON.parse(m.data)); };
  }), { token: B.token, user: randomUUID() });
  expect(Object.keys(seenByB.counts)).toContain('b_secret_event');
  // A later event of A arrives after B's: by then A's page would have shown B's.
  await apiAs(A, 'POST', '/analytics/events', { events: [{ event_type: 'a_live_click', user_id: randomUUID() }] });
  await expect(total).toHaveText('4', { timeout: 2_000 });
  await expect(page.getByTestId('live-events')).not.toContainText('b_secret_event');
  await shoot(page, 'overview');
  await axe(page, 'overview');
});

test('the overview shows the numbers of GET /analytics/summary for its range', async ({ page }) => {
  // Events on a closed past day: nothing else changes that day's numbers while the test runs.
  const day = new Date(Date.now() - 2 * 86400e3).toISOString().slice(0, 10);
  const at = (h) => `${day}T${String(h).padStart(2, '0')}:15:00Z`;
  const [u1, u2, u3] = [randomUUID(), randomUUID(), randomUUID()];
  const events = [
    { event_type: 'page_view', user_id: u1, feature: 'reports', timestamp: at(9) },
    { event_type: 'page_view', user_id: u2, feature: 'reports', timestamp: at(10) },
    { event_type: 'click', user_id: u2, feature: 'export', timestamp: at(11) },
    { event_type: 'click', user_id: u3, timestamp: at(12) },
  ];
  expect((await apiAs(A, 'POST', '/analytics/events', { events })).status).toBe(202);
  await signIn(page, A, A.slug);
  await page.getByLabel('From (UTC)', { exact: true }).fill(day);
  await page.getByLabel('To (UTC, inclusive)', { exact: true }).fill(day);
  await page.getByRole('button', { name: 'Show' }).click();
  const summary = page.getByTestId('summary');
  await expect(summary).toHaveAttribute('data-loaded', 'true');
  const from = await summary.getAttribute('data-from');
  const to = await summary.getAttribute('data-to');
  const api = await apiAs(A, 'GET', `/analytics/summary?from=${encodeURIComponent(from)}&to=${encodeURIComponent(to)}`);
  expect(api.status).toBe(200);
  expect(api.body.events).toBe(4);
  for (const key of ['dau', 'mau', 'events', 'api_calls']) {
    await expect(page.getByTestId(key)).toHaveText(api.body[key].toLocaleString('en-US'));
  }
  for (const { feature, count } of api.body.top_features) {
    await expect(page.getByTestId('top-features').getByRole('row', { name: new RegExp(`^${feature} ${count}$`) })).toBeVisible();
  }
});

test('create a project and a task in the UI, read them back through the API', async ({ page }) => {
  const PROJECT = `Browser project ${randomUUID().slice(0, 8)}`;
  const TASK = `Write the browser test ${randomUUID().slice(0, 8)}`;
  await signIn(page, A, A.slug);
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Tasks' }).click();
  await page.getByRole('heading', { name: 'New project' }).waitFor();
  const newProject = page.locator('form[aria-labelledby="np-h"]');
  await newProject.getByLabel('Name', { exact: true }).fill(PROJECT);
  await newProject.getByLabel('Description', { exact: true }).fill('made in Chromium');
  await page.getByRole('button', { name: 'Create project' }).click();
  await expect(page.getByLabel('Project', { exact: true })).toHaveText(new RegExp(PROJECT));
  await page.getByLabel('Title', { exact: true }).fill(TASK);
  await page.getByLabel('Status', { exact: true }).selectOption('in_progress');
  await page.getByLabel('Assignee', { exact: true }).selectOption({ index: 1 });
  await page.getByLabel('Due date', { exact: true }).fill('2030-01-31');
  await page.getByRole('button', { name: 'Create task' }).click();
  const column = page.locator('section.column[data-status="in_progress"]');
  await expect(column).toContainText(TASK);

  const projects = await apiAs(A, 'GET', '/projects?limit=500');
  const project = projects.body.items.find((p) => p.name === PROJECT);
  expect(project).toBeTruthy();
  const tasks = await apiAs(A, 'GET', `/tasks?project_id=${project.id}`);
  expect(tasks.body.items).toHaveLength(1);
  const [task] = tasks.body.items;
  expect(task.title).toBe(TASK);
  expect(task.status).toBe('in_progress');
  expect(task.due_date).toBe('2030-01-31');
  expect(task.assignee_id).toBeTruthy();

  // Edit: move it to done.
  await column.getByRole('button', { name: `Edit ${TASK}` }).click();
  await page.getByLabel('Status', { exact: true }).selectOption('done');
  await page.getByRole('button', { name: 'Save task' }).click();
  await expect(page.locator('section.column[data-status="done"]')).toContainText(TASK);
  const after = await apiAs(A, 'GET', `/tasks/${task.id}`);
  expect(after.body.status).toBe('done');

  // Tenant B sees none of it.
  const theirs = await apiAs(B, 'GET', '/projects?limit=500');
  expect(theirs.body.items.map((p) => p.name)).not.toContain(PROJECT);
  await shoot(page, 'tasks');
  await axe(page, 'tasks');
});

test('usage & billing: the plan, a metric and the projected cost of GET /billing', async ({ page }) => {
  // A metric of its own: api_calls moves with every request, this one only with the test.
  const metric = `exports_${randomUUID().replace(/-/g, '').slice(0, 8)}`;
  const events = [5, 2].map((quantity) => ({ idempotency_key: randomUUID(), metric, quantity }));
  expect((await apiAs(A, 'POST', '/usage/events', { events })).status).toBe(202);
  await signIn(page, A, A.slug);
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Usage & billing' }).click();
  await expect(page.getByRole('heading', { name: 'Usage & billing', level: 1 })).toBeVisible();
  await expect(page.getByTestId('plan')).not.toHaveText('');
  const billing = await apiAs(A, 'GET', '/billing');
  expect(billing.status).toBe(200);
  expect(billing.body.usage[metric]).toEqual({ used: 7, limit: null });
  await expect(page.getByTestId('plan')).toHaveText(billing.body.plan);
  await expect(page.getByTestId(`used-${metric}`)).toHaveText('7');
  await expect(page.getByTestId(`limit-${metric}`)).toHaveText('unlimited');
  const calls = billing.body.usage.api_calls;
  await expect(page.getByTestId('limit-api_calls')).toHaveText(calls.limit === null ? 'unlimited' : calls.limit.toLocaleString('en-US'));
  // Cents formatted in the currency: the plan's price (no metered price is set) is stable.
  const { amount, currency } = billing.body.projected_cost;
  const fmt = new Intl.NumberFormat('en-US', { style: 'currency', currency: currency.toUpperCase() });
  await expect(page.getByTestId('projected-cost')).toHaveText(fmt.format(amount / 10 ** fmt.resolvedOptions().maximumFractionDigits));
  await expect(page.getByTestId('usage-by-day').or(page.getByText('No usage in the last 30 days.'))).toBeVisible();
  // No Stripe here: no invoice, and the page says so.
  expect((await apiAs(A, 'GET', '/billing/invoices')).body.items).toEqual([]);
  await expect(page.getByTestId('no-invoices')).toBeVisible();
  await shoot(page, 'billing');
  await axe(page, 'billing');
});

// A webhook receiver on this machine: records what it gets, answers `status`.
async function receiver() {
  const got = [];
  let status = 200;
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (chunk) => { body += chunk; });
    req.on('end', () => {
      got.push({ headers: req.headers, body: JSON.parse(body || 'null'), answered: status });
      res.writeHead(status, { 'Content-Type': 'text/plain' });
      res.end('ok');
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}/hook`,
    got,
    answer: (s) => { status = s; },
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

test('webhooks: an endpoint made in the UI, its deliveries, a dead letter replayed', async ({ page }) => {
  const rx = await receiver();
  try {
    await signIn(page, A, A.slug);
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Webhooks' }).click();
    await expect(page.getByRole('heading', { name: 'Webhooks', level: 1 })).toBeVisible();
    await page.getByLabel('URL', { exact: true }).fill(rx.url);
    await page.getByLabel('Events', { exact: true }).fill('project.*');
    await page.getByLabel('Description', { exact: true }).fill('browser receiver');
    await page.getByRole('button', { name: 'Add endpoint' }).click();
    const secret = page.getByTestId('webhook-secret');
    await expect(secret).toHaveText(/^whsec_[A-Za-z0-9+/]+=*$/);
    await expect(page.getByTestId('webhook-rows')).toContainText(rx.url);
    const listed = await apiAs(A, 'GET', '/webhooks');
    const hook = listed.body.items.find((w) => w.url === rx.url);
    expect(hook).toMatchObject({ events: ['project.*'], status: 'enabled', description: 'browser receiver' });
    expect(hook.secret).toBeUndefined();

    // A domain write reaches the receiver, and its delivery shows in the UI.
    const name = `Hooked project ${randomUUID().slice(0, 8)}`;
    expect((await apiAs(A, 'POST', '/projects', { name })).status).toBe(201);
    await page.getByRole('button', { name: `Deliveries of ${rx.url}` }).click();
    const rows = page.getByTestId('delivery-rows');
    const refresh = page.getByRole('button', { name: 'Refresh', exact: true });
    const succeeded = rows.locator('tr[data-status="succeeded"]', { hasText: 'project.created' });
    await expect(async () => {
      await refresh.click();
      await expect(succeeded.first()).toBeVisible({ timeout: 1_000 });
    }).toPass({ timeout: 20_000 });
    await expect(succeeded.first()).toContainText('200');
    await expect(succeeded.first()).toContainText(' ms');
    const sent = rx.got.find((r) => r.body && r.body.type === 'project.created');
    expect(sent.headers['webhook-signature']).toMatch(/^v1,/);

    // 410 Gone makes a dead letter at once (other failures take an hour of retries).
    await page.getByRole('button', { name: 'Show dead letters' }).click();
    await expect(rows).toContainText('No dead letters.');
    rx.answer(410);
    expect((await apiAs(A, 'POST', '/projects', { name: `${name} gone` })).status).toBe(201);
    const dead = rows.locator('tr[data-status="dead"]').first();
    await expect(async () => {
      await refresh.click();
      await expect(dead).toBeVisible({ timeout: 1_000 });
    }).toPass({ timeout: 20_000 });
    await expect(dead).toContainText('410');
    const deadLetters = await apiAs(A, 'GET', `/webhooks/${hook.id}/deliveries?status=dead`);
    expect(deadLetters.body.items).toHaveLength(1);
    const [letter] = deadLetters.body.items;
    // Refresh reads the endpoints and the deliveries concurrently: the list may predate the
    // commit that recorded the dead letter and disabled the endpoint, so refresh until it shows.
    await expect(async () => {
      await refresh.click();
      await expect(page.getByTestId('webhook-rows')).toContainText('disabled', { timeout: 1_000 });
    }).toPass({ timeout: 20_000 });
    await shoot(page, 'webhooks-dead');

    // The receiver is back: enable the endpoint and replay the dead letter from the UI.
    rx.answer(200);
    await page.getByRole('button', { name: `Enable ${rx.url}` }).click();
    await expect.poll(async () => (await apiAs(A, 'GET', `/webhooks/${hook.id}`)).body.status).toBe('enabled');
    await dead.getByRole('button', { name: /^Replay the project.created delivery/ }).click();
    await expect.poll(async () => {
      const all = await apiAs(A, 'GET', `/webhooks/${hook.id}/deliveries`);
      return all.body.items.filter((d) => d.message_id === letter.message_id && d.status === 'succeeded').length;
    }, { timeout: 20_000 }).toBe(1);
    const replayed = rx.got.at(-1);
    expect(replayed.headers['webhook-id']).toBe(`msg_${letter.message_id.replace(/-/g, '')}`);
    expect(replayed.answered).toBe(200);

    // A test event answered 410 is a second dead letter; Replay all dead letters sends it again.
    rx.answer(410);
    await page.getByRole('button', { name: `Send a test event to ${rx.url}` }).click();
    const deadTest = rows.locator('tr[data-status="dead"]', { hasText: 'webhook.test' });
    await expect(async () => {
      await refresh.click();
      await expect(deadTest).toBeVisible({ timeout: 1_000 });
    }).toPass({ timeout: 20_000 });
    rx.answer(200);
    await page.getByRole('button', { name: `Enable ${rx.url}` }).click();
    await expect.poll(async () => (await apiAs(A, 'GET', `/webhooks/${hook.id}`)).body.status).toBe('enabled');
    await page.getByRole('button', { name: 'Replay all dead letters' }).click();
    await expect(page.locator('#announce')).toHaveText('1 dead letter(s) queued again');
    await expect.poll(() => rx.got.some((r) => r.body && r.body.type === 'webhook.test' && r.answered === 200), { timeout: 20_000 }).toBe(true);

    // A rotated secret is shown once.
    const first = await secret.textContent();
    await page.getByRole('button', { name: `Rotate the secret of ${rx.url}` }).click();
    await expect(secret).not.toHaveText(first);
    await expect(secret).toHaveText(/^whsec_/);
    await page.getByRole('button', { name: 'Show all deliveries' }).click();
    await expect(rows.locator('tr[data-status="succeeded"]').first()).toBeVisible();
    await shoot(page, 'webhooks');
    await axe(page, 'webhooks');

    page.once('dialog', (dialog) => dialog.accept());
    await page.getByRole('button', { name: `Delete ${rx.url}` }).click();
    await expect(page.getByTestId('webhook-rows')).not.toContainText(rx.url);
    expect((await apiAs(A, 'GET', `/webhooks/${hook.id}`)).status).toBe(404);
  } finally {
    await rx.close();
  }
});

test('the audit log lists the tenant\'s changes with filters', async ({ page }) => {
  expect((await apiAs(A, 'POST', '/projects', { name: `Audited project ${randomUUID()}` })).status).toBe(201);
  await signIn(page, A, A.slug);
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Audit log' }).click();
  const rows = page.getByTestId('audit-rows');
  await expect(rows).toContainText('project');
  await page.getByLabel('Resource', { exact: true }).fill('nothing-like-this');
  await page.getByRole('button', { name: 'Filter' }).click();
  await expect(rows).toContainText('No entries.');
  await page.getByLabel('Resource', { exact: true }).fill('');
  await page.getByRole('button', { name: 'Filter' }).click();
  await expect(rows).toContainText('project');
  await shoot(page, 'audit');
  await axe(page, 'audit');
});

test('settings: flags in effect, API keys shown once, members', async ({ page }) => {
  await signIn(page, A, A.slug);
  await page.goto('/app/settings');
  await expect(page.getByRole('heading', { name: 'Feature flags in effect' })).toBeVisible();
  const features = await apiAs(A, 'GET', '/features');
  for (const key of Object.keys(features.body.flags)) {
    await expect(page.getByTestId('flags')).toContainText(key);
  }
  await expect(page.getByRole('heading', { name: 'Members' })).toBeVisible();
  await expect(page.getByRole('table', { name: 'Members' })).toContainText(MEMBER.email);
  await page.getByRole('heading', { name: 'API keys' }).scrollIntoViewIfNeeded();
  await page.locator('section[aria-labelledby="keys-h"]').getByLabel('Name').fill('ci key');
  await page.getByRole('button', { name: 'Create key' }).click();
  // The tenant's plan decides: pro shows the key once, free shows the API's refusal.
  const key = page.getByTestId('new-key');
  const refusal = page.locator('section[aria-labelledby="keys-h"] [role="alert"]:not([hidden])');
  await expect(key.or(refusal)).toBeVisible();
  if (await key.isVisible()) {
    await expect(key).toHaveText(/^tk_/);
    await page.reload();
    await expect(page.getByTestId('new-key')).toHaveCount(0);
  }
  await shoot(page, 'settings');
});

test('operators: tenants (search, suspend, resume, plan) and the live actor view', async ({ page }) => {
  const problems = watchCsp(page);
  await page.goto('/app/operator/');
  await axe(page, 'operator-login');
  await page.getByLabel('Platform token', { exact: true }).fill('wrong-token');
  await page.getByRole('button', { name: 'Open' }).click();
  await expect(page.getByRole('alert')).toBeVisible();
  await page.getByLabel('Platform token', { exact: true }).fill(OPERATOR);
  await page.getByRole('button', { name: 'Open' }).click();
  await expect(page.getByRole('heading', { name: 'Tenants', level: 1 })).toBeVisible();
  await page.getByLabel('Search tenants', { exact: true }).fill(B.slug);
  const rows = page.getByTestId('tenant-rows');
  await expect(rows.locator('tr')).toHaveCount(1);
  await expect(rows).toContainText(B.slug);
  await page.getByRole('button', { name: `Suspend ${B.slug}` }).click();
  await expect(rows).toContainText('suspended');
  await page.getByRole('button', { name: `Resume ${B.slug}` }).click();
  await expect(rows).toContainText('active');
  await page.getByLabel(`Plan of ${B.slug}`).selectOption('enterprise');
  await expect.poll(async () => (await apiAs(B, 'GET', '/tenant')).body.plan).toBe('enterprise');
  await page.getByLabel('Search tenants', { exact: true }).fill('');
  await shoot(page, 'operator-tenants');
  await axe(page, 'operator-tenants');

  await page.getByRole('link', { name: 'Actors' }).click();
  await expect(page.getByRole('heading', { name: 'Tenant actors', level: 1 })).toBeVisible();
  await expect(page.getByTestId('actor-rows')).toContainText(/[0-9a-f-]{36}/);
  const first = await page.locator('.hint', { hasText: 'Updated' }).textContent();
  await expect(page.locator('.hint', { hasText: 'Updated' })).not.toHaveText(first, { timeout: 5_000 });
  await shoot(page, 'operator-actors');
  await axe(page, 'operator-actors');
  expect(problems).toEqual([]);
});

test('/docs is Redoc from this server, within its CSP', async ({ page }) => {
  const problems = watchCsp(page);
  const response = await page.goto('/docs');
  expect(response.headers()['content-security-policy']).toContain("default-src 'self'");
  await expect(page.getByText('tenantry', { exact: false }).first()).toBeVisible();
  await expect(page.locator('.api-content')).toBeVisible({ timeout: 20_000 });
  await shoot(page, 'docs');
  expect(problems).toEqual([]);
});
