// Sign-in: email and password, and the tenant when the host does not name one (a subdomain
// of BASE_DOMAIN does). The fields are named tenant, email and password (API.md).

import { api, session } from '../api.js';
import { applyBranding } from '../brand.js';
import { errorBox, field, h, replace, showProblem } from '../dom.js';

// Does the host alone name a tenant? GET /branding answers 400 when nothing names one.
async function hostNamesTenant() {
  try {
    await api('/branding', { as: 'public', tenant: '' });
    return true;
  } catch (e) {
    return e.status !== 400;
  }
}

export async function render(main, { onSignedIn }) {
  const params = new URLSearchParams(location.search);
  const fromHost = await hostNamesTenant();
  const tenant = h('input', {
    name: 'tenant', autocomplete: 'organization', required: !fromHost,
    value: params.get('tenant') || session.tenant || '',
  });
  const email = h('input', { name: 'email', type: 'email', autocomplete: 'username', required: true });
  const password = h('input', { name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const box = errorBox();
  const submit = h('button', { type: 'submit' }, 'Sign in');
  const form = h('form', { class: 'card', novalidate: false },
    field('Tenant', tenant, fromHost ? 'Optional: this address already names your tenant.' : 'Your organisation’s slug or id.'),
    field('Email', email),
    field('Password', password),
    box,
    submit);
  tenant.addEventListener('change', async () => {
    try {
      applyBranding(await api('/branding', { as: 'public', tenant: tenant.value.trim() }));
    } catch { /* unknown tenant: the sign-in will say so */ }
  });
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    submit.disabled = true;
    showProblem(form, box, null);
    session.tenant = tenant.value.trim();
    try {
      const answer = await api('/auth/login', {
        method: 'POST', as: 'public',
        body: { email: email.value.trim(), password: password.value },
      });
      session.token = answer.token;
      session.user = answer.user;
      session.expiresAt = answer.expires_at;
      session.save();
      await onSignedIn();
    } catch (err) {
      showProblem(form, box, err);
      password.select();
    } finally {
      submit.disabled = false;
    }
  });
  replace(main, h('div', { class: 'login' },
    h('h1', {}, 'Sign in'),
    form,
    h('p', { class: 'hint' }, 'Platform operator? ', h('a', { href: '/app/operator/' }, 'Operator console'))));
  (fromHost || tenant.value ? email : tenant).focus();
}
