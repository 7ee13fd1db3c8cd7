// The dashboard's entry point: the shell (top bar, navigation), the router (History API
// under /app/), the session's tenant and branding. Operators' pages live in operator.js.

import { api, session, whenUnauthorized } from './api.js';
import { applyBranding, setPageTitle, setTenantName } from './brand.js';
import { h, replace } from './dom.js';
import * as login from './pages/login.js';
import * as overview from './pages/overview.js';
import * as tasks from './pages/tasks.js';
import * as billing from './pages/billing.js';
import * as webhooks from './pages/webhooks.js';
import * as settings from './pages/settings.js';
import * as audit from './pages/audit.js';
import * as operatorApp from './operator.js';

// `admin`: hidden from members (the API refuses them anyway).
const PAGES = [
  { path: '/app/', name: 'Overview', page: overview },
  { path: '/app/tasks', name: 'Tasks', page: tasks },
  { path: '/app/billing', name: 'Usage & billing', page: billing },
  { path: '/app/webhooks', name: 'Webhooks', page: webhooks, admin: true },
  { path: '/app/settings', name: 'Settings', page: settings },
  { path: '/app/audit', name: 'Audit log', page: audit, admin: true },
];

const main = document.getElementById('main');
const nav = document.getElementById('nav');
let cleanup = null;

export function navigate(path, { replaceState = false } = {}) {
  if (replaceState) history.replaceState(null, '', path);
  else history.pushState(null, '', path);
  route();
}

export function announce(text) {
  const box = document.getElementById('announce');
  box.textContent = '';
  setTimeout(() => { box.textContent = text; }, 50);
}

function visiblePages() {
  return PAGES.filter((p) => !p.admin || session.isAdmin);
}

function renderNav(current) {
  nav.hidden = false;
  replace(nav, h('ul', {}, visiblePages().map((p) => h('li', {},
    h('a', {
      href: p.path,
      'data-link': true,
      'aria-current': p === current ? 'page' : undefined,
    }, p.name)))));
}

function renderTopbar() {
  const logout = document.getElementById('logout');
  const who = document.getElementById('who');
  if (session.token && session.user) {
    who.textContent = `${session.user.email} (${session.user.role})`;
    logout.hidden = false;
  } else {
    who.textContent = '';
    logout.hidden = true;
  }
}

// The branding of the tenant this page is for: before sign-in the host's or the typed
// tenant's (GET /branding is public), after it the session's.
export async function loadBranding(tenant) {
  try {
    const branding = await api('/branding', { as: 'public', tenant });
    applyBranding(branding);
    return branding;
  } catch {
    applyBranding(null);
    return null;
  }
}

export async function startSession() {
  renderTopbar();
  const [info] = await Promise.all([
    api('/tenant').catch(() => null),
    loadBranding(),
  ]);
  session.tenantInfo = info;
  setTenantName(info && info.name);
}

function signOut() {
  // The operator console signs out of its own token (operator.js).
  if (location.pathname.startsWith('/app/operator')) return;
  session.clear();
  setTenantName('');
  renderTopbar();
  navigate('/app/login');
}

async function route() {
  if (cleanup) {
    try { cleanup(); } catch { /* a page's cleanup never blocks the next */ }
    cleanup = null;
  }
  const path = location.pathname.replace(/\/+$/, '') || '/app';
  if (path === '/app/operator' || path.startsWith('/app/operator/')) {
    nav.hidden = true;
    cleanup = await operatorApp.render(main, { navigate, path });
    return;
  }
  if (!session.token) {
    nav.hidden = true;
    renderTopbar();
    setPageTitle('Sign in');
    await login.render(main, {
      onSignedIn: async () => {
        await startSession();
        // Back to the page asked for: ?next= after an expired session, or the deep link itself.
        const next = new URLSearchParams(location.search).get('next') || location.pathname;
        navigate(next.startsWith('/app/') && !next.startsWith('/app/login') ? next : '/app/', { replaceState: true });
      },
    });
    return;
  }
  if (path === '/app/login') {
    navigate('/app/', { replaceState: true });
    return;
  }
  const found = PAGES.find((p) => p.path.replace(/\/+$/, '') === path || (p.path === '/app/' && path === '/app'));
  renderNav(found);
  if (!found) {
    setPageTitle('Not found');
    replace(main, h('h1', {}, 'Not found'), h('p', {}, 'No page here. ', h('a', { href: '/app/', 'data-link': true }, 'Back to the overview')));
    return;
  }
  setPageTitle(found.name);
  if (found.admin && !session.isAdmin) {
    replace(main, h('h1', {}, found.name), h('p', { class: 'notice', role: 'status' }, 'This page is for tenant admins.'));
    return;
  }
  replace(main, h('h1', {}, found.name));
  cleanup = (await found.page.render(main, { navigate, announce })) || null;
}

document.addEventListener('click', (event) => {
  const link = event.target.closest && event.target.closest('a[data-link]');
  if (!link || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
  event.preventDefault();
  navigate(link.getAttribute('href'));
  main.focus();
});
window.addEventListener('popstate', route);
document.getElementById('logout').addEventListener('click', signOut);
whenUnauthorized(() => {
  session.clear();
  renderTopbar();
  navigate(`/app/login?next=${encodeURIComponent(location.pathname)}`, { replaceState: true });
});

async function boot() {
  const operatorPath = location.pathname.startsWith('/app/operator');
  if (!operatorPath && session.load()) await startSession();
  else if (!operatorPath) {
    const typed = new URLSearchParams(location.search).get('tenant') || '';
    await loadBranding(typed);
  }
  await route();
}

boot();
