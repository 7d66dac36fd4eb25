/* SEAM segmentation page. Plain JavaScript, no build step, no dependencies.
 *
 * Image view: the raw and the PCM-refined CAMs are fetched once as npz (float32), the
 * heat maps are drawn here, and the mask is recomputed here on every slider move with
 * the server's rule  label = argmax([threshold, cam_1 .. cam_K])  (ties -> the first,
 * threshold cast to float32 like numpy does), so re-thresholding needs no new upload.
 * Methods that are not a plain threshold of those CAMs (rw, deeplab) ask /segment.
 *
 * Jobs view: submit an archive, poll the jobs, cancel, download the results zip, and
 * show a gallery of the overlays read from that zip.
 */
'use strict';

(() => {
  const KEY_STORAGE = 'seam.apiKey';
  const CLIENT_METHODS = { cam: 'raw', pcm: 'refined' }; // methods re-thresholded in the browser
  const POLL_MS = 1000;
  const GALLERY_MAX = 100;

  const $ = (sel, root = document) => root.querySelector(sel);
  const el = (tag, attrs = {}, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') node.className = v;
      else if (k === 'text') node.textContent = v;
      else if (k === 'style') Object.assign(node.style, v); // CSSOM, allowed by the page's CSP
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  };

  // ───────────────────────── VOC palette (seam.common.palette.voc_palette) ─────────────────────────
  const VOC = (() => {
    const pal = [];
    for (let i = 0; i < 256; i++) {
      let c = i, r = 0, g = 0, b = 0;
      for (let j = 0; j < 8; j++) {
        r |= ((c >> 0) & 1) << (7 - j);
        g |= ((c >> 1) & 1) << (7 - j);
        b |= ((c >> 2) & 1) << (7 - j);
        c >>= 3;
      }
      pal.push([r, g, b]);
    }
    return pal;
  })();
  const rgbCss = ([r, g, b]) => `rgb(${r}, ${g}, ${b})`;

  // ───────────────────────── status, errors, API key ─────────────────────────
  const statusEl = $('#status');
  const errorEl = $('#error');
  function say(msg) { statusEl.textContent = msg; }
  function showError(err) {
    const msg = typeof err === 'string' ? err : (err && err.message) || String(err);
    errorEl.textContent = msg;
    errorEl.hidden = false;
    if (err && err.status === 401) {
      const box = $('#apikey-box');
      box.open = true;
      errorEl.textContent = `${msg}. Enter the API key above.`;
    }
  }
  function clearError() { errorEl.hidden = true; errorEl.textContent = ''; }

  function apiKey() {
    try { return localStorage.getItem(KEY_STORAGE) || ''; } catch { return ''; }
  }
  function setApiKey(key) {
    try {
      if (key) localStorage.setItem(KEY_STORAGE, key); else localStorage.removeItem(KEY_STORAGE);
    } catch { /* storage disabled: the key lives for this page only */ }
    sessionKey = key;
    $('#apikey-state').textContent = key ? '(set)' : '(none)';
  }
  let sessionKey = apiKey();

  class ApiError extends Error {
    constructor(status, code, message) { super(message); this.status = status; this.code = code; }
  }

  /** fetch() with the API key; non-2xx -> ApiError carrying the server's message. */
  async function api(path, { method = 'GET', body, signal } = {}) {
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

  function saveBlob(blob, filename) {
    const url = URL.createObjectURL(blob);
    const a = el('a', { href: url, download: filename, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 30_000);
  }

  // ───────────────────────── zip / npy / RLE readers ─────────────────────────
  async function inflateRaw(bytes) {
    if (typeof DecompressionStream === 'undefined') throw new Error('this browser cannot inflate zip data');
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('deflate-raw'));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }

  /** Entries of a zip (central directory, zip64 aware): [{name, method, offset, csize, size}]. */
  function zipEntries(buf) {
    const dv = new DataView(buf);
    const n = buf.byteLength;
    let eocd = -1;
    for (let i = n - 22; i >= Math.max(0, n - 22 - 0xffff); i--) {
      if (dv.getUint32(i, true) === 0x06054b50) { eocd = i; break; }
    }
    if (eocd < 0) throw new Error('not a zip file');
    let count = dv.getUint16(eocd + 10, true);
    let cd = dv.getUint32(eocd + 16, true);
    if ((count === 0xffff || cd === 0xffffffff) && eocd >= 20 && dv.getUint32(eocd - 20, true) === 0x07064b50) {
      const z = Number(dv.getBigUint64(eocd - 12, true));
      count = Number(dv.getBigUint64(z + 32, true));
      cd = Number(dv.getBigUint64(z + 48, true));
    }
    const dec = new TextDecoder();
    const out = [];
    let p = cd;
    for (let k = 0; k < count; k++) {
      if (dv.getUint32(p, true) !== 0x02014b50) throw new Error('corrupt zip central directory');
      const method = dv.getUint16(p + 10, true);
      let csize = dv.getUint32(p + 20, true), size = dv.getUint32(p + 24, true), offset = dv.getUint32(p + 42, true);
      const nameLen = dv.getUint16(p + 28, true), extraLen = dv.getUint16(p + 30, true), commentLen = dv.getUint16(p + 32, true);
      const name = dec.decode(new Uint8Array(buf, p + 46, nameLen));
      for (let e = p + 46 + nameLen, end = e + extraLen; e + 4 <= end;) {
        const id = dv.getUint16(e, true), len = dv.getUint16(e + 2, true);
        if (id === 0x0001) {
          let q = e + 4;
          if (size === 0xffffffff) { size = Number(dv.getBigUint64(q, true)); q += 8; }
          if (csize === 0xffffffff) { csize = Number(dv.getBigUint64(q, true)); q += 8; }
          if (offset === 0xffffffff) { offset = Number(dv.getBigUint64(q, true)); q += 8; }
        }
        e += 4 + len;
      }
      out.push({ name, method, offset, csize, size });
      p += 46 + nameLen + extraLen + commentLen;
    }
    return out;
  }

  async function zipRead(buf, entry) {
    const dv = new DataView(buf);
    if (dv.getUint32(entry.offset, true) !== 0x04034b50) throw new Error(`corrupt zip entry ${entry.name}`);
    const start = entry.offset + 30 + dv.getUint16(entry.offset + 26, true) + dv.getUint16(entry.offset + 28, true);
    const data = new Uint8Array(buf, start, entry.csize);
    if (entry.method === 0) return data;
    if (entry.method === 8) return inflateRaw(data);
    throw new Error(`unsupported zip compression ${entry.method} (${entry.name})`);
  }

  /** A .npy array: {dtype, shape, data (typed array)}. Little-endian, C order only. */
  function parseNpy(u8) {
    if (u8[0] !== 0x93 || String.fromCharCode(...u8.subarray(1, 6)) !== 'NUMPY') throw new Error('not a .npy array');
    const dv = new DataView(u8.buffer, u8.byteOffset, u8.byteLength);
    const major = u8[6];
    const hstart = major === 1 ? 10 : 12;
    const hlen = major === 1 ? dv.getUint16(8, true) : dv.getUint32(8, true);
    const header = new TextDecoder('latin1').decode(u8.subarray(hstart, hstart + hlen));
    const descr = (/'descr':\s*'([^']+)'/.exec(header) || [])[1];
    if (/'fortran_order':\s*True/.test(header)) throw new Error('Fortran-ordered arrays are not supported');
    const shape = ((/'shape':\s*\(([^)]*)\)/.exec(header) || [])[1] || '')
      .split(',').map((s) => s.trim()).filter(Boolean).map(Number);
    const count = shape.reduce((a, b) => a * b, 1);
    const body = u8.slice(hstart + hlen); // copy: aligned for typed arrays
    const types = { '<f2': Uint16Array, '<f4': Float32Array, '<f8': Float64Array, '<i4': Int32Array, '<i8': BigInt64Array,
                    '|u1': Uint8Array, '<u2': Uint16Array, '<i2': Int16Array, '|b1': Uint8Array };
    const T = types[descr];
    if (!T) throw new Error(`unsupported npy dtype ${descr}`);
    return { dtype: descr, shape, data: new T(body.buffer, 0, count) };
  }

  /** IEEE half -> float. */
  function halfToFloat(h) {
    const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
    if (e === 0) return s * 2 ** -14 * (f / 1024);
    if (e === 31) return f ? NaN : s * Infinity;
    return s * 2 ** (e - 15) * (1 + f / 1024);
  }
  const toFloat32 = (a) => (a.dtype === '<f2' ? Float32Array.from(a.data, halfToFloat)
    : a.data instanceof Float32Array ? a.data : Float32Array.from(a.data));

  /** The service's CAM npz -> {classes: [fg index], cams: [Float32Array (H*W)], scores, w, h}.
   *  Layout of seam.common.encoders.encode_cams_npz: "classes" (K,) int, "cams" (K, H, W)
   *  float32/16 (+ "class_names"); also reads the older one-array-per-class-name layout
   *  ("__classes__", "__scores__", one (H, W) array per class name). */
  async function parseCamNpz(buf, classNames) {
    const arrays = {};
    for (const entry of zipEntries(buf)) {
      if (!entry.name.endsWith('.npy')) continue;
      const name = entry.name.slice(0, -4);
      if (name === 'class_names') continue; // unicode; the indices say the same
      arrays[name] = parseNpy(await zipRead(buf, entry));
    }
    const idx = arrays.classes || arrays.__classes__;
    if (!idx) throw new Error('the CAM npz has no "classes" array');
    const classes = Array.from(idx.data, Number);
    const cams = [];
    let h = 0, w = 0;
    if (arrays.cams) {
      const [k, hh, ww] = arrays.cams.shape;
      if (k !== classes.length) throw new Error(`CAM npz: ${classes.length} classes but ${k} maps`);
      const all = toFloat32(arrays.cams);
      h = hh; w = ww;
      for (let i = 0; i < k; i++) cams.push(all.subarray(i * h * w, (i + 1) * h * w));
    } else {
      for (const c of classes) {
        const a = arrays[classNames[c]];
        if (!a) throw new Error(`CAM npz lacks the map of class ${classNames[c]}`);
        [h, w] = a.shape;
        cams.push(toFloat32(a));
      }
    }
    const scores = arrays.__scores__ || arrays.scores;
    return { classes, cams, scores: scores ? Float32Array.from(scores.data) : new Float32Array(0), w, h };
  }

  /** COCO compressed RLE string -> counts (service.encoding.rle_from_string). */
  function rleFromString(s) {
    const counts = [];
    let p = 0;
    while (p < s.length) {
      let x = 0, k = 0, more = true;
      while (more) {
        const c = s.charCodeAt(p) - 48;
        x |= (c & 0x1f) << (5 * k);
        more = (c & 0x20) !== 0;
        p++; k++;
        if (!more && (c & 0x10)) x |= -1 << (5 * k);
      }
      if (counts.length > 2) x += counts[counts.length - 2];
      counts.push(x);
    }
    return counts;
  }

  /** Paint an RLE mask (column-major) with `value` into a row-major label map. */
  function paintRle(label, w, h, rle, value) {
    const counts = typeof rle.counts === 'string' ? rleFromString(rle.counts) : rle.counts;
    let pos = 0, on = false;
    for (const n of counts) {
      if (on) {
        for (let i = pos; i < pos + n; i++) label[(i % h) * w + Math.floor(i / h)] = value;
      }
      pos += n;
      on = !on;
    }
  }

  // ───────────────────────── pixels ─────────────────────────
  /** One channel of the server's jet colour map (seam.common.encoders.jet), float32 step
   *  by step like numpy, so the heat maps here equal the server's overlays bit for bit. */
  const f32 = Math.fround;
  function jetChannel(v, m) {
    let t = f32(1.5 - Math.abs(f32(f32(4 * v) - m)));
    t = t < 0 ? 0 : t > 1 ? 1 : t;
    return Math.floor(f32(f32(t * 255) + 0.5));
  }
  /** seam.common.encoders._blend with alpha 0.5: round(0.5 a + 0.5 b). */
  const blend = (a, b) => (a + b + 1) >> 1;

  /** seam.common.encoders.heatmap_overlay: the image blended 50 % with jet(cam). */
  function heatmapImage(rgba, cam, w, h) {
    const out = new ImageData(w, h);
    const o = out.data;
    for (let i = 0, n = w * h; i < n; i++) {
      let v = cam[i];
      v = v > 0 ? (v > 1 ? 1 : v) : 0; // also NaN -> 0, like nan_to_num
      const q = 4 * i;
      o[q] = blend(rgba[q], jetChannel(v, 3));
      o[q + 1] = blend(rgba[q + 1], jetChannel(v, 2));
      o[q + 2] = blend(rgba[q + 2], jetChannel(v, 1));
      o[q + 3] = 255;
    }
    return out;
  }

  /** label = argmax([thr, cam_1..cam_K]) exactly as seam.common.cam.cams_to_label. */
  function camsToLabel(cams, classes, threshold, n, out) {
    const thr = Math.fround(threshold); // numpy: np.full(..., threshold, dtype=float32)
    const label = out && out.length === n ? out : new Uint8Array(n);
    const K = cams.length;
    const lut = classes.map((c) => c + 1);
    for (let i = 0; i < n; i++) {
      let best = thr, lab = 0;
      for (let k = 0; k < K; k++) {
        const v = cams[k][i];
        if (v > best) { best = v; lab = lut[k]; } // strict: a tie keeps the earlier entry, like np.argmax
      }
      label[i] = lab;
    }
    return label;
  }

  /** seam.common.encoders.mask_overlay: VOC colours blended 50 % over the foreground. */
  function maskOverlay(rgba, label, w, h) {
    const out = new ImageData(w, h);
    const o = out.data;
    for (let i = 0, n = w * h; i < n; i++) {
      const q = 4 * i, l = label[i];
      if (l > 0 && l !== 255) {
        const c = VOC[l];
        o[q] = blend(rgba[q], c[0]); o[q + 1] = blend(rgba[q + 1], c[1]); o[q + 2] = blend(rgba[q + 2], c[2]);
      } else {
        o[q] = rgba[q]; o[q + 1] = rgba[q + 1]; o[q + 2] = rgba[q + 2];
      }
      o[q + 3] = 255;
    }
    return out;
  }

  function putImage(canvas, imageData) {
    canvas.width = imageData.width;
    canvas.height = imageData.height;
    canvas.getContext('2d').putImageData(imageData, 0, 0);
  }

  /** Decode the upload in the browser (EXIF orientation applied, like the server). */
  async function decodeImage(file, w, h) {
    try {
      const bmp = await createImageBitmap(file, { imageOrientation: 'from-image' });
      const cw = w, ch = h;
      const c = document.createElement('canvas');
      c.width = cw; c.height = ch;
      const ctx = c.getContext('2d', { willReadFrequently: true });
      ctx.drawImage(bmp, 0, 0, cw, ch);
      bmp.close && bmp.close();
      return { rgba: ctx.getImageData(0, 0, cw, ch).data, decoded: true };
    } catch {
      // e.g. TIFF: the server reads it, this browser cannot; draw on grey.
      const rgba = new Uint8ClampedArray(w * h * 4).fill(128);
      return { rgba, decoded: false };
    }
  }

  // ───────────────────────── models ─────────────────────────
  const models = { classes: [], methods: [], defaultMethod: null, loaded: false };

  async function loadModels() {
    try {
      const m = await (await api('/models')).json();
      models.classes = m.classes || [];
      models.methods = m.methods || [];
      models.defaultMethod = m.default_method || models.methods[0] || null;
      const thr = Number(m.default_threshold);
      if (!models.loaded && m.default_threshold != null && thr >= 0 && thr <= 1 && !img.refined) {
        $('#threshold').value = String(thr); // the model's own default, when the API says it
        $('#threshold-value').textContent = thr.toFixed(2);
      }
      models.loaded = true;
      renderClassList();
      renderMethodSelects();
      const names = (m.models || []).map((x) => x.name).join(', ');
      say(`Ready: ${names || 'model'} with ${models.classes.length} classes.`);
      return true;
    } catch (e) {
      $('#class-list').textContent = 'Classes unavailable.';
      showError(e);
      return false;
    }
  }

  function renderClassList() {
    const list = $('#class-list');
    list.replaceChildren();
    models.classes.forEach((name, i) => {
      const id = `class-${i}`;
      list.append(el('label', { for: id },
        el('input', { type: 'checkbox', id, name: 'classes', value: name }),
        el('span', { class: 'swatch', style: { backgroundColor: rgbCss(VOC[i + 1]) }, 'aria-hidden': 'true' }),
        name));
    });
  }

  function renderMethodSelects() {
    const pref = models.methods.includes('pcm') ? 'pcm' : models.defaultMethod;
    const maskSel = $('#mask-method');
    maskSel.replaceChildren(...models.methods.map((m) => el('option', { value: m, text: methodLabel(m), selected: m === pref })));
    const jobSel = $('#job-method');
    jobSel.replaceChildren(el('option', { value: '', text: `default (${models.defaultMethod || 'best'})` }),
      ...models.methods.map((m) => el('option', { value: m, text: methodLabel(m) })));
  }

  function methodLabel(m) {
    return { cam: 'cam (raw CAMs)', pcm: 'pcm (PCM-refined CAMs)', rw: 'rw (random walk)', deeplab: 'deeplab' }[m] || m;
  }

  // ───────────────────────── image view ─────────────────────────
  const img = { file: null, w: 0, h: 0, rgba: null, raw: null, refined: null, label: null, serverLabel: null,
                serverKey: '', labelsSent: null, busy: false, seq: 0 };
  let renderQueued = false;
  let serverTimer = null;
  let serverAbort = null;

  function checkedClasses() {
    return Array.from(document.querySelectorAll('#class-list input:checked'), (i) => i.value);
  }

  function threshold() { return Number($('#threshold').value); }

  async function computeImage() {
    clearError();
    const file = img.file;
    if (!file) { showError('Choose an image first.'); $('#image-input').focus(); return; }
    if (!models.loaded && !(await loadModels())) return;
    const seq = ++img.seq;
    const labels = checkedClasses();
    const form = () => {
      const f = new FormData();
      f.append('image', file, file.name);
      if (labels.length) f.append('labels', labels.join(','));
      f.append('format', 'npz');
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
      const [raw, refined] = await Promise.all([parseCamNpz(rawBuf, models.classes), parseCamNpz(refBuf, models.classes)]);
      if (seq !== img.seq) return; // a newer run started
      let w = refined.w || raw.w, h = refined.h || raw.h;
      if (!w || !h) { // no class at all: the size comes from the browser's decoding
        const bmp = await createImageBitmap(file, { imageOrientation: 'from-image' }).catch(() => null);
        if (!bmp) throw new Error(`No class found in ${file.name}, and this browser cannot display it.`);
        w = bmp.width; h = bmp.height;
        if (bmp.close) bmp.close();
      }
      const pixels = await decodeImage(file, w, h);
      if (seq !== img.seq) return;
      img.w = w;
      img.h = h;
      img.rgba = pixels.rgba;
      img.raw = raw;
      img.refined = refined;
      img.labelsSent = labels;
      img.label = null;
      img.serverLabel = null;
      img.serverKey = '';
      renderImageResults(pixels.decoded);
      const ms = Math.round(performance.now() - t0);
      const names = refined.classes.map((c) => models.classes[c]);
      say(names.length
        ? `CAMs of ${file.name} ready in ${ms} ms: ${names.join(', ')}. Move the threshold slider to re-threshold the mask.`
        : `No class found in ${file.name} (none scored above 0.5). Tick the classes you expect and compute again.`);
    } catch (e) {
      if (seq === img.seq) showError(e);
      say('');
    } finally {
      if (seq === img.seq) button.disabled = false;
    }
  }

  function renderImageResults(decoded) {
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
    scheduleMask();
  }

  function scheduleMask() {
    $('#threshold-value').textContent = threshold().toFixed(2);
    if (renderQueued) return;
    renderQueued = true;
    requestAnimationFrame(() => { renderQueued = false; renderMask(); });
  }

  function renderMask() {
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
  function segmentLabels() {
    const names = img.refined ? img.refined.classes.map((c) => models.classes[c]) : [];
    return names.length ? names : img.labelsSent || [];
  }

  function segmentForm(method, thr, format) {
    const f = new FormData();
    f.append('image', img.file, img.file.name);
    const labels = segmentLabels();
    if (labels.length) f.append('labels', labels.join(','));
    f.append('method', method);
    f.append('threshold', String(thr));
    f.append('format', format);
    return f;
  }

  async function serverMask(method, thr) {
    const key = `${method}@${thr}`;
    if (img.serverKey === key && img.serverLabel) { drawMask(img.serverLabel); return; }
    if (serverAbort) serverAbort.abort();
    serverAbort = new AbortController();
    say(`Asking the server for the ${method} mask…`);
    try {
      const j = await (await api('/segment', { method: 'POST', body: segmentForm(method, thr, 'json'), signal: serverAbort.signal })).json();
      const label = new Uint8Array(j.width * j.height);
      for (const c of j.classes) paintRle(label, j.width, j.height, c.rle, c.label);
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

  function drawMask(label) {
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

  async function download(format) {
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

  function setImageFile(file) {
    if (!file) return;
    if (file.type && !file.type.startsWith('image/')) {
      showError(`${file.name} is not an image.`);
      return;
    }
    img.file = file;
    computeImage();
  }

  function initImageView() {
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

  // ───────────────────────── jobs view ─────────────────────────
  const jobs = { rows: new Map(), data: new Map(), timer: null, zips: new Map(), gallery: null, announced: new Map() };

  async function submitJob(ev) {
    ev.preventDefault();
    clearError();
    const archive = $('#job-archive').files[0];
    if (!archive) { showError('Choose an archive (zip or tar) of images.'); $('#job-archive').focus(); return; }
    const f = new FormData();
    f.append('archive', archive, archive.name);
    const labels = $('#job-labels').files[0];
    if (labels) f.append('labels', labels, labels.name);
    const method = $('#job-method').value;
    if (method) f.append('method', method);
    const thr = $('#job-threshold').value.trim();
    if (thr) f.append('threshold', thr);
    const outputs = Array.from(document.querySelectorAll('#job-form input[name="outputs"]:checked'), (i) => i.value);
    if (!outputs.length) { showError('Pick at least one output.'); return; }
    f.append('outputs', outputs.join(','));
    const button = $('#job-submit');
    button.disabled = true;
    say(`Uploading ${archive.name}…`);
    try {
      const job = await (await api('/jobs', { method: 'POST', body: f })).json();
      say(`Job ${short(job.id)} submitted: ${job.total} images.`);
      jobs.announced.set(job.id, job.state);
      $('#job-form').reset();
      await refreshJobs();
    } catch (e) { showError(e); say(''); } finally { button.disabled = false; }
  }

  const short = (id) => id.slice(0, 8);
  const isActive = (j) => j.state === 'queued' || j.state === 'running';

  async function refreshJobs() {
    clearTimeout(jobs.timer);
    try {
      const list = await (await api('/jobs?limit=50')).json();
      const fresh = [];
      for (const j of list.jobs) {
        const prev = jobs.data.get(j.id);
        // the list carries no per-image errors: fetch the job when it has failures we have not seen
        if (j.failed > 0 && (!prev || prev.failed !== j.failed || !prev.errors || !prev.errors.length)) {
          try { Object.assign(j, await (await api(`/jobs/${j.id}`)).json()); } catch { /* keep the list's */ }
        } else if (prev && prev.errors) j.errors = prev.errors;
        fresh.push(j);
      }
      renderJobs(fresh);
    } catch (e) {
      showError(e);
    }
    if ([...jobs.data.values()].some(isActive) && document.visibilityState !== 'hidden') {
      jobs.timer = setTimeout(refreshJobs, POLL_MS);
    }
  }

  function renderJobs(list) {
    const body = $('#jobs-body');
    const seen = new Set();
    list.forEach((j, idx) => {
      seen.add(j.id);
      const prev = jobs.data.get(j.id);
      jobs.data.set(j.id, j);
      let row = jobs.rows.get(j.id);
      if (!row) { row = buildJobRow(j); jobs.rows.set(j.id, row); }
      updateJobRow(row, j, prev);
      if (body.children[idx] !== row) body.insertBefore(row, body.children[idx] || null);
      announce(j);
    });
    for (const [id, row] of jobs.rows) {
      if (!seen.has(id)) { row.remove(); jobs.rows.delete(id); jobs.data.delete(id); }
    }
    $('#jobs-empty').hidden = list.length > 0;
    $('#jobs-table').hidden = list.length === 0;
  }

  function announce(j) {
    const before = jobs.announced.get(j.id);
    if (before === j.state) return;
    jobs.announced.set(j.id, j.state);
    if (before === undefined && !isActive(j)) return; // old jobs found on load: no noise
    if (!isActive(j)) say(`Job ${short(j.id)} ${j.state}: ${j.done} done, ${j.failed} failed of ${j.total}.`);
  }

  function buildJobRow(j) {
    const created = new Date(j.created_at);
    const row = el('tr', { 'data-job': j.id },
      el('td', { class: 'job-id' }, el('code', { title: j.id, text: short(j.id) }),
        el('span', { class: 'when', text: `${created.toLocaleString()} · ${j.source}` }),
        el('span', { class: 'when', 'data-field': 'opts' })),
      el('td', {}, el('span', { class: 'state', 'data-field': 'state' })),
      el('td', {},
        el('progress', { max: 1, value: 0, 'aria-label': `Progress of job ${short(j.id)}`, 'data-field': 'progress' }),
        el('div', { class: 'counts', 'data-field': 'counts' }),
        el('div', { 'data-field': 'errors' })),
      el('td', {}, el('div', { class: 'actions', 'data-field': 'actions' })));
    return row;
  }

  function updateJobRow(row, j, prev) {
    const f = (name) => row.querySelector(`[data-field="${name}"]`);
    const state = f('state');
    state.textContent = j.state;
    state.className = `state ${j.state}`;
    f('opts').textContent = `${j.method || 'default method'} · threshold ${j.threshold ?? 'default'} · ${(j.outputs || []).join(', ')}`;
    const progress = f('progress');
    progress.max = Math.max(j.total, 1);
    progress.value = j.total ? j.done + j.failed : 1;
    progress.setAttribute('aria-valuetext', `${j.done + j.failed} of ${j.total} images`);
    f('counts').textContent = `${j.done + j.failed}/${j.total} · ${j.done} done · ${j.failed} failed` +
      (j.error ? ` · ${j.error}` : '');
    const errs = f('errors');
    const errors = j.errors || [];
    if (errors.length && (!prev || JSON.stringify(prev.errors || []) !== JSON.stringify(errors) || !errs.firstChild)) {
      errs.replaceChildren(el('details', {},
        el('summary', { text: `${j.failed} image error${j.failed === 1 ? '' : 's'}` }),
        el('ul', { class: 'errors-list' }, ...errors.map((e) => el('li', {}, el('code', { text: e.image }), `: ${e.error}`)))));
    } else if (!errors.length) errs.replaceChildren();
    if (!prev || prev.state !== j.state || !f('actions').firstChild) renderActions(f('actions'), j);
  }

  function renderActions(box, j) {
    const focused = box.contains(document.activeElement) ? document.activeElement.dataset.action : null;
    const buttons = [];
    const id = short(j.id);
    if (isActive(j)) {
      buttons.push(el('button', { type: 'button', class: 'danger', 'data-action': 'cancel', 'aria-label': `Cancel job ${id}`,
        text: 'Cancel', onclick: () => cancelJob(j.id) }));
    } else if (j.done > 0) {
      buttons.push(el('button', { type: 'button', 'data-action': 'download', 'aria-label': `Download the results of job ${id}`,
        text: 'Download results', onclick: () => downloadJob(j.id) }));
      if ((j.outputs || []).includes('overlay')) {
        buttons.push(el('button', { type: 'button', 'data-action': 'gallery', 'aria-label': `Show the gallery of job ${id}`,
          text: 'Gallery', onclick: () => showGallery(j.id) }));
      }
    }
    box.replaceChildren(...buttons);
    if (focused) { const b = box.querySelector(`[data-action="${focused}"]`); if (b) b.focus(); }
  }

  async function cancelJob(id) {
    clearError();
    try {
      const j = await (await api(`/jobs/${id}`, { method: 'DELETE' })).json();
      say(`Job ${short(id)} ${j.state === 'cancelled' ? 'cancelled' : `is ${j.state}`}.`);
      jobs.announced.set(id, j.state);
    } catch (e) { showError(e); }
    refreshJobs();
  }

  async function jobZip(id) {
    if (!jobs.zips.has(id)) {
      const p = api(`/jobs/${id}/results`).then((r) => r.arrayBuffer());
      jobs.zips.set(id, p);
      p.catch(() => jobs.zips.delete(id));
    }
    return jobs.zips.get(id);
  }

  async function downloadJob(id) {
    clearError();
    say(`Downloading the results of job ${short(id)}…`);
    try {
      const buf = await jobZip(id);
      saveBlob(new Blob([buf], { type: 'application/zip' }), `seam-${id}.zip`);
      say(`Downloaded seam-${id}.zip.`);
    } catch (e) { showError(e); say(''); }
  }

  async function showGallery(id) {
    clearError();
    const section = $('#gallery');
    const grid = $('#gallery-grid');
    closeGallery();
    section.hidden = false;
    $('#gallery-title').textContent = `Gallery of job ${short(id)}`;
    $('#gallery-note').textContent = 'Loading the overlays…';
    say(`Loading the gallery of job ${short(id)}…`);
    try {
      const buf = await jobZip(id);
      const entries = zipEntries(buf).filter((e) => e.name.startsWith('overlay/') && e.name.endsWith('.png'));
      const urls = [];
      const figures = [];
      for (const e of entries.slice(0, GALLERY_MAX)) {
        const url = URL.createObjectURL(new Blob([await zipRead(buf, e)], { type: 'image/png' }));
        urls.push(url);
        const name = e.name.slice('overlay/'.length, -4);
        figures.push(el('figure', {},
          el('a', { href: url, target: '_blank', rel: 'noopener', 'aria-label': `Open the overlay of ${name} full size` },
            el('img', { src: url, alt: `Segmentation overlay of ${name}`, loading: 'lazy', decoding: 'async' })),
          el('figcaption', { text: name })));
      }
      jobs.gallery = { id, urls };
      grid.replaceChildren(...figures);
      const j = jobs.data.get(id);
      $('#gallery-note').textContent = entries.length
        ? `${Math.min(entries.length, GALLERY_MAX)} of ${entries.length} overlays` +
          (j && j.failed ? ` (${j.failed} image${j.failed === 1 ? '' : 's'} failed and ha${j.failed === 1 ? 's' : 've'} none)` : '') + '. Colours: VOC palette.'
        : 'This job has no overlays.';
      say(`Gallery of job ${short(id)}: ${entries.length} overlays.`);
      $('#gallery-title').focus();
    } catch (e) {
      $('#gallery-note').textContent = '';
      showError(e);
      say('');
    }
  }

  function closeGallery() {
    if (jobs.gallery) jobs.gallery.urls.forEach((u) => URL.revokeObjectURL(u));
    jobs.gallery = null;
    $('#gallery-grid').replaceChildren();
    $('#gallery').hidden = true;
  }

  function initJobsView() {
    $('#job-form').addEventListener('submit', submitJob);
    $('#jobs-refresh').addEventListener('click', refreshJobs);
    $('#gallery-close').addEventListener('click', () => {
      const id = jobs.gallery && jobs.gallery.id;
      closeGallery();
      const b = id && document.querySelector(`tr[data-job="${id}"] [data-action="gallery"]`);
      if (b) b.focus();
    });
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible' && currentView() === 'jobs') refreshJobs();
    });
  }

  // ───────────────────────── views ─────────────────────────
  function currentView() { return location.hash === '#jobs' ? 'jobs' : 'image'; }

  function showView(focus) {
    const view = currentView();
    $('#view-image').hidden = view !== 'image';
    $('#view-jobs').hidden = view !== 'jobs';
    document.querySelectorAll('nav a[data-view]').forEach((a) => {
      if (a.dataset.view === view) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
    });
    document.title = `${view === 'jobs' ? 'Batch jobs' : 'Segment an image'} · SEAM segmentation`;
    if (view === 'jobs') refreshJobs();
    if (focus) $(view === 'jobs' ? '#jobs-title' : '#image-title').focus();
  }

  function initApiKey() {
    $('#apikey-state').textContent = sessionKey ? '(set)' : '(none)';
    $('#apikey-input').value = sessionKey;
    $('#apikey-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      setApiKey($('#apikey-input').value.trim());
      say(sessionKey ? 'API key saved in this browser.' : 'API key removed.');
      clearError();
      loadModels();
      if (currentView() === 'jobs') refreshJobs();
    });
    $('#apikey-clear').addEventListener('click', () => {
      $('#apikey-input').value = '';
      setApiKey('');
      say('API key removed from this browser.');
    });
  }

  function init() {
    ['#image-title', '#jobs-title'].forEach((s) => $(s).setAttribute('tabindex', '-1'));
    initApiKey();
    initImageView();
    initJobsView();
    window.addEventListener('hashchange', () => showView(true));
    showView(false);
    loadModels();
  }

  // A read-only hook for the browser tests (and curious users): the current label map.
  window.seamPage = {
    labelMap: () => (img.label ? Array.from(img.label) : null),
    size: () => ({ width: img.w, height: img.h }),
    maskSource: () => img.labelSource || null,
    classes: () => (img.refined ? img.refined.classes.slice() : null),
  };

  init();
})();
