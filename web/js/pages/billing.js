// Usage and billing: usage against the plan's limits and the projected cost (GET /billing),
// the invoices (GET /billing/invoices), and metered usage by day (GET /usage). Any of them
// missing from this server (404/501 for the route) is said plainly.

import { api, query } from '../api.js';
import { fmtNumber, fmtTime, h, replace, unavailable } from '../dom.js';

function money({ amount, currency } = {}) {
  if (amount === undefined || amount === null) return '–';
  const value = typeof amount === 'number' ? amount : Number(amount);
  try {
    return new Intl.NumberFormat('en-US', { style: 'currency', currency: (currency || 'usd').toUpperCase() })
      .format(Number.isInteger(value) && value > 1000 ? value / 100 : value);
  } catch {
    return `${amount} ${currency || ''}`;
  }
}

async function section(el, what, load) {
  try {
    await load();
  } catch (err) {
    replace(el, err.routeMissing ? unavailable(what) : h('p', { class: 'error', role: 'alert' }, err.message));
  }
}

export async function render(main) {
  const plan = h('section', { 'aria-labelledby': 'plan-h' }, h('p', {}, 'Loading…'));
  const invoices = h('section', { 'aria-labelledby': 'inv-h' }, h('p', {}, 'Loading…'));
  const usage = h('section', { 'aria-labelledby': 'use-h' }, h('p', {}, 'Loading…'));
  replace(main, h('h1', {}, 'Usage & billing'),
    h('h2', { id: 'plan-h' }, 'This period'), plan,
    h('h2', { id: 'use-h' }, 'Metered usage, last 30 days'), usage,
    h('h2', { id: 'inv-h' }, 'Invoices'), invoices);

  await Promise.all([
    section(plan, 'Billing', async () => {
      const b = await api('/billing');
      const rows = Object.entries(b.usage || {}).map(([metric, { used, limit }]) => {
        const pct = typeof limit === 'number' && limit > 0 ? Math.min(100, Math.round((used / limit) * 100)) : null;
        return h('tr', {},
          h('td', {}, metric),
          h('td', {}, fmtNumber(used)),
          h('td', {}, limit === null || limit === undefined ? 'unlimited' : fmtNumber(limit)),
          h('td', {}, pct === null ? '' : h('progress', { max: 100, value: pct, 'aria-label': `${metric}: ${pct}% of the limit` })));
      });
      replace(plan,
        h('div', { class: 'cards' },
          h('div', { class: 'stat' }, h('div', { class: 'label' }, 'Plan'), h('div', { class: 'value' }, b.plan || '')),
          h('div', { class: 'stat' }, h('div', { class: 'label' }, 'Projected cost'), h('div', { class: 'value', dataset: { testid: 'projected-cost' } }, money(b.projected_cost)))),
        h('p', { class: 'hint' }, `Period ${fmtTime(b.period_start)} to ${fmtTime(b.period_end)}`),
        h('table', {}, h('caption', { class: 'sr-only' }, 'Usage against limits'),
          h('thead', {}, h('tr', {}, ['Metric', 'Used', 'Limit', 'Share'].map((c) => h('th', { scope: 'col' }, c)))),
          h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: 4 }, 'No usage this period.')))));
    }),
    section(usage, 'Usage metering', async () => {
      const to = new Date();
      const from = new Date(to.getTime() - 30 * 86400e3);
      const u = await api(`/usage${query({ from: from.toISOString(), to: to.toISOString(), granularity: 'day' })}`);
      const items = u.items || [];
      replace(usage, h('table', {}, h('caption', { class: 'sr-only' }, 'Metered usage by day'),
        h('thead', {}, h('tr', {}, ['Day', 'Metric', 'Quantity'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, items.length
          ? items.map((i) => h('tr', {}, h('td', {}, String(i.period_start).slice(0, 10)), h('td', {}, i.metric), h('td', {}, fmtNumber(i.quantity))))
          : h('tr', {}, h('td', { colspan: 3 }, 'No metered usage yet.')))));
    }),
    section(invoices, 'Invoices', async () => {
      const list = await api('/billing/invoices');
      const items = Array.isArray(list) ? list : (list.items || []);
      replace(invoices, h('table', {}, h('caption', { class: 'sr-only' }, 'Invoices'),
        h('thead', {}, h('tr', {}, ['Invoice', 'Status', 'Amount', 'Date'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, items.length
          ? items.map((i) => h('tr', {},
            h('td', {}, i.number || i.id || ''),
            h('td', {}, h('span', { class: `badge ${i.status || ''}` }, i.status || '')),
            h('td', {}, money({ amount: i.amount_due ?? i.total ?? i.amount, currency: i.currency })),
            h('td', {}, fmtTime(i.created_at || i.created || i.period_end))))
          : h('tr', {}, h('td', { colspan: 4 }, 'No invoices yet.')))));
    }),
  ]);
}
