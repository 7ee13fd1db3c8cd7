// Webhooks (tenant admins; the API answers members 403): endpoints (create, with the signing
// secret shown once; delete; rotate the secret; send a test event; re-enable one the server
// disabled), an endpoint's deliveries (every attempt: status, response code, duration, next
// retry), its dead letters, replay of one delivery or of all dead letters. Field names are
// src/webhooks/model.rs's.

import { api, query } from '../api.js';
import { errorBox, field, fmtTime, h, replace, showProblem, unavailable } from '../dom.js';

export async function render(main, { announce }) {
  const list = h('div', { dataset: { testid: 'webhook-list' } }, h('p', {}, 'Loading…'));
  const deliveries = h('section', { 'aria-live': 'polite', dataset: { testid: 'deliveries' } });
  const box = errorBox();
  const url = h('input', { name: 'url', type: 'url', required: true, placeholder: 'https://example.com/hooks' });
  const events = h('input', { name: 'events', required: true, value: 'task.*, project.*' });
  const description = h('input', { name: 'description' });
  events.defaultValue = events.value; // what form.reset() goes back to
  // The secret of a new endpoint or of a rotation: the API shows it this once.
  const secretBox = h('div', { hidden: true, role: 'status' });
  const form = h('form', { class: 'card', 'aria-labelledby': 'nw-h' },
    h('h2', { id: 'nw-h' }, 'New endpoint'),
    h('div', { class: 'row' },
      field('URL', url),
      field('Events', events, 'Comma-separated: exact types (task.created), prefixes (project.*) or *'),
      field('Description', description)),
    box, h('button', { type: 'submit' }, 'Add endpoint'));
  replace(main, h('h1', {}, 'Webhooks'), secretBox, list, deliveries);

  function showSecret(text, secret) {
    replace(secretBox, h('p', {}, text), h('div', { class: 'secret', dataset: { testid: 'webhook-secret' } }, secret || ''));
    secretBox.hidden = false;
  }

  // An action's API call; its failure is said in the live region, never thrown.
  async function act(call, done) {
    try {
      const result = await call();
      if (done) announce(done(result));
      return result;
    } catch (e) {
      announce(e.message);
      return null;
    }
  }

  let shown = null; // {hook, status} of the deliveries on screen
  async function showDeliveries(hook, status) {
    shown = { hook, status };
    const dead = status === 'dead';
    replace(deliveries, h('p', {}, 'Loading deliveries…'));
    let items;
    try {
      const page = await api(`/webhooks/${hook.id}/deliveries${query({ status, limit: 100 })}`);
      items = page.items || [];
    } catch (err) {
      replace(deliveries, h('p', { class: 'error', role: 'alert' }, err.message));
      return;
    }
    const what = dead ? 'Dead letters' : 'Deliveries';
    replace(deliveries,
      h('h2', { id: 'dl-h' }, `${what} of `, h('span', { class: 'mono' }, hook.url)),
      h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'secondary', onclick: () => Promise.all([load(), showDeliveries(hook, status)]) }, 'Refresh'),
        h('button', { type: 'button', class: 'secondary', onclick: () => showDeliveries(hook, dead ? undefined : 'dead') },
          dead ? 'Show all deliveries' : 'Show dead letters'),
        h('button', {
          type: 'button', class: 'secondary',
          onclick: async () => {
            await act(() => api(`/webhooks/${hook.id}/replay-dead`, { method: 'POST' }),
              (r) => `${r.message_ids.length} dead letter(s) queued again`);
            showDeliveries(hook, status);
          },
        }, 'Replay all dead letters')),
      h('table', { 'aria-labelledby': 'dl-h' },
        h('thead', {}, h('tr', {}, ['When', 'Event', 'Attempt', 'Status', 'Response', 'Duration', 'Next retry', 'Error', '']
          .map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', { dataset: { testid: 'delivery-rows' } }, items.length ? items.map((d) => h('tr', { dataset: { deliveryId: d.id, status: d.status } },
          h('td', {}, fmtTime(d.created_at)),
          h('td', {}, d.event_type),
          h('td', { class: 'num' }, d.attempt),
          h('td', {}, h('span', { class: `badge ${d.status}` }, d.status)),
          h('td', { class: 'num' }, d.response_code ?? ''),
          h('td', { class: 'num' }, typeof d.duration_ms === 'number' ? `${d.duration_ms} ms` : ''),
          h('td', {}, fmtTime(d.next_retry_at)),
          h('td', {}, d.error || ''),
          h('td', {}, d.status === 'refused' ? '' : h('button', {
            type: 'button', class: 'secondary', 'aria-label': `Replay the ${d.event_type} delivery of ${fmtTime(d.created_at)}`,
            onclick: async () => {
              await act(() => api(`/webhooks/${hook.id}/deliveries/${d.id}/retry`, { method: 'POST' }), () => 'Delivery queued again');
              showDeliveries(hook, status);
            },
          }, 'Replay'))))
          : h('tr', {}, h('td', { colspan: 9 }, dead ? 'No dead letters.' : 'No deliveries yet.')))));
  }

  async function load() {
    let hooks;
    try {
      const page = await api('/webhooks?limit=100');
      hooks = page.items || [];
    } catch (err) {
      if (err.routeMissing) {
        replace(list, unavailable('Webhooks'));
        form.remove();
      } else {
        replace(list, h('p', { class: 'error', role: 'alert' }, err.message));
      }
      return;
    }
    if (!form.isConnected) list.insertAdjacentElement('afterend', form);
    replace(list, h('table', {}, h('caption', { class: 'sr-only' }, 'Webhook endpoints'),
      h('thead', {}, h('tr', {}, ['URL', 'Description', 'Events', 'Status', ''].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', { dataset: { testid: 'webhook-rows' } }, hooks.length ? hooks.map((w) => h('tr', { dataset: { webhookId: w.id } },
        h('td', { class: 'mono' }, w.url),
        h('td', {}, w.description || ''),
        h('td', {}, w.events.join(', ')),
        h('td', {}, h('span', { class: `badge ${w.status}` }, w.status), w.disabled_reason ? h('div', { class: 'hint' }, w.disabled_reason) : null),
        h('td', {}, h('div', { class: 'actions' },
          h('button', { type: 'button', class: 'secondary', 'aria-label': `Deliveries of ${w.url}`, onclick: () => showDeliveries(w) }, 'Deliveries'),
          h('button', {
            type: 'button', class: 'secondary', 'aria-label': `Send a test event to ${w.url}`,
            onclick: async () => {
              await act(() => api(`/webhooks/${w.id}/test`, { method: 'POST' }), () => 'Test event queued');
              if (shown && shown.hook.id === w.id) showDeliveries(w, shown.status);
            },
          }, 'Send test event'),
          w.status === 'disabled' ? h('button', {
            type: 'button', class: 'secondary', 'aria-label': `Enable ${w.url}`,
            onclick: async () => {
              await act(() => api(`/webhooks/${w.id}`, { method: 'PATCH', body: { status: 'enabled' } }), () => 'Endpoint enabled');
              load();
            },
          }, 'Enable') : null,
          h('button', {
            type: 'button', class: 'secondary', 'aria-label': `Rotate the secret of ${w.url}`,
            onclick: async () => {
              const r = await act(() => api(`/webhooks/${w.id}/rotate-secret`, { method: 'POST' }));
              if (r) showSecret(`New signing secret of ${w.url} (shown once; the previous one also signs until ${fmtTime(r.previous_secret_expires_at)}):`, r.secret);
            },
          }, 'Rotate secret'),
          h('button', {
            type: 'button', class: 'danger', 'aria-label': `Delete ${w.url}`,
            onclick: async () => {
              if (!window.confirm(`Delete the endpoint ${w.url}?`)) return;
              await act(() => api(`/webhooks/${w.id}`, { method: 'DELETE' }), () => 'Endpoint deleted');
              if (shown && shown.hook.id === w.id) { shown = null; replace(deliveries); }
              load();
            },
          }, 'Delete')))))
        : h('tr', {}, h('td', { colspan: 5 }, 'No endpoints yet.')))));
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    showProblem(form, box, null);
    try {
      const body = { url: url.value.trim(), events: events.value.split(',').map((s) => s.trim()).filter(Boolean) };
      if (description.value.trim()) body.description = description.value.trim();
      const created = await api('/webhooks', { method: 'POST', body });
      showSecret(`Signing secret of ${created.url} (shown once: keep it now):`, created.secret);
      form.reset();
      load();
    } catch (err) {
      showProblem(form, box, err);
    }
  });
  await load();
}
