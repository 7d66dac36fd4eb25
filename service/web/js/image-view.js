// Image view: CAMs fetched once as npz at the working size, masks recomputed on every slider move,
// /segment for rw and deeplab.
import { api, clearError, saveBlob, say, showError } from './api.js';
import { $, el } from './dom.js';
import { paintRle, parseCamNpz } from './formats.js';
import { loadModels, models } from './models.js';
import { rgbCss, VOC } from './palette.js';
import {
  camsToLabel, decodeImage, displaySize, heatmapImage, maskOverlay, putImage, resizeBilinear, resizeLabel,
} from './pixels.js';

export const CLIENT_METHODS = { cam: 'raw', pcm: 'refined' }; // methods re-thresholded in the browser
// Longest side the page draws results at. The maps come at the model's working size (small),
// are resampled here to this grid, and downloads still come from the server at full size.
export const DISPLAY_SIDE = 1024;

export const img = { file: null, w: 0, h: 0, imageW: 0, imageH: 0, rgba: null, raw: null, refined: null, label: null,
              serverLabel: null, serverKey: '', labelsSent: null, busy: false, seq: 0, timing: null };
export let renderQueued = false;
export let serverTimer = null;
export let serverAbort = null;

export function checkedClasses() {
  return Array.from(document.querySelectorAll('#class-list input:checked'), (i) => i.value);
}

export function threshold() { return Number($('#threshold').value); }

/** Forget and hide the shown results: a new image, or an error, never shows under the
 *  previous image's heat maps and mask. */
export function clearImageResults() {
  Object.assign(img, { w: 0, h: 0, imageW: 0, imageH: 0, rgba: null, raw: null, refined: null, label: null,
                       labelSource: null, serverLabel: null, serverKey: '', timing: null });
  clearTimeout(serverTimer);
  if (serverAbort) serverAbort.abort();
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

export async function computeImage() {
  clearError();
  const file = img.file;
  if (!file) { showError('Choose an image first.'); $('#image-input').focus(); return; }
  if (!models.loaded && !(await loadModels())) return;
  const seq = ++img.seq;
  clearImageResults();
  const labels = checkedClasses();
  const form = () => {
    const f = new FormData();
    f.append('image', file, file.name);
    if (labels.length) f.append('labels', labels.join(','));
    f.append('format', 'npz');
    f.append('size', 'working'); // no full-resolution float32 maps: a photo's would be tens of MB
    return f;
  };
  const button = $('#image-submit');
  button.disabled = true;
  say(`Computing the CAMs of ${file.name}…`);
  try {
    const t0 = performance.now();
    const [rawBuf, refBuf] = await Promise.all([
      api('/cam', { method: 'POST', body: form() }).then((r) => r.arrayBuffer()),
      api('/cam/refined', { method: 'POST', body: form() }).then((r) => r.arrayBuffer()),
    ]);
    const tServer = performance.now();
    const [raw, refined] = await Promise.all([parseCamNpz(rawBuf, models.classes), parseCamNpz(refBuf, models.classes)]);
    if (seq !== img.seq) return; // a newer run started
    let iw = refined.imageW || raw.imageW, ih = refined.imageH || raw.imageH;
    if (!iw || !ih) { // an old server without the image's size and no map: ask the browser
      const bmp = await createImageBitmap(file, { imageOrientation: 'from-image' }).catch(() => null);
      if (!bmp) throw new Error(`No class found in ${file.name}, and this browser cannot display it.`);
      iw = bmp.width; ih = bmp.height;
      if (bmp.close) bmp.close();
    }
    const [w, h] = displaySize(iw, ih, DISPLAY_SIDE);
    const pixels = await decodeImage(file, w, h, iw, ih);
    if (seq !== img.seq) return;
    Object.assign(img, { w, h, imageW: iw, imageH: ih, rgba: pixels.rgba, raw: toDisplay(raw, w, h),
                         refined: toDisplay(refined, w, h), labelsSent: labels, label: null, serverLabel: null,
                         serverKey: '' });
    renderImageResults(pixels.decoded);
    const ms = Math.round(performance.now() - t0);
    img.timing = { totalMs: ms, serverMs: Math.round(tServer - t0), bytes: rawBuf.byteLength + refBuf.byteLength };
    const names = refined.classes.map((c) => models.classes[c]);
    const shown = w === iw ? '' : ` (shown at ${w}×${h}; downloads are ${iw}×${ih})`;
    const cls = models.classThreshold == null ? '' : ` ${models.classThreshold}`;
    say(names.length
      ? `CAMs of ${file.name} ready in ${ms} ms: ${names.join(', ')}${shown}. Move the threshold slider to re-threshold the mask.`
      : `No class found in ${file.name} (none scored${cls ? ` at least${cls}` : ' high enough'} with a non-empty map). ` +
        'Tick the classes you expect and compute again.');
  } catch (e) {
    if (seq === img.seq) { clearImageResults(); showError(e); }
    say('');
  } finally {
    if (seq === img.seq) button.disabled = false;
  }
}

export function renderImageResults(decoded) {
  const { w, h, rgba } = img;
  $('#image-results').hidden = false;
  const imgCanvas = $('#canvas-image');
  putImage(imgCanvas, new ImageData(new Uint8ClampedArray(rgba), w, h));
  imgCanvas.setAttribute('aria-label', `The uploaded image ${img.file.name}, ${w} by ${h} pixels` +
    (decoded ? '' : ' (this browser cannot display this format; grey stands in for it)'));

  const rows = $('#cam-rows');
  rows.replaceChildren();
  const ref = img.refined, raw = img.raw;
  if (!ref.classes.length) rows.append(el('p', { class: 'muted', text: 'No class to show.' }));
  ref.classes.forEach((c, k) => {
    const name = models.classes[c];
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
    rows.append(el('div', { class: 'cam-row' }, head,
      figure('raw', rk >= 0 ? raw.cams[rk] : null), figure('refined', ref.cams[k])));
  });
  $('#threshold-value').textContent = threshold().toFixed(2);
  renderMask(); // now, not on the next frame: the results are complete when computeImage returns
}

export function scheduleMask() {
  $('#threshold-value').textContent = threshold().toFixed(2);
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => { renderQueued = false; renderMask(); });
}

