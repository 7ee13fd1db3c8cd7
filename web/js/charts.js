// Charts with uPlot (vendored). Each chart sizes itself to its container and follows it.

import uPlot from '../vendor/uplot/uPlot.esm.js';

function cssVar(name, fallback) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;
}

function width(el) {
  return Math.max(280, Math.floor(el.clientWidth || 600) - 16);
}

function follow(el, plot) {
  const observer = new ResizeObserver(() => plot.setSize({ width: width(el), height: plot.height }));
  observer.observe(el);
  return () => {
    observer.disconnect();
    plot.destroy();
  };
}

// A line chart of {ts, value} points. Returns a function that removes it.
export function seriesChart(el, label, points, interval) {
  const xs = points.map((p) => Date.parse(p.ts) / 1000);
  const ys = points.map((p) => p.value);
  const plot = new uPlot({
    width: width(el),
    height: 240,
    scales: { x: { time: true } },
    // Day labels are wide: keep them apart.
    axes: [{ space: interval === 'day' ? 90 : 60 }, {}],
    series: [
      {},
      { label, stroke: cssVar('--primary-text', '#1f4e79'), width: 2, fill: 'rgba(0,0,0,0.04)', points: { show: points.length < 60 } },
    ],
  }, [xs, ys], el);
  return follow(el, plot);
}

// The live chart: events a second over the last `span` seconds, pushed tick by tick.
export function liveChart(el, span = 60) {
  const now = Math.floor(Date.now() / 1000);
  const xs = Array.from({ length: span }, (_, i) => now - span + 1 + i);
  const ys = xs.map(() => 0);
  const plot = new uPlot({
    width: width(el),
    height: 200,
    scales: { x: { time: true } },
    series: [{}, { label: 'events/s', stroke: cssVar('--accent-text', '#b35900'), width: 2, fill: 'rgba(0,0,0,0.05)', points: { show: false } }],
  }, [xs, ys], el);
  const stop = follow(el, plot);
  return {
    // Adds `n` events at second `t` (epoch seconds) and slides the window to now.
    push(t, n) {
      const second = Math.floor(t);
      const latest = Math.max(second, Math.floor(Date.now() / 1000));
      while (xs[xs.length - 1] < latest) {
        xs.push(xs[xs.length - 1] + 1);
        ys.push(0);
        xs.shift();
        ys.shift();
      }
      const i = xs.indexOf(second);
      if (i >= 0) ys[i] += n;
      else ys[ys.length - 1] += n;
      plot.setData([xs, ys]);
    },
    destroy: stop,
  };
}
