// Train view: upload an archive (images + labels.csv, optional SegmentationClass/ ground truth) to
// POST /trainings, follow each training by polling GET /trainings (stage, epoch, step, loss, ETA),
// cancel it, and promote the version it published (POST /trainings/{id}/promote; when the server
// refuses, e.g. the new version scored worse on the held-out images, its reason is shown and the
// page offers to promote anyway: force=true). A promotion reloads GET /models (the model picker).
import { api } from './api.js';
import { loadModels } from './catalog.js';
import { $, currentView, el, fillTable } from './dom.js';
import {
  on, setPromoteRefusal, setTraining, setTrainings, setTrainingsTimer, state,
} from './state.js';
import { clearError, say, showError } from './status.js';

const POLL_MS = 1000;
const RECIPE_FIELDS = { backbone: String, epochs: Number, batch_size: Number, crop: Number };
export const isActive = (t) => t.state === 'queued' || t.state === 'running';
const short = (id) => id.slice(0, 8);

// ───────────────────────── the form ─────────────────────────
/** The base models a training may fine-tune from: none, or a version of the repository. */
function drawBaseModels() {
  const options = [el('option', { value: '', text: 'none (train from the backbone)' })];
  for (const entry of state.models.repository) {
    for (const v of entry.versions || []) {
      if (v.state !== 'refused') options.push(el('option', { value: `${entry.name}:${v.version}`, text: `${entry.name}:${v.version}` }));
    }
  }
  $('#train-base').replaceChildren(...options);
}

/** The multipart body of POST /trainings from the form, or an error message (and the control to fix). */
function trainingRequest() {
  const fields = new FormData($('#train-form'));
  const archive = fields.get('archive');
  if (!archive || !archive.name) return { error: 'Choose an archive (zip or tar) of images with a labels.csv.', focus: '#train-archive' };
  const name = String(fields.get('name') || '').trim();
  if (!name) return { error: 'Name the model the training publishes.', focus: '#train-name' };
  const f = new FormData();
  f.append('archive', archive, archive.name);
  f.append('name', name);
  for (const key of ['classes', 'stages', 'base_model', 'budget_s']) {
    const v = String(fields.get(key) || '').trim();
    if (v) f.append(key, v);
  }
  const recipe = {};
  for (const [key, cast] of Object.entries(RECIPE_FIELDS)) {
    const v = String(fields.get(key) || '').trim();
    if (v) recipe[key] = cast(v);
  }
  if (Object.keys(recipe).length) f.append('recipe', JSON.stringify(recipe));
  f.append('promote', fields.get('promote') ? 'true' : 'false');
  return { body: f, archive, name };
}

async function submitTraining(ev) {
  ev.preventDefault();
  clearError();
  const { body, archive, name, error, focus } = trainingRequest();
  if (error) { showError(error); if (focus) $(focus).focus(); return; }
  const button = $('#train-submit');
  button.disabled = true;
  say(`Uploading ${archive.name}…`);
  try {
    const t = await (await api('/trainings', { method: 'POST', body })).json();
    setTraining(t);
    say(`Training ${short(t.id)} of ${name} submitted.`);
    $('#train-form').reset();
    await refreshTrainings();
  } catch (e) { showError(e); say(''); } finally { button.disabled = false; }
}

// ───────────────────────── the list ─────────────────────────
/** GET /trainings into the state, drawn; polled while one is queued or running. */
export async function refreshTrainings() {
  setTrainingsTimer(null);
  const wasActive = new Set([...state.trainings.list.values()].filter(isActive).map((t) => t.id));
  try {
    setTrainings((await (await api('/trainings')).json()).trainings);
    drawTrainings();
  } catch (e) {
    showError(e);
  }
  const list = [...state.trainings.list.values()];
  // a training that just published a version: the model picker and the base models list it
  for (const t of list) if (wasActive.has(t.id) && !isActive(t) && t.model) reloadModelsUntil(t.model, t.promoted);
  if (list.some(isActive) && document.visibilityState !== 'hidden') {
    setTrainingsTimer(setTimeout(refreshTrainings, POLL_MS));
  }
}

