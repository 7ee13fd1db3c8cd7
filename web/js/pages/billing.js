// Usage and billing: the period, usage against the plan's limits and the projected cost
// (GET /billing, admins), the invoices (GET /billing/invoices, admins), and metered usage by day
// (GET /usage, every user). Amounts are in the currency's smallest unit, as Stripe writes them.
// A member sees the usage and a note that billing is for admins (the API answers them 403).

import { api, query } from '../api.js';
import { fmtNumber, fmtTime, h, replace, unavailable } from '../dom.js';

// `amount` in the currency's smallest unit: cents for USD, yen for JPY (Intl knows the
// number of minor digits of each ISO 4217 currency).
export function money(amount, currency) {
  if (typeof amount !== 'number') return '–';
  const code = (currency || 'usd').toUpperCase();
  try {
    const fmt = new Intl.NumberFormat('en-US', { style: 'currency', currency: code });
    const digits = fmt.resolvedOptions().maximumFractionDigits;
    return fmt.format(amount / 10 ** digits);
  } catch {
    return `${fmtNumber(amount)} ${code} (smallest unit)`;
  }
}

const fmtDay = (ts) => (ts ? fmtTime(ts).slice(0, 10) : '');

async function section(el, what, load) {
  try {
    await load();
  } catch (err) {
    if (err.routeMissing) replace(el, unavailable(what));
    else if (err.status === 403) replace(el, h('p', { class: 'notice', role: 'status' }, `${what}: for tenant admins.`));
    else replace(el, h('p', { class: 'error', role: 'alert' }, err.message));
  }
}

function usageRow(metric, { used, limit }) {
  const pct = typeof limit === 'number' && limit > 0 ? Math.min(100, Math.round((used / limit) * 100)) : null;
  return h('tr', { dataset: { metric } },
    h('th', { scope: 'row' }, metric),
    h('td', { class: 'num', dataset: { testid: `used-${metric}` } }, fmtNumber(used)),
    h('td', { class: 'num', dataset: { testid: `limit-${metric}` } }, typeof limit === 'number' ? fmtNumber(limit) : 'unlimited'),
    h('td', {}, pct === null ? '' : h('progress', { max: 100, value: pct, 'aria-label': `${metric}: ${pct}% of the limit` }), pct === null ? '' : ` ${pct}%`));
}

// One row per day, one column per metric (the days with any usage, newest first).
function usageByDay(items) {
  const metrics = [...new Set(items.map((i) => i.metric))].sort();
  const days = new Map();
  for (const i of items) {
    const day = fmtDay(i.period_start);
    if (!days.has(day)) days.set(day, {});
    days.get(day)[i.metric] = (days.get(day)[i.metric] || 0) + i.quantity;
  }
  const rows = [...days.entries()].sort(([a], [b]) => (a < b ? 1 : -1));
  return h('table', { dataset: { testid: 'usage-by-day' } }, h('caption', { class: 'sr-only' }, 'Metered usage by day (UTC)'),
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Day (UTC)'), metrics.map((m) => h('th', { scope: 'col', class: 'num' }, m)))),
    h('tbody', {}, rows.map(([day, values]) => h('tr', {},
      h('th', { scope: 'row' }, day),
      metrics.map((m) => h('td', { class: 'num' }, values[m] === undefined ? '' : fmtNumber(values[m])))))));
}

export async function render(main) {
  const plan = h('section', { 'aria-labelledby': 'plan-h', dataset: { testid: 'billing' } }, h('p', {}, 'Loading…'));
  const invoices = h('section', { 'aria-labelledby': 'inv-h' }, h('p', {}, 'Loading…'));
  const usage = h('section', { 'aria-labelledby': 'use-h' }, h('p', {}, 'Loading…'));
  replace(main, h('h1', {}, 'Usage & billing'),
    h('h2', { id: 'plan-h' }, 'This period'), plan,
    h('h2', { id: 'use-h' }, 'Usage by day, last 30 days'), usage,
    h('h2', { id: 'inv-h' }, 'Invoices'), invoices);

  await Promise.all([
    section(plan, 'Billing', async () => {
      const b = await api('/billing');
      const metrics = Object.entries(b.usage || {});
      replace(plan,
        h('div', { class: 'cards' },
          h('div', { class: 'stat' }, h('div', { class: 'label' }, 'Plan'), h('div', { class: 'value', dataset: { testid: 'plan' } }, b.plan || '')),
          h('div', { class: 'stat' }, h('div', { class: 'label' }, 'Projected cost this period'),
            h('div', { class: 'value', dataset: { testid: 'projected-cost' } }, money(b.projected_cost && b.projected_cost.amount, b.projected_cost && b.projected_cost.currency))),
          b.billing_state ? h('div', { class: 'stat' }, h('div', { class: 'label' }, 'Billing state'),
            h('div', { class: 'value' }, h('span', { class: `badge ${b.billing_state}`, dataset: { testid: 'billing-state' } }, b.billing_state))) : null),
        h('p', { class: 'hint', dataset: { testid: 'period' } }, `Period ${fmtTime(b.period_start)} to ${fmtTime(b.period_end)} (UTC, end excluded). The projection extends this period's usage so far to its whole length.`),
        h('table', { dataset: { testid: 'usage-limits' } }, h('caption', { class: 'sr-only' }, 'Usage against limits this period'),
          h('thead', {}, h('tr', {}, ['Metric', 'Used', 'Limit', 'Share of the limit'].map((c) => h('th', { scope: 'col' }, c)))),
          h('tbody', {}, metrics.length ? metrics.map(([m, u]) => usageRow(m, u)) : h('tr', {}, h('td', { colspan: 4 }, 'No usage this period.')))));
    }),
    section(usage, 'Usage metering', async () => {
      const to = new Date();
      const from = new Date(to.getTime() - 30 * 86400e3);
      const u = await api(`/usage${query({ from: from.toISOString(), to: to.toISOString(), granularity: 'day' })}`);
      const items = u.items || [];
      replace(usage, items.length ? usageByDay(items) : h('p', {}, 'No usage in the last 30 days.'));
    }),
    section(invoices, 'Invoices', async () => {
      const page = await api('/billing/invoices?limit=50');
      const items = page.items || [];
      replace(invoices, items.length
        ? h('table', { dataset: { testid: 'invoices' } }, h('caption', { class: 'sr-only' }, 'Invoices, newest first'),
          h('thead', {}, h('tr', {}, ['Invoice', 'Status', 'Amount due', 'Paid', 'Period', 'Created'].map((c) => h('th', { scope: 'col' }, c)))),
          h('tbody', {}, items.map((i) => h('tr', {},
            h('td', { class: 'mono' }, i.hosted_invoice_url && /^https:\/\//.test(i.hosted_invoice_url)
              ? h('a', { href: i.hosted_invoice_url, rel: 'noopener noreferrer', target: '_blank' }, i.stripe_invoice_id)
              : i.stripe_invoice_id),
            h('td', {}, h('span', { class: `badge ${i.status || ''}` }, i.status || '')),
            h('td', { class: 'num' }, money(i.amount_due, i.currency)),
            h('td', { class: 'num' }, money(i.amount_paid, i.currency)),
            h('td', {}, i.period_start ? `${fmtDay(i.period_start)} – ${fmtDay(i.period_end)}` : ''),
            h('td', {}, fmtTime(i.created))))))
        : h('p', { dataset: { testid: 'no-invoices' } }, 'No invoices yet. They appear here once Stripe issues one.'));
    }),
  ]);
}
