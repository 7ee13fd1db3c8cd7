// Settings: branding (editor with a live preview; admins), the feature flags in effect for
// this tenant and user, API keys (create, shown once, revoke; admins), members.

import { api, session } from '../api.js';
import { applyBranding, parseHex, readableOn } from '../brand.js';
import { errorBox, field, fmtTime, h, replace, select, showProblem } from '../dom.js';

function flagValue(v) {
  return typeof v === 'object' ? JSON.stringify(v) : String(v);
}

function brandingEditor(announce) {
  const box = errorBox();
  const primary = h('input', { name: 'primary_color', pattern: '#[0-9a-fA-F]{6}', placeholder: '#1f4e79' });
  const accent = h('input', { name: 'accent_color', pattern: '#[0-9a-fA-F]{6}', placeholder: '#b35900' });
  const primaryPick = h('input', { type: 'color', 'aria-label': 'Pick the primary colour', tabindex: -1 });
  const accentPick = h('input', { type: 'color', 'aria-label': 'Pick the accent colour', tabindex: -1 });
  const logo = h('input', { name: 'logo_url', type: 'url', placeholder: 'https://example.com/logo.png' });
  const previewLogo = h('img', { alt: 'Logo preview', class: 'logo', hidden: true, height: 28 });
  const previewBar = h('div', { class: 'bar' }, previewLogo, h('strong', {}, 'Your dashboard'));
  const previewButton = h('button', { type: 'button', tabindex: -1 }, 'Accent button');
  const preview = h('div', { class: 'preview', 'aria-label': 'Branding preview', role: 'group', dataset: { testid: 'branding-preview' } },
    previewBar, h('div', { class: 'body' }, h('p', {}, 'Text and buttons in your colours stay readable.'), previewButton));
  const form = h('form', { class: 'card', 'aria-labelledby': 'br-h', novalidate: true },
    h('h2', { id: 'br-h' }, 'Branding'),
    h('div', { class: 'row' },
      field('Primary colour', primary, '#rrggbb'), primaryPick,
      field('Accent colour', accent, '#rrggbb'), accentPick,
      field('Logo URL', logo, 'An https URL, or empty for none')),
    preview, box, h('button', { type: 'submit' }, 'Save branding'));

  function refresh() {
    const p = parseHex(primary.value) ? primary.value : '#1f4e79';
    const a = parseHex(accent.value) ? accent.value : '#b35900';
    previewBar.style.background = p;
    previewBar.style.color = readableOn(p);
    previewButton.style.background = a;
    previewButton.style.borderColor = a;
    previewButton.style.color = readableOn(a);
    if (parseHex(primary.value)) primaryPick.value = primary.value.toLowerCase();
    if (parseHex(accent.value)) accentPick.value = accent.value.toLowerCase();
    if (/^https:\/\//.test(logo.value)) {
      previewLogo.src = logo.value;
      previewLogo.hidden = false;
    } else {
      previewLogo.hidden = true;
    }
  }
  for (const input of [primary, accent, logo]) input.addEventListener('input', refresh);
  primaryPick.addEventListener('input', () => { primary.value = primaryPick.value; refresh(); });
  accentPick.addEventListener('input', () => { accent.value = accentPick.value; refresh(); });

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    showProblem(form, box, null);
    const body = { primary_color: primary.value.trim(), accent_color: accent.value.trim(), logo_url: logo.value.trim() || null };
    try {
      await api('/settings/branding', { method: 'PUT', body });
      applyBranding(await api('/branding'));
      announce('Branding saved');
    } catch (err) {
      showProblem(form, box, err);
    }
  });

  return {
    form,
    async load() {
      const b = await api('/branding');
      primary.value = b.primary_color || '';
      accent.value = b.accent_color || '';
      logo.value = b.logo_url || '';
      refresh();
    },
  };
}

function apiKeys(announce) {
  const body = h('tbody', {}, h('tr', {}, h('td', { colspan: 4 }, 'Loading…')));
  const box = errorBox();
  const name = h('input', { name: 'name', required: true });
  const role = select('role', [['member', 'member'], ['admin', 'admin']], 'member');
  const shown = h('div', { hidden: true, role: 'status' });
  const form = h('form', { class: 'row' }, field('Name', name), field('Role', role),
    h('div', { class: 'field' }, h('button', { type: 'submit' }, 'Create key')));
  const section = h('section', { class: 'card', 'aria-labelledby': 'keys-h' },
    h('h2', { id: 'keys-h' }, 'API keys'),
    h('table', {}, h('caption', { class: 'sr-only' }, 'API keys'),
      h('thead', {}, h('tr', {}, ['Name', 'Role', 'Created', ''].map((c) => h('th', { scope: 'col' }, c)))), body),
    form, box, shown);

  async function load() {
    try {
      const page = await api('/api-keys?limit=500');
      const items = page.items || [];
      replace(body, items.length ? items.map((k) => h('tr', {},
        h('td', {}, k.name || ''), h('td', {}, k.role || ''), h('td', {}, fmtTime(k.created_at)),
        h('td', {}, h('button', {
          type: 'button', class: 'danger', 'aria-label': `Revoke ${k.name || k.id}`,
          onclick: async () => {
            try {
              await api(`/api-keys/${k.id}`, { method: 'DELETE' });
              announce('Key revoked');
              load();
            } catch (err) { showProblem(form, box, err); }
          },
        }, 'Revoke')))) : h('tr', {}, h('td', { colspan: 4 }, 'No API keys.')));
    } catch (err) {
      replace(body, h('tr', {}, h('td', { colspan: 4 }, err.message)));
    }
  }
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    showProblem(form, box, null);
    try {
      const created = await api('/api-keys', { method: 'POST', body: { name: name.value.trim(), role: role.value } });
      replace(shown, h('p', {}, 'The new key, shown this once: copy it now.'), h('div', { class: 'secret', dataset: { testid: 'new-key' } }, created.key));
      shown.hidden = false;
      form.reset();
      load();
    } catch (err) {
      showProblem(form, box, err);
    }
  });
  return { section, load };
}

