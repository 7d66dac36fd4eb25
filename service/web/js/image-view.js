// Image view: the image form (what the model knows, the class list), CAMs fetched once as npz at
// the working size and drawn as heat maps; the mask and its controls are mask.js's.
import { api } from './api.js';
import { loadModels } from './catalog.js';
import { $, el } from './dom.js';
import { parseCamNpz } from './formats.js';
import { drawMaskControls, renderMask } from './mask.js';
import { rgbCss, VOC } from './palette.js';
import { decodeImage, displaySize, heatmapImage, putImage, resizeBilinear } from './pixels.js';
import {
  clearImageResults, clearPickedClasses, isCurrentRun, modelField, nextImageRun, on, setClassPicked, setImageFile,
  setImageResults, setImageTiming, state,
} from './state.js';
import { clearError, say, showError } from './status.js';

// Longest side the page draws results at. The maps come at the model's working size (small),
// are resampled here to this grid, and downloads still come from the server at full size.
export const DISPLAY_SIDE = 1024;

/** What the model knows, so that a photo from outside its domain is not read as one of its
 *  classes unawares (a cat is not a "ring"). */
function drawDescription() {
  const { names, classes, description } = state.models;
  const who = names.length ? names.join(', ') : 'The model';
  const knows = `It knows only these classes: ${classes.join(', ')}; any other image still gets the closest of them.`;
  $('#model-description').textContent = description
    ? `${who}: ${description}. ${knows}`
    : `${who} does not describe what it was trained on. ${knows}`;
}

function drawClassList() {
  const list = $('#class-list');
  if (!state.models.loaded) {
    if (state.models.failed) list.textContent = 'Classes unavailable.';
    return;
  }
  list.replaceChildren(...state.models.classes.map((name, i) => {
    const id = `class-${i}`;
    return el('label', { for: id },
      el('input', { type: 'checkbox', id, name: 'classes', value: name, checked: state.image.picked.includes(name) }),
      el('span', { class: 'swatch', style: { backgroundColor: rgbCss(VOC[i + 1]) }, 'aria-hidden': 'true' }),
      name);
  }));
}

function drawModels() {
  if (state.models.loaded) drawDescription();
  drawClassList();
  drawMaskControls();
}

/** Forget and hide the shown results: a new image, or an error, never shows under the
 *  previous image's heat maps and mask. */
function hideImageResults() {
  clearImageResults();
  $('#image-results').hidden = true;
  $('#cam-rows').replaceChildren();
  $('#legend').replaceChildren();
  $('#mask-method-note').textContent = '';
  for (const c of [$('#canvas-image'), $('#canvas-mask')]) { c.width = 0; c.height = 0; }
}

/** Working-size maps of a parsed npz resampled to the page's w x h grid. */
function toDisplay(parsed, w, h) {
  const cams = parsed.cams.map((c) => resizeBilinear(c, parsed.w, parsed.h, w, h));
  return { ...parsed, cams, w, h };
}

/** POST /cam and /cam/refined with the same form, as npz at the working size. */
async function fetchCams(file, labels) {
  const form = () => {
    const f = new FormData();
    f.append('image', file, file.name);
    if (labels.length) f.append('labels', labels.join(','));
    if (modelField()) f.append('model', modelField());
    f.append('format', 'npz');
    f.append('size', 'working'); // no full-resolution float32 maps: a photo's would be tens of MB
    return f;
  };
  const [rawBuf, refBuf] = await Promise.all([
    api('/cam', { method: 'POST', body: form() }).then((r) => r.arrayBuffer()),
    api('/cam/refined', { method: 'POST', body: form() }).then((r) => r.arrayBuffer()),
  ]);
  return { rawBuf, refBuf, bytes: rawBuf.byteLength + refBuf.byteLength };
}

/** The image's own size: from the npz, else (an old server, no map) from the browser. */
async function imageSize(file, raw, refined) {
  const iw = refined.imageW || raw.imageW, ih = refined.imageH || raw.imageH;
  if (iw && ih) return [iw, ih];
  const bmp = await createImageBitmap(file, { imageOrientation: 'from-image' }).catch(() => null);
  if (!bmp) throw new Error(`No class found in ${file.name}, and this browser cannot display it.`);
  const size = [bmp.width, bmp.height];
  if (bmp.close) bmp.close();
  return size;
}

function sayComputed(file, ms) {
  const { w, imageW: iw, imageH: ih, h, refined } = state.image;
  const names = refined.classes.map((c) => state.models.classes[c]);
  const shown = w === iw ? '' : ` (shown at ${w}×${h}; downloads are ${iw}×${ih})`;
  const cls = state.models.classThreshold == null ? '' : ` ${state.models.classThreshold}`;
  say(names.length
    ? `CAMs of ${file.name} ready in ${ms} ms: ${names.join(', ')}${shown}. Move the threshold slider to re-threshold the mask.`
    : `No class found in ${file.name} (none scored${cls ? ` at least${cls}` : ' high enough'} with a non-empty map). ` +
      'Tick the classes you expect and compute again.');
}

