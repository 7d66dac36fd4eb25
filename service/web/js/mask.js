// The mask of the image view: recomputed in the browser on every slider move for the methods that
// are a plain threshold of the CAMs the page holds (GET /models says so: state.browserCams), asked
// of POST /segment for the others;
// the method select, the threshold slider, the legend and the downloads.
import { api, saveBlob } from './api.js';
import { methodText } from './catalog.js';
import { $, el } from './dom.js';
import { paintRle } from './formats.js';
import { rgbCss, VOC } from './palette.js';
import { camsToLabel, maskOverlay, putImage, resizeLabel } from './pixels.js';
import {
  browserCams, CAMS_TEXT, methodsFor, modelField, newServerAbort, setFrameQueued, setLabel, setMaskMethod, setServerLabel,
  setServerTimer, setThreshold, state,
} from './state.js';
import { clearError, say, showError } from './status.js';

// Quiet time after the last slider move before a server method's mask is asked for.
const SERVER_DEBOUNCE_MS = 250;

/** The method select and the slider as the state has them. */
export function drawMaskControls() {
  const { method, threshold } = state.image;
  $('#mask-method').replaceChildren(...methodsFor('sync').map((m) => el('option', {
    value: m.name, text: methodText(m), selected: m.name === method })));
  $('#threshold').value = String(threshold);
  $('#threshold-value').textContent = threshold.toFixed(2);
}

function scheduleMask() {
  $('#threshold-value').textContent = state.image.threshold.toFixed(2);
  if (state.image.frameQueued) return;
  setFrameQueued(true);
  requestAnimationFrame(() => { setFrameQueued(false); renderMask(); });
}

export function renderMask() {
  const { refined, method, threshold, w, h } = state.image;
  if (!refined) return;
  const kind = browserCams(method);
  const note = $('#mask-method-note');
  if (kind) {
    const src = state.image[kind];
    setLabel(camsToLabel(src.cams, src.classes, threshold, w * h, state.image.label), { method, threshold });
    note.textContent = `${method}, threshold ${threshold.toFixed(2)}: computed in the browser from the ${CAMS_TEXT[kind]}.`;
    drawMask(state.image.label);
  } else {
    note.textContent = `${method}, threshold ${threshold.toFixed(2)}: computed by the server.`;
    setServerTimer(setTimeout(() => serverMask(method, threshold), SERVER_DEBOUNCE_MS));
    if (state.image.serverLabel) drawMask(state.image.serverLabel);
  }
}

/** Labels for /segment downloads and server masks: the classes the CAMs were computed for. */
function segmentLabels() {
  const { refined, labelsSent } = state.image;
  const names = refined ? refined.classes.map((c) => state.models.classes[c]) : [];
  return names.length ? names : labelsSent || [];
}

function segmentForm(method, thr, format) {
  const { file } = state.image;
  const f = new FormData();
  f.append('image', file, file.name);
  const labels = segmentLabels();
  if (labels.length) f.append('labels', labels.join(','));
  f.append('method', method);
  if (modelField()) f.append('model', modelField());
  f.append('threshold', String(thr));
  f.append('format', format);
  return f;
}

async function serverMask(method, thr) {
  const key = `${method}@${thr}`;
  if (state.image.serverKey === key && state.image.serverLabel) { drawMask(state.image.serverLabel); return; }
  const abort = newServerAbort();
  say(`Asking the server for the ${method} mask…`);
  try {
    const resp = await api('/segment', { method: 'POST', body: segmentForm(method, thr, 'json'), signal: abort.signal });
    const j = await resp.json();
    if (!state.image.refined) return; // cleared meanwhile
    const full = new Uint8Array(j.width * j.height);
    for (const c of j.classes) paintRle(full, j.width, j.height, c.rle, c.label);
    const label = resizeLabel(full, j.width, j.height, state.image.w, state.image.h);
    setServerLabel(label, key, { method, threshold: thr });
    drawMask(label);
    say(`The ${method} mask is ready.`);
  } catch (e) {
    if (e.name !== 'AbortError') showError(e);
  }
}

function drawMask(label) {
  const { w, h, rgba, refined, threshold } = state.image;
  putImage($('#canvas-mask'), maskOverlay(rgba, label, w, h));
  const counts = new Map();
  for (let i = 0; i < label.length; i++) counts.set(label[i], (counts.get(label[i]) || 0) + 1);
  const n = label.length || 1;
  const entries = [[0, 'background'], ...refined.classes.map((c) => [c + 1, state.models.classes[c]])];
  $('#legend').replaceChildren(...entries.map(([v, name]) => {
    const share = ((counts.get(v) || 0) / n) * 100;
    return el('li', { 'data-label': v },
      el('span', { class: 'swatch', style: { backgroundColor: rgbCss(VOC[v]) }, 'aria-hidden': 'true' }),
      el('span', { text: name }),
      el('span', { class: 'share', text: `${share.toFixed(1)} %` }));
  }));
  const present = entries.filter(([v]) => counts.get(v) && v).map(([, name]) => name);
  $('#canvas-mask').setAttribute('aria-label', `Segmentation mask over the image at threshold ${threshold.toFixed(2)}: ` +
    (present.length ? present.join(', ') : 'background only'));
}

/** The server's own mask (PNG) or COCO RLE (JSON) for what is on screen, saved as a file. */
async function download(format) {
  clearError();
  const { file, method, threshold } = state.image;
  if (!file) return;
  const stem = file.name.replace(/\.[^.]+$/, '') || 'image';
  say(`Preparing the ${format === 'png' ? 'PNG mask' : 'COCO RLE JSON'}…`);
  try {
    const resp = await api('/segment', { method: 'POST', body: segmentForm(method, threshold, format) });
    const blob = await resp.blob();
    const name = `${stem}-${method}-t${threshold.toFixed(2)}${format === 'png' ? '-mask.png' : '-coco.json'}`;
    saveBlob(blob, name);
    say(`Downloaded ${name}.`);
  } catch (e) { showError(e); say(''); }
}

export function initMask() {
  drawMaskControls(); // the default threshold until GET /models names the model's own
  const slider = $('#threshold');
  slider.addEventListener('input', () => { setThreshold(Number(slider.value)); scheduleMask(); });
  const select = $('#mask-method');
  select.addEventListener('change', () => { setMaskMethod(select.value); scheduleMask(); });
  $('#download-png').addEventListener('click', () => download('png'));
  $('#download-json').addEventListener('click', () => download('json'));
}