export function renderMask() {
  if (!img.refined) return;
  const method = $('#mask-method').value || 'pcm';
  const kind = CLIENT_METHODS[method];
  const { w, h } = img;
  const note = $('#mask-method-note');
  if (kind) {
    const src = img[kind];
    img.label = camsToLabel(src.cams, src.classes, threshold(), w * h, img.label);
    img.labelSource = { method, threshold: threshold() };
    note.textContent = `${method}, threshold ${threshold().toFixed(2)}: computed in the browser from the ${kind === 'raw' ? 'raw' : 'PCM-refined'} CAMs.`;
    drawMask(img.label);
  } else {
    note.textContent = `${method}, threshold ${threshold().toFixed(2)}: computed by the server.`;
    clearTimeout(serverTimer);
    serverTimer = setTimeout(() => serverMask(method, threshold()), 250);
    if (img.serverLabel) drawMask(img.serverLabel);
  }
}

/** Labels for /segment downloads and server masks: the classes the CAMs were computed for. */
export function segmentLabels() {
  const names = img.refined ? img.refined.classes.map((c) => models.classes[c]) : [];
  return names.length ? names : img.labelsSent || [];
}

export function segmentForm(method, thr, format) {
  const f = new FormData();
  f.append('image', img.file, img.file.name);
  const labels = segmentLabels();
  if (labels.length) f.append('labels', labels.join(','));
  f.append('method', method);
  f.append('threshold', String(thr));
  f.append('format', format);
  return f;
}

