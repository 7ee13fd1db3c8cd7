// The operators' console (/app/operator/): the platform token (PLATFORM_ADMIN_TOKEN) kept in
// sessionStorage for this tab; tenants (search, suspend, resume, plan) and the actor
// supervision view refreshed every two seconds.

import { api, operator, query } from './api.js';
import { setPageTitle, setTenantName, applyBranding } from './brand.js';
import { errorBox, field, fmtNumber, fmtTime, h, replace, showProblem } from './dom.js';

const REFRESH_MS = 2000;

function tokenForm(main, onDone) {
  const token = h('input', { name: 'token', type: 'password', required: true, autocomplete: 'off' });
  const box = errorBox();
  const form = h('form', { class: 'card login' },
    h('h1', {}, 'Operator console'),
    field('Platform token', token, 'PLATFORM_ADMIN_TOKEN of this server'),
    box, h('button', { type: 'submit' }, 'Open'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    operator.token = token.value.trim();
    try {
      await api('/admin/actors', { as: 'operator' });
      onDone();
    } catch (err) {
      operator.token = null;
      showProblem(form, box, err);
    }
  });
  replace(main, form);
  token.focus();
}

// Every tenant, page by page (at most 20 pages of 500).
async function allTenants() {
  const items = [];
  let cursor;
  for (let i = 0; i < 20; i += 1) {
    const page = await api(`/admin/tenants${query({ limit: 500, cursor })}`, { as: 'operator' });
    items.push(...(page.items || []));
    cursor = page.next_cursor;
    if (!cursor) break;
  }
  return items;
}

async function tenantsView(el, announce) {
  const search = h('input', { name: 'search', type: 'search', placeholder: 'name, slug or id' });
  const body = h('tbody', { dataset: { testid: 'tenant-rows' } });
  const box = errorBox();
  replace(el, h('div', { class: 'row' }, field('Search tenants', search)), box,
    h('table', {}, h('caption', { class: 'sr-only' }, 'Tenants'),
      h('thead', {}, h('tr', {}, ['Name', 'Slug', 'Plan', 'Status', 'Created', ''].map((c) => h('th', { scope: 'col' }, c)))), body));
  let tenants = [];
  let plans = ['free', 'pro', 'enterprise'];
  try {
    const p = await api('/plans', { as: 'public', tenant: '' });
    const list = Array.isArray(p) ? p : (p.items || p.plans || []);
    if (list.length) plans = list.map((x) => x.name);
  } catch { /* the three defaults */ }

  async function act(t, path, method, body, what) {
    try {
      await api(path, { method, body, as: 'operator' });
      announce(`${t.slug}: ${what}`);
      await load();
    } catch (err) {
      replace(box, h('p', {}, `${t.slug}: ${err.message}`));
      box.hidden = false;
    }
  }

  function render() {
    const q = search.value.trim().toLowerCase();
    const shown = tenants.filter((t) => !q || [t.name, t.slug, t.id, t.subdomain].some((v) => String(v || '').toLowerCase().includes(q)));
    replace(body, shown.length ? shown.map((t) => {
      const plan = h('select', { 'aria-label': `Plan of ${t.slug}` },
        plans.map((p) => h('option', { value: p, selected: p === t.plan }, p)));
      plan.addEventListener('change', () => act(t, `/admin/tenants/${t.id}/plan`, 'PUT', { plan: plan.value }, `moved to ${plan.value}`));
      const suspended = t.status === 'suspended';
      return h('tr', { dataset: { tenant: t.slug } },
        h('td', {}, t.name), h('td', { class: 'mono' }, t.slug), h('td', {}, plan),
        h('td', {}, h('span', { class: `badge ${t.status}` }, t.status)),
        h('td', {}, fmtTime(t.created_at)),
        h('td', {}, h('button', {
          type: 'button', class: suspended ? 'secondary' : 'danger',
          onclick: () => act(t, `/admin/tenants/${t.id}/${suspended ? 'resume' : 'suspend'}`, 'POST', undefined, suspended ? 'resumed' : 'suspended'),
        }, suspended ? `Resume ${t.slug}` : `Suspend ${t.slug}`)));
    }) : h('tr', {}, h('td', { colspan: 6 }, 'No tenant matches.')));
  }

  async function load() {
    tenants = await allTenants();
    render();
  }
  search.addEventListener('input', render);
  await load();
}

function parseMetrics(text) {
  const values = {};
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?)\s+(\S+)/.exec(line);
    if (m) values[m[1]] = Number(m[2]);
  }
  return values;
}

