// Pixels: heat maps, the threshold rule (argmax over [threshold, CAMs]), mask overlays, image decoding.
import { VOC } from './palette.js';

/** One channel of the server's jet colour map (seam.common.encoders.jet), float32 step
 *  by step like numpy, so the heat maps here equal the server's overlays bit for bit. */
export const f32 = Math.fround;
export function jetChannel(v, m) {
  let t = f32(1.5 - Math.abs(f32(f32(4 * v) - m)));
  t = t < 0 ? 0 : t > 1 ? 1 : t;
  return Math.floor(f32(f32(t * 255) + 0.5));
}
/** seam.common.encoders._blend with alpha 0.5: round(0.5 a + 0.5 b). */
export const blend = (a, b) => (a + b + 1) >> 1;

/** seam.common.encoders.heatmap_overlay: the image blended 50 % with jet(cam). */
export function heatmapImage(rgba, cam, w, h) {
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
export function camsToLabel(cams, classes, threshold, n, out) {
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

/** seam.common.encoders.MASK_ALPHA / OUTLINE_PER_PIXELS. */
export const MASK_ALPHA = 0.6;
export const OUTLINE_PER_PIXELS = 300;
const A_IMG = f32(1 - MASK_ALPHA), A_COL = f32(MASK_ALPHA);
/** seam.common.encoders._blend at MASK_ALPHA, float32 step by step like numpy. */
export const blendMask = (a, b) => Math.floor(f32(f32(f32(A_IMG * a) + f32(A_COL * b)) + 0.5));

/** seam.common.encoders.mask_edges: foreground pixels within r (square window, clipped at the
 *  image border like scipy's mode="nearest") of another label. Separable max/min filters. */
export function maskEdges(label, w, h, r = Math.max(1, Math.floor(Math.max(w, h) / OUTLINE_PER_PIXELS))) {
  const n = w * h;
  const rowMax = new Uint8Array(n), rowMin = new Uint8Array(n);
  for (let y = 0; y < h; y++) {
    const o = y * w;
    for (let x = 0; x < w; x++) {
      let hi = 0, lo = 255;
      for (let k = Math.max(0, x - r), e = Math.min(w - 1, x + r); k <= e; k++) {
        const v = label[o + k];
        if (v > hi) hi = v;
        if (v < lo) lo = v;
      }
      rowMax[o + x] = hi; rowMin[o + x] = lo;
    }
  }
  const edge = new Uint8Array(n);
  for (let y = 0; y < h; y++) {
    const y0 = Math.max(0, y - r), y1 = Math.min(h - 1, y + r);
    for (let x = 0; x < w; x++) {
      const i = y * w + x, l = label[i];
      if (l === 0 || l === 255) continue;
      let hi = 0, lo = 255;
      for (let k = y0; k <= y1; k++) {
        const j = k * w + x;
        if (rowMax[j] > hi) hi = rowMax[j];
        if (rowMin[j] < lo) lo = rowMin[j];
      }
      if (hi !== lo) edge[i] = 1;
    }
  }
  return edge;
}

/** seam.common.encoders.mask_overlay: VOC colours blended (MASK_ALPHA) over the foreground,
 *  region edges white over dark pixels and black over light ones, so a mask stays visible
 *  over a subject of its own colour. */
export function maskOverlay(rgba, label, w, h) {
  const out = new ImageData(w, h);
  const o = out.data;
  const edge = maskEdges(label, w, h);
  for (let i = 0, n = w * h; i < n; i++) {
    const q = 4 * i, l = label[i];
    if (edge[i]) {
      const luma = Math.floor((299 * rgba[q] + 587 * rgba[q + 1] + 114 * rgba[q + 2]) / 1000);
      const v = luma < 128 ? 255 : 0;
      o[q] = v; o[q + 1] = v; o[q + 2] = v;
    } else if (l > 0 && l !== 255) {
      const c = VOC[l];
      o[q] = blendMask(rgba[q], c[0]); o[q + 1] = blendMask(rgba[q + 1], c[1]); o[q + 2] = blendMask(rgba[q + 2], c[2]);
    } else {
      o[q] = rgba[q]; o[q + 1] = rgba[q + 1]; o[q + 2] = rgba[q + 2];
    }
    o[q + 3] = 255;
  }
  return out;
}

/** Source index and weight of each output position: seam.common.cam.interp_matrix with
 *  align_corners=False (torch's bilinear, negative source coordinates clamped to 0). */
function interp(outN, inN) {
  const lo = new Int32Array(outN), hi = new Int32Array(outN), wt = new Float32Array(outN);
  for (let i = 0; i < outN; i++) {
    const src = inN === 1 ? 0 : Math.max((i + 0.5) * (inN / outN) - 0.5, 0);
    lo[i] = Math.min(Math.floor(src), inN - 1);
    hi[i] = Math.min(lo[i] + 1, inN - 1);
    wt[i] = src - lo[i];
  }
  return { lo, hi, wt };
}

/** (sh, sw) map -> (dh, dw) by bilinear interpolation (align_corners=False), like the server's
 *  seam.common.cam.resize_bilinear: working-size maps drawn at the page's size. */
export function resizeBilinear(src, sw, sh, dw, dh) {
  if (sw === dw && sh === dh) return src;
  const X = interp(dw, sw), Y = interp(dh, sh);
  const rows = new Float32Array(sh * dw);
  for (let y = 0; y < sh; y++) {
    const o = y * sw, p = y * dw;
    for (let x = 0; x < dw; x++) {
      const a = src[o + X.lo[x]], b = src[o + X.hi[x]];
      rows[p + x] = a + (b - a) * X.wt[x];
    }
  }
  const out = new Float32Array(dh * dw);
  for (let y = 0; y < dh; y++) {
    const a0 = Y.lo[y] * dw, b0 = Y.hi[y] * dw, t = Y.wt[y], p = y * dw;
    for (let x = 0; x < dw; x++) out[p + x] = rows[a0 + x] + (rows[b0 + x] - rows[a0 + x]) * t;
  }
  return out;
}

/** A label map resampled to another size, nearest pixel (server masks drawn at the page's size). */
export function resizeLabel(label, sw, sh, dw, dh) {
  if (sw === dw && sh === dh) return label;
  const out = new Uint8Array(dw * dh);
  const xs = new Int32Array(dw);
  for (let x = 0; x < dw; x++) xs[x] = Math.min(sw - 1, Math.floor(((x + 0.5) * sw) / dw));
  for (let y = 0; y < dh; y++) {
    const o = Math.min(sh - 1, Math.floor(((y + 0.5) * sh) / dh)) * sw, p = y * dw;
    for (let x = 0; x < dw; x++) out[p + x] = label[o + xs[x]];
  }
  return out;
}

/** The size the page draws an image at: its own, or scaled (aspect kept, rounded like
 *  seam.common.cam.working_size) so that its long side is `maxSide`. */
export function displaySize(w, h, maxSide) {
  if (Math.max(w, h) <= maxSide) return [w, h];
  const s = maxSide / Math.max(w, h);
  return [Math.max(1, Math.round(w * s)), Math.max(1, Math.round(h * s))];
}

export function putImage(canvas, imageData) {
  canvas.width = imageData.width;
  canvas.height = imageData.height;
  canvas.getContext('2d').putImageData(imageData, 0, 0);
}

/** Decode the upload in the browser (EXIF orientation applied, like the server), at w x h
 *  (the browser resamples while decoding when that is smaller than the image). */
export async function decodeImage(file, w, h, imageW = w, imageH = h) {
  try {
    const opts = { imageOrientation: 'from-image' };
    if (w !== imageW || h !== imageH) Object.assign(opts, { resizeWidth: w, resizeHeight: h, resizeQuality: 'medium' });
    const bmp = await createImageBitmap(file, opts);
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
