// The audit log (tenant admins), filtered by resource and action, a page at a time.

import { api, query } from '../api.js';
import { errorBox, field, fmtTime, h, replace, showProblem } from '../dom.js';

export async function render(main) {
  const resource = h('input', { name: 'resource', placeholder: 'task, project, user, settings…' });
  const action = h('input', { name: 'action', placeholder: 'create, update, delete…' });
  const box = errorBox();
  const form = h('form', { class: 'row', 'aria-label': 'Filters' }, field('Resource', resource), field('Action', action),
    h('div', { class: 'field' }, h('button', { type: 'submit' }, 'Filter')));
  const body = h('tbody', { dataset: { testid: 'audit-rows' } });
  const more = h('button', { type: 'button', class: 'secondary', hidden: true }, 'Older entries');
  replace(main, h('h1', {}, 'Audit log'), form, box,
    h('table', {}, h('caption', { class: 'sr-only' }, 'Audit log entries'),
      h('thead', {}, h('tr', {}, ['When', 'Action', 'Resource', 'User', 'Changes'].map((c) => h('th', { scope: 'col' }, c)))), body),
    more);
  let cursor = null;

  async function load(append) {
    showProblem(form, box, null);
    try {
      const page = await api(`/audit-logs${query({ resource: resource.value.trim(), action: action.value.trim(), limit: 50, cursor: append ? cursor : undefined })}`);
      const rows = (page.items || []).map((a) => h('tr', {},
        h('td', {}, fmtTime(a.created_at)),
        h('td', {}, a.action),
        h('td', {}, `${a.resource}${a.resource_id ? ` ${String(a.resource_id).slice(0, 8)}` : ''}`),
        h('td', { class: 'mono' }, a.user_id ? String(a.user_id).slice(0, 8) : 'system'),
        h('td', {}, a.changes ? h('details', {}, h('summary', {}, 'Before / after'),
          h('pre', { class: 'mono' }, JSON.stringify(a.changes, null, 2))) : '')));
      if (append) body.append(...rows);
      else replace(body, rows.length ? rows : h('tr', {}, h('td', { colspan: 5 }, 'No entries.')));
      cursor = page.next_cursor;
      more.hidden = !cursor;
    } catch (err) {
      showProblem(form, box, err);
    }
  }
  form.addEventListener('submit', (e) => { e.preventDefault(); load(false); });
  more.addEventListener('click', () => load(true));
  await load(false);
}
