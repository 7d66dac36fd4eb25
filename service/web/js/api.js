// Status line, errors, the API key (kept in localStorage) and `api()`: every request to the service.
import { $, el } from './dom.js';

export const KEY_STORAGE = 'seam.apiKey';

export const statusEl = $('#status');
export const errorEl = $('#error');
export function say(msg) { statusEl.textContent = msg; }
export function showError(err) {
  const msg = typeof err === 'string' ? err : (err && err.message) || String(err);
  errorEl.textContent = msg;
  errorEl.hidden = false;
  if (err && err.status === 401) {
    const box = $('#apikey-box');
    box.open = true;
    errorEl.textContent = `${msg}. Enter the API key above.`;
  }
}
export function clearError() { errorEl.hidden = true; errorEl.textContent = ''; }

export function apiKey() {
  try { return localStorage.getItem(KEY_STORAGE) || ''; } catch { return ''; }
}
export function setApiKey(key) {
  try {
    if (key) localStorage.setItem(KEY_STORAGE, key); else localStorage.removeItem(KEY_STORAGE);
  } catch { /* storage disabled: the key lives for this page only */ }
  sessionKey = key;
  $('#apikey-state').textContent = key ? '(set)' : '(none)';
}
export let sessionKey = apiKey();

export class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

/** fetch() with the API key; non-2xx -> ApiError carrying the server's message. */
export async function api(path, { method = 'GET', body, signal } = {}) {
  const headers = {};
  const key = sessionKey || apiKey();
  if (key) headers['X-API-Key'] = key;
  let resp;
  try {
    resp = await fetch(path, { method, body, headers, signal, cache: 'no-store' });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'network', `Could not reach the server (${e.message})`);
  }
  if (!resp.ok) {
    let code = 'http_error', message = `${resp.status} ${resp.statusText}`;
    try {
      const j = await resp.json();
      if (j && j.error) { code = j.error.code || code; message = j.error.message || message; }
    } catch { /* not JSON */ }
    throw new ApiError(resp.status, code, `${method} ${path.split('?')[0]}: ${message}`);
  }
  return resp;
}

export function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const a = el('a', { href: url, download: filename, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 30_000);
}
