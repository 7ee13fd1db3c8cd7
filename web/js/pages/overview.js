// Overview: the summary for a chosen range (GET /analytics/summary), a time series (GET
// /analytics/timeseries) and the live chart fed by the WebSocket /ws/analytics.

import { api, query, session } from '../api.js';
import { liveChart, seriesChart } from '../charts.js';
import { errorBox, field, fmtNumber, h, replace, select, showProblem } from '../dom.js';

function dayInput(name, date) {
  return h('input', { type: 'date', name, value: date.toISOString().slice(0, 10), required: true });
}

function stat(label, testid) {
  const value = h('div', { class: 'value', dataset: { testid } }, '–');
  return { el: h('div', { class: 'stat' }, h('div', { class: 'label' }, label), value), value };
}

export async function render(main) {
  const today = new Date();
  const weekAgo = new Date(today.getTime() - 6 * 86400e3);
  const from = dayInput('from', weekAgo);
  const to = dayInput('to', today);
  const box = errorBox();
  const rangeForm = h('form', { class: 'row', 'aria-label': 'Range' },
    field('From (UTC)', from), field('To (UTC, inclusive)', to),
    h('div', { class: 'field' }, h('button', { type: 'submit' }, 'Show')));
  const stats = {
    dau: stat('Daily active users', 'dau'),
    mau: stat('Monthly active users', 'mau'),
    events: stat('Events', 'events'),
    api_calls: stat('API calls', 'api_calls'),
  };
  const summaryEl = h('section', { 'aria-labelledby': 'sum-h', dataset: { testid: 'summary' } },
    h('h2', { id: 'sum-h', class: 'sr-only' }, 'Summary'),
    h('div', { class: 'cards' }, Object.values(stats).map((s) => s.el)));
  const topBody = h('tbody');
  const top = h('table', { dataset: { testid: 'top-features' } },
    h('caption', { class: 'sr-only' }, 'Top features'),
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Feature'), h('th', { scope: 'col' }, 'Events'))),
    topBody);

  const metric = select('metric', [['events', 'Events'], ['active_users', 'Active users'], ['api_calls', 'API calls']], 'events');
  const interval = select('interval', [['day', 'Day'], ['hour', 'Hour']], 'day');
  const seriesEl = h('div', { class: 'chart', role: 'img', 'aria-label': 'Time series chart', dataset: { testid: 'series-chart' } });
  let removeSeries = null;

  const liveEl = h('div', { class: 'chart', role: 'img', 'aria-label': 'Live events per second' });
  const liveTotal = h('strong', { dataset: { testid: 'live-total' } }, '0');
  const liveStatus = h('span', { class: 'hint', dataset: { testid: 'live-status' } }, 'connecting…');
  const recentBody = h('tbody', { dataset: { testid: 'live-events' } });

  replace(main,
    h('h1', {}, 'Overview'),
    rangeForm, box, summaryEl,
    h('h2', {}, 'Top features'), top,
    h('h2', {}, 'Over time'),
    h('div', { class: 'row' }, field('Metric', metric), field('Interval', interval)),
    seriesEl,
    h('h2', {}, 'Live'),
    h('p', {}, 'Events since this page opened: ', liveTotal, ' ', liveStatus),
    liveEl,
    h('table', {}, h('caption', { class: 'sr-only' }, 'Latest live events'),
      h('thead', {}, h('tr', {}, ['Time', 'Event', 'Feature', 'User'].map((c) => h('th', { scope: 'col' }, c)))),
      recentBody));

  function range() {
    // Whole UTC days: from the first day's midnight to the end of the last day.
    const start = new Date(`${from.value}T00:00:00Z`);
    const end = new Date(`${to.value}T00:00:00Z`);
    end.setUTCDate(end.getUTCDate() + 1);
    return { from: start.toISOString(), to: end.toISOString() };
  }

  // Only the latest request of each kind may paint: an older one answering late is dropped.
  let summarySeq = 0;
  let seriesSeq = 0;

  async function loadSummary() {
    showProblem(rangeForm, box, null);
    const seq = ++summarySeq;
    const r = range();
    summaryEl.dataset.from = r.from;
    summaryEl.dataset.to = r.to;
    delete summaryEl.dataset.loaded;
    try {
      const s = await api(`/analytics/summary${query(r)}`);
      if (seq !== summarySeq) return;
      for (const key of Object.keys(stats)) stats[key].value.textContent = fmtNumber(s[key]);
      replace(topBody, (s.top_features || []).length
        ? s.top_features.map((f) => h('tr', {}, h('td', {}, f.feature), h('td', {}, fmtNumber(f.count))))
        : h('tr', {}, h('td', { colspan: 2 }, 'No feature events in this range.')));
      summaryEl.dataset.loaded = 'true';
    } catch (err) {
      if (seq === summarySeq) showProblem(rangeForm, box, err);
    }
  }

  async function loadSeries() {
    const seq = ++seriesSeq;
    const r = range();
    try {
      const s = await api(`/analytics/timeseries${query({ ...r, metric: metric.value, interval: interval.value })}`);
      if (seq !== seriesSeq) return;
      if (removeSeries) removeSeries();
      replace(seriesEl);
      removeSeries = seriesChart(seriesEl, metric.selectedOptions[0].textContent, s.points || [], interval.value);
    } catch (err) {
      replace(seriesEl, h('p', { class: 'error', role: 'alert' }, err.message));
    }
  }

  rangeForm.addEventListener('submit', (e) => {
    e.preventDefault();
    loadSummary();
    loadSeries();
  });
  metric.addEventListener('change', loadSeries);
  interval.addEventListener('change', loadSeries);

  const live = liveChart(liveEl);
  let total = 0;
  let socket = null;
  let closed = false;
  let retry = null;
  function connect() {
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    socket = new WebSocket(`${scheme}://${location.host}/ws/analytics?token=${encodeURIComponent(session.token)}`);
    socket.addEventListener('open', () => { liveStatus.textContent = '(live)'; });
    socket.addEventListener('message', (message) => {
      let tick;
      try { tick = JSON.parse(message.data); } catch { return; }
      if (!tick || tick.type !== 'tick') return;
      const n = Object.values(tick.counts || {}).reduce((a, b) => a + b, 0);
      total += n;
      liveTotal.textContent = fmtNumber(total);
      live.push(Date.parse(tick.ts) / 1000, n);
      for (const e of (tick.events || []).slice(-20).reverse()) {
        recentBody.prepend(h('tr', {},
          h('td', {}, new Date(e.timestamp).toISOString().slice(11, 19)),
          h('td', {}, e.event_type), h('td', {}, e.feature || ''), h('td', {}, e.user_id || '')));
      }
      while (recentBody.children.length > 20) recentBody.lastChild.remove();
    });
    socket.addEventListener('close', () => {
      if (closed) return;
      liveStatus.textContent = '(reconnecting…)';
      retry = setTimeout(connect, 2000);
    });
  }
  connect();
  // The live chart slides even when no event arrives.
  const slide = setInterval(() => live.push(Date.now() / 1000, 0), 1000);

  await Promise.all([loadSummary(), loadSeries()]);
  return () => {
    closed = true;
    clearTimeout(retry);
    clearInterval(slide);
    if (socket) socket.close();
    live.destroy();
    if (removeSeries) removeSeries();
  };
}
