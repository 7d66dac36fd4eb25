// `api()`: every request to the service (with the API key from the state), and saving blobs.
import { el } from './dom.js';
import { state } from './state.js';

export class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

/** fetch() with the API key; non-2xx -> ApiError carrying the server's message. */
export async function api(path, { method = 'GET', body, signal } = {}) {
  const headers = {};
  if (state.apiKey) headers['X-API-Key'] = state.apiKey;
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
