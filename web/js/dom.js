// Small DOM helpers: every page builds its elements with h(); text is always set as text,
// never parsed as HTML, so nothing the API returns can inject markup.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === 'class') {
      el.className = value;
    } else if (key === 'dataset') {
      Object.assign(el.dataset, value);
    } else if (key === 'value' || key === 'checked' || key === 'disabled' || key === 'selected') {
      el[key] = value;
    } else {
      el.setAttribute(key, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

export function replace(el, ...children) {
  clear(el);
  append(el, children);
  return el;
}

let uid = 0;
export function nextId(prefix) {
  uid += 1;
  return `${prefix}-${uid}`;
}

// A labelled form control: <div class="field"><label for=..>..</label><control></div>.
export function field(label, control, hint) {
  if (!control.id) control.id = nextId('f');
  const hintEl = hint ? h('small', { id: `${control.id}-hint`, class: 'hint' }, hint) : null;
  if (hintEl) control.setAttribute('aria-describedby', hintEl.id);
  return h('div', { class: 'field' }, h('label', { for: control.id }, label), control, hintEl);
}

export function select(name, options, value) {
  return h('select', { name },
    options.map(([v, label]) => h('option', { value: v, selected: v === value }, label)));
}

// The API's problem shown beside a form: its detail, and each field error next to its field.
export function showProblem(form, box, err) {
  for (const el of form.querySelectorAll('[aria-invalid]')) {
    el.removeAttribute('aria-invalid');
  }
  for (const el of form.querySelectorAll('.field-error')) el.remove();
  if (!err) {
    replace(box);
    box.hidden = true;
    return;
  }
  const items = [];
  for (const { field: name, message } of err.errors || []) {
    const control = form.querySelector(`[name="${CSS.escape(name)}"]`);
    if (control) {
      control.setAttribute('aria-invalid', 'true');
      const msg = h('small', { class: 'field-error', id: nextId('err') }, message);
      control.insertAdjacentElement('afterend', msg);
      control.setAttribute('aria-describedby', msg.id);
    }
    items.push(h('li', {}, `${name}: ${message}`));
  }
  replace(box, h('p', {}, err.message), items.length ? h('ul', {}, items) : null);
  box.hidden = false;
}

export function errorBox() {
  return h('div', { class: 'error', role: 'alert', hidden: true });
}

export function fmtTime(ts) {
  if (!ts) return '';
  const d = new Date(ts);
  return Number.isNaN(d.getTime()) ? String(ts) : d.toISOString().replace('T', ' ').slice(0, 19) + 'Z';
}

export function fmtNumber(n) {
  return typeof n === 'number' ? n.toLocaleString('en-US') : String(n ?? '');
}

// Text for a page whose API is not on this server (404 or 501 for the route itself).
export function unavailable(what) {
  return h('p', { class: 'notice', role: 'status', dataset: { testid: 'unavailable' } },
    `${what}: not available on this server yet.`);
}
