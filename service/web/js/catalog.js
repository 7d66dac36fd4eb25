// What the server offers, into the state: GET /models (classes, methods, the model's defaults and
// what it knows) and GET /outputs (the job output kinds). The views render them from the state.
import { api } from './api.js';
import {
  CAMS_TEXT, setModels, setModelsFailed, setOutputs, setOutputsFailed, state,
} from './state.js';
import { say, showError } from './status.js';

/** GET /models into the state; false (and the error shown) when it fails. */
export async function loadModels() {
  try {
    setModels(await (await api('/models')).json());
    const { names, classes } = state.models;
    say(`Ready: ${names.join(', ') || 'model'} with ${classes.length} classes.`);
    return true;
  } catch (e) {
    setModelsFailed();
    showError(e);
    return false;
  }
}

/** GET /outputs (public: no key needed) into the state. */
export async function loadOutputs() {
  try {
    setOutputs(await (await api('/outputs')).json());
  } catch (e) {
    setOutputsFailed();
    showError(e);
  }
}

/** How the page names a method: its name, and what it is when the server says (its label, else
 *  its description, else, for a plain threshold, which CAMs it thresholds). */
export function methodText(m) {
  const what = m.label || m.description || (m.plainThreshold ? CAMS_TEXT[m.cams] : '');
  return what ? `${m.name} (${what})` : m.name;
}
