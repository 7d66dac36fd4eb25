// The status line (polite announcements) and the error box (alerts).
import { $ } from './dom.js';

export function say(msg) { $('#status').textContent = msg; }

/** Show `err` (a message or an Error); a 401 opens the API key box and says so. */
export function showError(err) {
  const box = $('#error');
  const msg = typeof err === 'string' ? err : (err && err.message) || String(err);
  box.textContent = msg;
  box.hidden = false;
  if (err && err.status === 401) {
    $('#apikey-box').open = true;
    box.textContent = `${msg}. Enter the API key above.`;
  }
}

export function clearError() {
  const box = $('#error');
  box.hidden = true;
  box.textContent = '';
}
