// Branding: the tenant's colours as CSS custom properties, its logo and name, and a readable
// foreground for any colour it picks (WCAG 2.x relative luminance and contrast ratio).

export const DEFAULT_BRANDING = { primary_color: '#1f4e79', accent_color: '#b35900', logo_url: null };

export function parseHex(color) {
  const m = /^#([0-9a-f]{6})$/i.exec(color || '');
  if (!m) return null;
  const n = parseInt(m[1], 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

export function luminance([r, g, b]) {
  const lin = (c) => {
    const s = c / 255;
    return s <= 0.04045 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
  };
  return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
}

export function contrast(a, b) {
  const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
  return (hi + 0.05) / (lo + 0.05);
}

// Black or white, whichever reads better on `color`.
export function readableOn(color) {
  const rgb = parseHex(color);
  if (!rgb) return '#ffffff';
  return contrast(rgb, [0, 0, 0]) >= contrast(rgb, [255, 255, 255]) ? '#000000' : '#ffffff';
}

// The colour darkened (or lightened) until it reaches `ratio` against the page background
// (white), for text and links in the brand colour on the page itself.
export function textOnWhite(color, ratio = 4.5) {
  let rgb = parseHex(color);
  if (!rgb) return '#1f4e79';
  for (let i = 0; i < 40 && contrast(rgb, [255, 255, 255]) < ratio; i += 1) {
    rgb = rgb.map((c) => Math.max(0, Math.round(c * 0.9)));
  }
  return `#${rgb.map((c) => c.toString(16).padStart(2, '0')).join('')}`;
}

let tenantName = '';
let pageName = '';

function updateTitle() {
  document.title = [pageName, tenantName || 'tenantry'].filter(Boolean).join(' · ');
}

export function setPageTitle(name) {
  pageName = name;
  updateTitle();
}

export function setTenantName(name) {
  tenantName = name || '';
  for (const el of document.querySelectorAll('[data-brand-name]')) el.textContent = tenantName || 'tenantry';
  updateTitle();
}

// Applies the branding to the whole document: every page reads these properties.
export function applyBranding(branding) {
  const b = { ...DEFAULT_BRANDING, ...(branding || {}) };
  const primary = parseHex(b.primary_color) ? b.primary_color : DEFAULT_BRANDING.primary_color;
  const accent = parseHex(b.accent_color) ? b.accent_color : DEFAULT_BRANDING.accent_color;
  const root = document.documentElement.style;
  root.setProperty('--primary', primary);
  root.setProperty('--on-primary', readableOn(primary));
  root.setProperty('--primary-text', textOnWhite(primary));
  root.setProperty('--accent', accent);
  root.setProperty('--on-accent', readableOn(accent));
  root.setProperty('--accent-text', textOnWhite(accent));
  for (const img of document.querySelectorAll('img[data-brand-logo]')) {
    if (b.logo_url) {
      img.src = b.logo_url;
      img.hidden = false;
    } else {
      img.removeAttribute('src');
      img.hidden = true;
    }
  }
}
