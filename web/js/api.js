// The API client and the session. The token lives in memory and in sessionStorage (this tab
// only, gone when the tab closes), never in a cookie: requests carry it in Authorization, so no
// request can be forged cross-site (no CSRF), and the CSP forbids inline and foreign scripts.

const SESSION_KEY = 'tenantry.session';
const OPERATOR_KEY = 'tenantry.operator';

export class ApiError extends Error {
  constructor(status, problem) {
    const detail = problem && (problem.detail || problem.title);
    super(detail || `HTTP ${status}`);
    this.status = status;
    this.code = problem && problem.code;
    this.errors = (problem && problem.errors) || [];
    this.problem = problem;
  }

  // The route does not exist on this server (an area not built into it yet): 501, or the
  // server's 404 for an unknown route (detail "route not found"), not a missing resource's.
  get routeMissing() {
    if (this.status === 501) return true;
    if (this.status !== 404) return false;
    return !this.code || (this.problem && this.problem.detail === 'route not found');
  }
}

export const session = {
  token: null,
  tenant: '', // what the user typed on the login form ('' when the host names the tenant)
  user: null,
  expiresAt: null,
  tenantInfo: null,
  load() {
    try {
      const saved = JSON.parse(sessionStorage.getItem(SESSION_KEY) || 'null');
      if (saved && saved.token && (!saved.expiresAt || Date.parse(saved.expiresAt) > Date.now())) {
        Object.assign(this, saved);
        return true;
      }
    } catch { /* a corrupt entry is the same as none */ }
    return false;
  },
  save() {
    const { token, tenant, user, expiresAt } = this;
    sessionStorage.setItem(SESSION_KEY, JSON.stringify({ token, tenant, user, expiresAt }));
  },
  clear() {
    this.token = null;
    this.user = null;
    this.expiresAt = null;
    this.tenantInfo = null;
    sessionStorage.removeItem(SESSION_KEY);
  },
  get isAdmin() {
    return this.user && this.user.role === 'admin';
  },
};

export const operator = {
  get token() {
    return sessionStorage.getItem(OPERATOR_KEY);
  },
  set token(value) {
    if (value) sessionStorage.setItem(OPERATOR_KEY, value);
    else sessionStorage.removeItem(OPERATOR_KEY);
  },
};

let onUnauthorized = () => {};
export function whenUnauthorized(fn) {
  onUnauthorized = fn;
}

// fetch() against this origin. `as`: 'tenant' (the session's token and tenant), 'operator'
// (the platform token) or 'public' (tenant header only).
export async function api(path, { method = 'GET', body, as = 'tenant', tenant } = {}) {
  const headers = { Accept: 'application/json' };
  const named = tenant !== undefined ? tenant : session.tenant;
  if (as !== 'operator' && named) headers['X-Tenant-ID'] = named;
  if (as === 'tenant' && session.token) headers.Authorization = `Bearer ${session.token}`;
  if (as === 'operator' && operator.token) headers.Authorization = `Bearer ${operator.token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'omit',
    });
  } catch (e) {
    throw new ApiError(0, { detail: `The server could not be reached (${e.message}).` });
  }
  const type = response.headers.get('Content-Type') || '';
  const data = response.status === 204 ? null
    : type.includes('json') ? await response.json().catch(() => null)
      : await response.text();
  if (!response.ok) {
    const problem = data && typeof data === 'object' ? data : null;
    const err = new ApiError(response.status, problem);
    if (response.status === 401 && as === 'tenant' && session.token) onUnauthorized(err);
    throw err;
  }
  return data;
}

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') q.set(k, v);
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}
