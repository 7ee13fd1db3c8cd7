// Webhooks (tenant admins): endpoints, each one's deliveries with their status, replay of dead
// letters. Said plainly when this server has no webhooks API yet.

import { api, query } from '../api.js';
import { errorBox, field, fmtTime, h, replace, showProblem, unavailable } from '../dom.js';

export async function render(main, { announce }) {
  const list = h('div', { dataset: { testid: 'webhook-list' } }, h('p', {}, 'Loading…'));
  const deliveries = h('section', { 'aria-live': 'polite' });
  const box = errorBox();
  const url = h('input', { name: 'url', type: 'url', required: true, placeholder: 'https://example.com/hooks' });
  const events = h('input', { name: 'events', required: true, value: 'task.created, task.updated' });
  const description = h('input', { name: 'description' });
  const secretBox = h('div', { hidden: true });
  const form = h('form', { class: 'card', 'aria-labelledby': 'nw-h' },
    h('h2', { id: 'nw-h' }, 'New endpoint'),
    h('div', { class: 'row' }, field('URL', url), field('Events', events, 'Comma-separated, e.g. task.created, project.*'), field('Description', description)),
    box, h('button', { type: 'submit' }, 'Add endpoint'), secretBox);
  replace(main, h('h1', {}, 'Webhooks'), list, deliveries);

  async function showDeliveries(hook, status) {
    replace(deliveries, h('p', {}, 'Loading deliveries…'));
    try {
      const page = await api(`/webhooks/${hook.id}/deliveries${query({ status, limit: 100 })}`);
      const items = Array.isArray(page) ? page : (page.items || []);
      replace(deliveries,
        h('h2', {}, `Deliveries of ${hook.url}${status ? ' (dead letters)' : ''}`),
        h('div', { class: 'row' },
          h('button', { type: 'button', class: 'secondary', onclick: () => showDeliveries(hook, status ? undefined : 'dead') }, status ? 'Show all' : 'Show dead letters'),
          h('button', {
            type: 'button', class: 'secondary',
            onclick: async () => {
              await api(`/webhooks/${hook.id}/replay-dead`, { method: 'POST' }).catch((e) => announce(e.message));
              announce('Dead letters queued again');
              showDeliveries(hook, status);
            },
          }, 'Replay all dead letters')),
        h('table', {}, h('caption', { class: 'sr-only' }, 'Deliveries'),
          h('thead', {}, h('tr', {}, ['Event', 'Status', 'Response', 'Duration', 'Next retry', ''].map((c) => h('th', { scope: 'col' }, c)))),
          h('tbody', {}, items.length ? items.map((d) => h('tr', {},
            h('td', {}, d.event_type || d.type || ''),
            h('td', {}, h('span', { class: `badge ${d.status}` }, d.status)),
            h('td', {}, d.response_code ?? d.response_status ?? ''),
            h('td', {}, d.duration_ms !== undefined && d.duration_ms !== null ? `${d.duration_ms} ms` : ''),
            h('td', {}, fmtTime(d.next_retry_at || d.next_attempt_at)),
            h('td', {}, h('button', {
              type: 'button', class: 'secondary', 'aria-label': `Retry delivery ${d.id}`,
              onclick: async () => {
                try {
                  await api(`/webhooks/${hook.id}/deliveries/${d.id}/retry`, { method: 'POST' });
                  announce('Delivery queued again');
                  showDeliveries(hook, status);
                } catch (e) { announce(e.message); }
              },
            }, 'Retry')))) : h('tr', {}, h('td', { colspan: 6 }, 'No deliveries.')))));
    } catch (err) {
      replace(deliveries, h('p', { class: 'error', role: 'alert' }, err.message));
    }
  }

  async function load() {
    let hooks;
    try {
      const page = await api('/webhooks');
      hooks = Array.isArray(page) ? page : (page.items || []);
    } catch (err) {
      if (err.routeMissing) {
        replace(list, unavailable('Webhooks'));
        form.remove();
      } else {
        replace(list, h('p', { class: 'error', role: 'alert' }, err.message));
      }
      return;
    }
    if (!form.isConnected) main.append(form);
    replace(list, h('table', {}, h('caption', { class: 'sr-only' }, 'Webhook endpoints'),
      h('thead', {}, h('tr', {}, ['URL', 'Events', 'Status', ''].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, hooks.length ? hooks.map((w) => h('tr', {},
        h('td', { class: 'mono' }, w.url),
        h('td', {}, (w.events || []).join(', ')),
        h('td', {}, h('span', { class: `badge ${w.status}` }, w.status)),
        h('td', {},
          h('button', { type: 'button', class: 'secondary', onclick: () => showDeliveries(w) }, 'Deliveries'), ' ',
          h('button', {
            type: 'button', class: 'danger', 'aria-label': `Delete ${w.url}`,
            onclick: async () => {
              if (!window.confirm(`Delete the endpoint ${w.url}?`)) return;
              await api(`/webhooks/${w.id}`, { method: 'DELETE' }).catch((e) => announce(e.message));
              load();
            },
          }, 'Delete')))) : h('tr', {}, h('td', { colspan: 4 }, 'No endpoints yet.')))));
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    showProblem(form, box, null);
    try {
      const body = { url: url.value.trim(), events: events.value.split(',').map((s) => s.trim()).filter(Boolean) };
      if (description.value.trim()) body.description = description.value.trim();
      const created = await api('/webhooks', { method: 'POST', body });
      replace(secretBox, h('p', {}, 'Signing secret (shown once, keep it now):'), h('div', { class: 'secret' }, created.secret || ''));
      secretBox.hidden = false;
      form.reset();
      load();
    } catch (err) {
      showProblem(form, box, err);
    }
  });
  await load();
}
