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

/** seam.common.encoders.mask_overlay: VOC colours blended 50 % over the foreground. */
export function maskOverlay(rgba, label, w, h) {
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

export function putImage(canvas, imageData) {
  canvas.width = imageData.width;
  canvas.height = imageData.height;
  canvas.getContext('2d').putImageData(imageData, 0, 0);
}

/** Decode the upload in the browser (EXIF orientation applied, like the server). */
export async function decodeImage(file, w, h) {
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