export async function serverMask(method, thr) {
  const key = `${method}@${thr}`;
  if (img.serverKey === key && img.serverLabel) { drawMask(img.serverLabel); return; }
  if (serverAbort) serverAbort.abort();
  serverAbort = new AbortController();
  say(`Asking the server for the ${method} mask…`);
  try {
    const j = await (await api('/segment', { method: 'POST', body: segmentForm(method, thr, 'json'), signal: serverAbort.signal })).json();
    if (!img.refined) return; // cleared meanwhile
    const full = new Uint8Array(j.width * j.height);
    for (const c of j.classes) paintRle(full, j.width, j.height, c.rle, c.label);
    const label = resizeLabel(full, j.width, j.height, img.w, img.h);
    img.serverLabel = label;
    img.serverKey = key;
    img.label = label;
    img.labelSource = { method, threshold: thr };
    drawMask(label);
    say(`The ${method} mask is ready.`);
  } catch (e) {
    if (e.name !== 'AbortError') showError(e);
  }
}

export function drawMask(label) {
  const { w, h } = img;
  putImage($('#canvas-mask'), maskOverlay(img.rgba, label, w, h));
  const counts = new Map();
  for (let i = 0; i < label.length; i++) counts.set(label[i], (counts.get(label[i]) || 0) + 1);
  const n = label.length || 1;
  const entries = [[0, 'background'], ...img.refined.classes.map((c) => [c + 1, models.classes[c]])];
  const legend = $('#legend');
  legend.replaceChildren(...entries.map(([v, name]) => {
    const share = ((counts.get(v) || 0) / n) * 100;
    return el('li', { 'data-label': v },
      el('span', { class: 'swatch', style: { backgroundColor: rgbCss(VOC[v]) }, 'aria-hidden': 'true' }),
      el('span', { text: name }),
      el('span', { class: 'share', text: `${share.toFixed(1)} %` }));
  }));
  const present = entries.filter(([v]) => counts.get(v) && v).map(([, name]) => name);
  $('#canvas-mask').setAttribute('aria-label', `Segmentation mask over the image at threshold ${threshold().toFixed(2)}: ` +
    (present.length ? present.join(', ') : 'background only'));
}

export async function download(format) {
  clearError();
  if (!img.file) return;
  const method = $('#mask-method').value || 'pcm';
  const thr = $('#threshold').value;
  const stem = img.file.name.replace(/\.[^.]+$/, '') || 'image';
  say(`Preparing the ${format === 'png' ? 'PNG mask' : 'COCO RLE JSON'}…`);
  try {
    const resp = await api('/segment', { method: 'POST', body: segmentForm(method, thr, format) });
    const blob = await resp.blob();
    const name = `${stem}-${method}-t${Number(thr).toFixed(2)}${format === 'png' ? '-mask.png' : '-coco.json'}`;
    saveBlob(blob, name);
    say(`Downloaded ${name}.`);
  } catch (e) { showError(e); say(''); }
}

export function setImageFile(file) {
  if (!file) return;
  if (file.type && !file.type.startsWith('image/')) {
    img.seq++; // a request still running for the previous image must not draw
    clearImageResults();
    showError(`${file.name} is not an image.`);
    return;
  }
  img.file = file;
  computeImage();
}

export function initImageView() {
  const input = $('#image-input');
  input.addEventListener('change', () => setImageFile(input.files[0]));
  $('#image-form').addEventListener('submit', (ev) => { ev.preventDefault(); img.file = input.files[0] || img.file; computeImage(); });
  $('#class-clear').addEventListener('click', () => {
    document.querySelectorAll('#class-list input:checked').forEach((i) => { i.checked = false; });
  });
  const zone = $('#view-image');
  zone.addEventListener('dragover', (ev) => { ev.preventDefault(); $('#drop-zone').classList.add('over'); });
  zone.addEventListener('dragleave', (ev) => { if (!zone.contains(ev.relatedTarget)) $('#drop-zone').classList.remove('over'); });
  zone.addEventListener('drop', (ev) => {
    ev.preventDefault();
    $('#drop-zone').classList.remove('over');
    const file = ev.dataTransfer && ev.dataTransfer.files[0];
    if (!file) return;
    try { const dt = new DataTransfer(); dt.items.add(file); input.files = dt.files; } catch { /* keep img.file */ }
    setImageFile(file);
  });
  $('#threshold').addEventListener('input', scheduleMask);
  $('#mask-method').addEventListener('change', scheduleMask);
  $('#download-png').addEventListener('click', () => download('png'));
  $('#download-json').addEventListener('click', () => download('json'));
}