export async function computeImage() {
  clearError();
  const file = state.image.file;
  if (!file) { showError('Choose an image first.'); $('#image-input').focus(); return; }
  if (!state.models.loaded && !(await loadModels())) return;
  const seq = nextImageRun();
  hideImageResults();
  const labels = state.image.picked.slice();
  const button = $('#image-submit');
  button.disabled = true;
  say(`Computing the CAMs of ${file.name}…`);
  try {
    const t0 = performance.now();
    const { rawBuf, refBuf, bytes } = await fetchCams(file, labels);
    const tServer = performance.now();
    const classes = state.models.classes;
    const [raw, refined] = await Promise.all([parseCamNpz(rawBuf, classes), parseCamNpz(refBuf, classes)]);
    if (!isCurrentRun(seq)) return; // a newer run started
    const [iw, ih] = await imageSize(file, raw, refined);
    const [w, h] = displaySize(iw, ih, DISPLAY_SIDE);
    const pixels = await decodeImage(file, w, h, iw, ih);
    if (!isCurrentRun(seq)) return;
    setImageResults({ w, h, imageW: iw, imageH: ih, rgba: pixels.rgba, raw: toDisplay(raw, w, h),
                      refined: toDisplay(refined, w, h), labelsSent: labels });
    drawImageResults(pixels.decoded);
    const ms = Math.round(performance.now() - t0);
    setImageTiming({ totalMs: ms, serverMs: Math.round(tServer - t0), bytes });
    sayComputed(file, ms);
  } catch (e) {
    if (isCurrentRun(seq)) { hideImageResults(); showError(e); }
    say('');
  } finally {
    if (isCurrentRun(seq)) button.disabled = false;
  }
}

/** One class's row: its name and score, the raw and the refined CAM as heat maps. */
function camRow(c, k) {
  const { raw, refined: ref, rgba, w, h } = state.image;
  const name = state.models.classes[c];
  const rk = raw.classes.indexOf(c);
  const score = ref.scores.length > c ? ref.scores[c] : null;
  const head = el('div', {},
    el('h4', {}, el('span', { class: 'swatch', style: { backgroundColor: rgbCss(VOC[c + 1]) }, 'aria-hidden': 'true' }), name),
    el('p', { class: 'stats', text: score === null ? '' : `score ${score.toFixed(3)}` }));
  const figure = (kind, cam) => {
    const canvas = el('canvas', { role: 'img', 'data-class': name, 'data-kind': kind,
      'aria-label': `${kind === 'raw' ? 'Raw CAM' : 'PCM-refined CAM'} of ${name} as a heat map over the image` });
    if (cam) putImage(canvas, heatmapImage(rgba, cam, w, h));
    return el('figure', {}, el('figcaption', { text: kind === 'raw' ? 'Raw CAM' : 'PCM-refined CAM' }),
      cam ? canvas : el('p', { class: 'muted', text: 'not returned' }));
  };
  return el('div', { class: 'cam-row' }, head, figure('raw', rk >= 0 ? raw.cams[rk] : null), figure('refined', ref.cams[k]));
}

function drawImageResults(decoded) {
  const { w, h, rgba, file, refined } = state.image;
  $('#image-results').hidden = false;
  const imgCanvas = $('#canvas-image');
  putImage(imgCanvas, new ImageData(new Uint8ClampedArray(rgba), w, h));
  imgCanvas.setAttribute('aria-label', `The uploaded image ${file.name}, ${w} by ${h} pixels` +
    (decoded ? '' : ' (this browser cannot display this format; grey stands in for it)'));
  const rows = $('#cam-rows');
  rows.replaceChildren(...refined.classes.map(camRow));
  if (!refined.classes.length) rows.append(el('p', { class: 'muted', text: 'No class to show.' }));
  renderMask(); // now, not on the next frame: the results are complete when computeImage returns
}

function chooseImage(file) {
  if (!file) return;
  if (file.type && !file.type.startsWith('image/')) {
    nextImageRun(); // a request still running for the previous image must not draw
    hideImageResults();
    showError(`${file.name} is not an image.`);
    return;
  }
  setImageFile(file);
  computeImage();
}

function initDropZone(input) {
  const zone = $('#view-image');
  zone.addEventListener('dragover', (ev) => { ev.preventDefault(); $('#drop-zone').classList.add('over'); });
  zone.addEventListener('dragleave', (ev) => { if (!zone.contains(ev.relatedTarget)) $('#drop-zone').classList.remove('over'); });
  zone.addEventListener('drop', (ev) => {
    ev.preventDefault();
    $('#drop-zone').classList.remove('over');
    const file = ev.dataTransfer && ev.dataTransfer.files[0];
    if (!file) return;
    try { const dt = new DataTransfer(); dt.items.add(file); input.files = dt.files; } catch { /* the state has it */ }
    chooseImage(file);
  });
}

/** Wire the image view's controls to the state; it draws whenever the models change. */
export function initImageView() {
  const input = $('#image-input');
  input.addEventListener('change', () => chooseImage(input.files[0]));
  $('#image-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    if (input.files[0]) setImageFile(input.files[0]);
    computeImage();
  });
  $('#class-list').addEventListener('change', (ev) => setClassPicked(ev.target.value, ev.target.checked));
  $('#class-clear').addEventListener('click', () => { clearPickedClasses(); drawClassList(); });
  initDropZone(input);
  on('models', drawModels);
  // another model: the shown maps are the previous model's, compute them again
  on('modelChoice', () => { if (state.image.file) computeImage(); });
}