/** What a training is doing, in words (the Corrections view shows its fits with it too). */
export function progressText(t) {
  if (t.state === 'queued') return 'queued';
  const parts = [t.stage, t.epoch != null && t.epochs ? `epoch ${t.epoch}/${t.epochs}` : null,
    t.step != null && t.steps ? `step ${t.step}/${t.steps}` : null,
    t.loss != null ? `loss ${Number(t.loss).toFixed(4)}` : null,
    t.eta_s != null && isActive(t) ? `about ${Math.ceil(t.eta_s)} s left` : null].filter(Boolean);
  return parts.join(' · ') || t.state;
}

/** The held-out comparison: the new version's mIoU and the promoted one's on the same images. */
export function evaluationText(t) {
  const ev = t.evaluation;
  if (!ev) return '';
  const fmt = (x) => (x == null ? '—' : `${Number(x).toFixed(1)} %`);
  const against = ev.promoted_ref ? `, ${ev.promoted_ref} ${fmt(ev.promoted)}` : '';
  return `held-out mIoU: new ${fmt(ev.new)}${against}${ev.note ? ` (${ev.note})` : ''}`;
}

/** GET /models again until its repository lists `ref` (NAME:VERSION), as promoted if asked: the
 *  server sees a new or promoted version at its next look at the repository (SEAM_MODELS_POLL_S). */
async function reloadModelsUntil(ref, promoted, tries = 20) {
  const [name, v] = ref.split(':');
  for (let i = 0; i < tries; i++) {
    if (await loadModels()) {
      const entry = state.models.repository.find((e) => e.name === name);
      const listed = entry && (entry.versions || []).some((x) => x.version === Number(v));
      if (listed && (!promoted || entry.promoted === Number(v))) return;
    }
    await new Promise((resolve) => { setTimeout(resolve, 500); });
  }
}

function actions(t) {
  const box = el('span', { class: 'actions' });
  if (isActive(t)) box.append(el('button', { type: 'button', text: 'Cancel', onclick: () => cancelTraining(t.id) }));
  if (t.state === 'succeeded' && t.model && !t.promoted) {
    const refusal = state.trainings.refusals.get(t.id);
    box.append(el('button', { type: 'button', 'data-action': 'promote', text: `Promote ${t.model}`,
      onclick: () => promoteTraining(t.id, false) }));
    if (refusal) {
      box.append(el('span', { class: 'refusal', role: 'note', text: refusal }),
        el('button', { type: 'button', 'data-action': 'force', text: 'Promote anyway',
          onclick: () => promoteTraining(t.id, true) }));
    }
  }
  return box;
}

function trainingRow(t) {
  const model = t.model ? `${t.model}${t.promoted ? ' (promoted)' : ''}` : (t.name || '');
  return el('tr', { 'data-training': t.id, 'data-state': t.state },
    el('td', {}, el('code', { text: short(t.id) }), el('div', { class: 'when', text: model })),
    el('td', { 'data-field': 'state', text: t.state }),
    el('td', {},
      el('div', { 'data-field': 'progress', text: progressText(t) }),
      el('div', { class: 'when', 'data-field': 'evaluation', text: evaluationText(t) }),
      t.error ? el('div', { class: 'error-text', text: t.error }) : null),
    el('td', {}, actions(t)));
}

function drawTrainings() {
  const list = [...state.trainings.list.values()];
  fillTable('trainings', list.map(trainingRow));
}

async function cancelTraining(id) {
  clearError();
  try {
    setTraining(await (await api(`/trainings/${id}/cancel`, { method: 'POST' })).json());
    drawTrainings();
    await refreshTrainings();
  } catch (e) { showError(e); }
}

/** POST /trainings/{id}/promote (force: even when the server would refuse); a refusal's reason
 *  is kept and shown beside a "Promote anyway" button. */
async function promoteTraining(id, force) {
  clearError();
  try {
    const t = await (await api(`/trainings/${id}/promote${force ? '?force=true' : ''}`, { method: 'POST' })).json();
    setPromoteRefusal(id, null);
    setTraining(t);
    await reloadModelsUntil(t.model, true);
    say(`${t.model} is promoted: requests without a version get it.`);
  } catch (e) {
    if (e.status !== 409) { showError(e); return; }
    setPromoteRefusal(id, e.message);
    say('');
  }
  drawTrainings();
}

export function initTrainingsView() {
  $('#train-form').addEventListener('submit', submitTraining);
  $('#trainings-refresh').addEventListener('click', () => { clearError(); refreshTrainings(); });
  on('models', drawBaseModels);
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible' && currentView() === 'train') refreshTrainings();
  });
}