async function actorsView(el) {
  // Slugs beside the ids; a tenant created after this page opened shows its id alone.
  const slugs = new Map((await allTenants().catch(() => [])).map((t) => [t.id, t.slug]));
  const stats = h('div', { class: 'cards', dataset: { testid: 'actor-stats' } });
  const pools = h('tbody');
  const body = h('tbody', { dataset: { testid: 'actor-rows' } });
  const updated = h('p', { class: 'hint', 'aria-live': 'off' });
  replace(el, stats, updated,
    h('h2', {}, 'Connection pools'),
    h('table', {}, h('caption', { class: 'sr-only' }, 'Connection pools'),
      h('thead', {}, h('tr', {}, ['Pool', 'State', 'Connections'].map((c) => h('th', { scope: 'col' }, c)))), pools),
    h('h2', {}, 'Active tenant actors'),
    h('table', {}, h('caption', { class: 'sr-only' }, 'Active tenant actors'),
      h('thead', {}, h('tr', {}, ['Tenant', 'Activated', 'Mailbox', 'In flight', 'Restarts', 'Connected'].map((c) => h('th', { scope: 'col' }, c)))), body));

  async function refresh() {
    try {
      const [a, metricsText] = await Promise.all([
        api('/admin/actors', { as: 'operator' }),
        fetch('/metrics').then((r) => (r.ok ? r.text() : '')).catch(() => ''),
      ]);
      replace(stats, [['Active', a.active], ['Activations', a.activations], ['Evictions', a.evictions], ['Restarts', a.restarts]]
        .map(([label, v]) => h('div', { class: 'stat' }, h('div', { class: 'label' }, label), h('div', { class: 'value' }, fmtNumber(v)))));
      const items = [...(a.items || [])].sort((x, y) => (y.mailbox_depth + y.in_flight) - (x.mailbox_depth + x.in_flight));
      replace(body, items.length ? items.map((i) => h('tr', {},
        h('td', {}, slugs.get(i.tenant_id) || '', ' ', h('span', { class: 'mono hint' }, i.tenant_id)), h('td', {}, fmtTime(i.activated_at)),
        h('td', {}, fmtNumber(i.mailbox_depth)), h('td', {}, fmtNumber(i.in_flight)),
        h('td', {}, fmtNumber(i.restarts)), h('td', {}, i.connected ? 'yes' : 'no'))) : h('tr', {}, h('td', { colspan: 6 }, 'No active actor.')));
      const metrics = parseMetrics(metricsText);
      // The server's registry prefixes every name with `tenantry_`.
      const rows = Object.entries(metrics).filter(([k]) => /^(tenantry_)?db_pool_connections\{/.test(k))
        .map(([k, v]) => {
          const pool = /pool="([^"]*)"/.exec(k);
          const state = /state="([^"]*)"/.exec(k);
          return h('tr', {}, h('td', {}, pool ? pool[1] : ''), h('td', {}, state ? state[1] : ''), h('td', {}, fmtNumber(v)));
        });
      replace(pools, rows.length ? rows : h('tr', {}, h('td', { colspan: 3 }, 'No pool metrics.')));
      updated.textContent = `Updated ${fmtTime(new Date().toISOString())}; refreshed every ${REFRESH_MS / 1000} s.`;
    } catch (err) {
      updated.textContent = err.message;
    }
  }
  await refresh();
  const timer = setInterval(refresh, REFRESH_MS);
  return () => clearInterval(timer);
}

export async function render(main, { navigate, path }) {
  applyBranding(null);
  setTenantName('tenantry operators');
  const who = document.getElementById('who');
  const logout = document.getElementById('logout');
  if (!operator.token) {
    setPageTitle('Operator console');
    who.textContent = '';
    logout.hidden = true;
    tokenForm(main, () => navigate('/app/operator/', { replaceState: true }));
    return null;
  }
  who.textContent = 'platform operator';
  logout.hidden = false;
  logout.onclick = () => {
    operator.token = null;
    logout.onclick = null;
    navigate('/app/operator/', { replaceState: true });
  };
  const actors = path.startsWith('/app/operator/actors');
  setPageTitle(actors ? 'Actors' : 'Tenants');
  const announceBox = document.getElementById('announce');
  const announce = (t) => { announceBox.textContent = t; };
  const view = h('div');
  replace(main,
    h('h1', {}, actors ? 'Tenant actors' : 'Tenants'),
    h('nav', { 'aria-label': 'Operator' }, h('p', {},
      h('a', { href: '/app/operator/', 'data-link': true, 'aria-current': actors ? undefined : 'page' }, 'Tenants'), ' · ',
      h('a', { href: '/app/operator/actors', 'data-link': true, 'aria-current': actors ? 'page' : undefined }, 'Actors'), ' · ',
      h('a', { href: '/docs' }, 'API reference'))),
    view);
  try {
    return actors ? await actorsView(view) : (await tenantsView(view, announce), null);
  } catch (err) {
    if (err.status === 401) {
      operator.token = null;
      navigate('/app/operator/', { replaceState: true });
      return null;
    }
    replace(view, h('p', { class: 'error', role: 'alert' }, err.message));
    return null;
  }
}