function members(announce) {
  const body = h('tbody');
  const box = errorBox();
  const section = h('section', { class: 'card', 'aria-labelledby': 'mem-h' },
    h('h2', { id: 'mem-h' }, 'Members'),
    h('table', {}, h('caption', { class: 'sr-only' }, 'Members'),
      h('thead', {}, h('tr', {}, ['Name', 'Email', 'Role', ''].map((c) => h('th', { scope: 'col' }, c)))), body), box);
  let form = null;
  if (session.isAdmin) {
    const email = h('input', { name: 'email', type: 'email', required: true });
    const name = h('input', { name: 'name', required: true });
    const role = select('role', [['member', 'member'], ['admin', 'admin']], 'member');
    const password = h('input', { name: 'password', type: 'password', autocomplete: 'new-password', minlength: 8 });
    form = h('form', { class: 'row', 'aria-label': 'Add a member' }, field('Email', email), field('Name', name), field('Role', role), field('Password', password),
      h('div', { class: 'field' }, h('button', { type: 'submit' }, 'Add member')));
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      showProblem(form, box, null);
      const b = { email: email.value.trim(), name: name.value.trim(), role: role.value };
      if (password.value) b.password = password.value;
      try {
        await api('/users', { method: 'POST', body: b });
        form.reset();
        announce('Member added');
        load();
      } catch (err) { showProblem(form, box, err); }
    });
    section.append(form);
  }
  async function load() {
    try {
      const page = await api('/users?limit=500');
      replace(body, (page.items || []).map((u) => h('tr', {},
        h('td', {}, u.name || ''), h('td', {}, u.email), h('td', {}, u.role),
        h('td', {}, session.isAdmin && u.id !== session.user.id ? [
          h('button', {
            type: 'button', class: 'secondary', 'aria-label': `Make ${u.email} ${u.role === 'admin' ? 'a member' : 'an admin'}`,
            onclick: async () => {
              try {
                await api(`/users/${u.id}`, { method: 'PATCH', body: { role: u.role === 'admin' ? 'member' : 'admin' } });
                load();
              } catch (err) { showProblem(form, box, err); }
            },
          }, u.role === 'admin' ? 'Make member' : 'Make admin'), ' ',
          h('button', {
            type: 'button', class: 'danger', 'aria-label': `Remove ${u.email}`,
            onclick: async () => {
              if (!window.confirm(`Remove ${u.email}?`)) return;
              try {
                await api(`/users/${u.id}`, { method: 'DELETE' });
                load();
              } catch (err) { showProblem(form, box, err); }
            },
          }, 'Remove')] : ''))));
    } catch (err) {
      replace(body, h('tr', {}, h('td', { colspan: 4 }, err.message)));
    }
  }
  return { section, load };
}

export async function render(main, { announce }) {
  const flagsBody = h('tbody', { dataset: { testid: 'flags' } });
  const flags = h('section', { class: 'card', 'aria-labelledby': 'fl-h' },
    h('h2', { id: 'fl-h' }, 'Feature flags in effect'),
    h('table', {}, h('caption', { class: 'sr-only' }, 'Feature flags'),
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Flag'), h('th', { scope: 'col' }, 'Value'))), flagsBody));
  const parts = [h('h1', {}, 'Settings')];
  const loads = [];
  if (session.isAdmin) {
    const editor = brandingEditor(announce);
    parts.push(editor.form);
    loads.push(editor.load());
  }
  parts.push(flags);
  loads.push(api('/features').then((f) => {
    const entries = Object.entries(f.flags || {});
    replace(flagsBody, entries.length
      ? entries.map(([k, v]) => h('tr', {}, h('td', { class: 'mono' }, k), h('td', { class: 'mono' }, flagValue(v))))
      : h('tr', {}, h('td', { colspan: 2 }, 'No flags are defined.')));
  }).catch((err) => replace(flagsBody, h('tr', {}, h('td', { colspan: 2 }, err.message)))));
  if (session.isAdmin) {
    const keys = apiKeys(announce);
    parts.push(keys.section);
    loads.push(keys.load());
  }
  const team = members(announce);
  parts.push(team.section);
  loads.push(team.load());
  replace(main, ...parts);
  await Promise.all(loads);
}
