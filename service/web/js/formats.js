// Readers of what the service sends: zip (stored/deflate), .npy/.npz CAMs, COCO RLE.

export async function inflateRaw(bytes) {
  if (typeof DecompressionStream === 'undefined') throw new Error('this browser cannot inflate zip data');
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('deflate-raw'));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** Entries of a zip (central directory, zip64 aware): [{name, method, offset, csize, size}]. */
export function zipEntries(buf) {
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

export async function zipRead(buf, entry) {
  const dv = new DataView(buf);
  if (dv.getUint32(entry.offset, true) !== 0x04034b50) throw new Error(`corrupt zip entry ${entry.name}`);
  const start = entry.offset + 30 + dv.getUint16(entry.offset + 26, true) + dv.getUint16(entry.offset + 28, true);
  const data = new Uint8Array(buf, start, entry.csize);
  if (entry.method === 0) return data;
  if (entry.method === 8) return inflateRaw(data);
  throw new Error(`unsupported zip compression ${entry.method} (${entry.name})`);
}

/** A .npy array: {dtype, shape, data (typed array, C order)}. Little-endian; a
 *  Fortran-ordered array (numpy writes one for a transposed view) is reordered here. */
export function parseNpy(u8) {
  if (u8[0] !== 0x93 || String.fromCharCode(...u8.subarray(1, 6)) !== 'NUMPY') throw new Error('not a .npy array');
  const dv = new DataView(u8.buffer, u8.byteOffset, u8.byteLength);
  const major = u8[6];
  const hstart = major === 1 ? 10 : 12;
  const hlen = major === 1 ? dv.getUint16(8, true) : dv.getUint32(8, true);
  const header = new TextDecoder('latin1').decode(u8.subarray(hstart, hstart + hlen));
  const descr = (/'descr':\s*'([^']+)'/.exec(header) || [])[1];
  const fortran = /'fortran_order':\s*True/.test(header);
  const shape = ((/'shape':\s*\(([^)]*)\)/.exec(header) || [])[1] || '')
    .split(',').map((s) => s.trim()).filter(Boolean).map(Number);
  const count = shape.reduce((a, b) => a * b, 1);
  const body = u8.slice(hstart + hlen); // copy: aligned for typed arrays
  const types = { '<f2': Uint16Array, '<f4': Float32Array, '<f8': Float64Array, '<i4': Int32Array, '<i8': BigInt64Array,
                  '|u1': Uint8Array, '<u2': Uint16Array, '<i2': Int16Array, '|b1': Uint8Array };
  const T = types[descr];
  if (!T) throw new Error(`unsupported npy dtype ${descr}`);
  const data = new T(body.buffer, 0, count);
  return { dtype: descr, shape, data: fortran && shape.length > 1 ? fortranToC(data, shape) : data };
}

/** The same array in C (row-major) order from Fortran (column-major) order. */
export function fortranToC(data, shape) {
  const out = new data.constructor(data.length);
  const n = shape.length;
  const fStride = new Array(n);
  fStride[0] = 1;
  for (let d = 1; d < n; d++) fStride[d] = fStride[d - 1] * shape[d - 1];
  const idx = new Array(n).fill(0);
  for (let i = 0; i < data.length; i++) { // i walks C order; idx is its multi-index
    let f = 0;
    for (let d = 0; d < n; d++) f += idx[d] * fStride[d];
    out[i] = data[f];
    for (let d = n - 1; d >= 0; d--) { if (++idx[d] < shape[d]) break; idx[d] = 0; }
  }
  return out;
}

/** IEEE half -> float. */
export function halfToFloat(h) {
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
  if (e === 0) return s * 2 ** -14 * (f / 1024);
  if (e === 31) return f ? NaN : s * Infinity;
  return s * 2 ** (e - 15) * (1 + f / 1024);
}
export const toFloat32 = (a) => (a.dtype === '<f2' ? Float32Array.from(a.data, halfToFloat)
  : a.data instanceof Float32Array ? a.data : Float32Array.from(a.data));
/** CAM values: uint8 maps are quantised (value / 255, seam.common.encoders.quantize_cams). */
export const camValues = (a) => (a.dtype === '|u1' ? Float32Array.from(a.data, (v) => v / 255) : toFloat32(a));

/** The service's CAM npz -> {classes: [fg index], cams: [Float32Array (H*W)], scores, w, h,
 *  imageW, imageH}. Layout of seam.common.encoders.encode_cams_npz: "classes" (K,) int,
 *  "cams" (K, H, W) float32/16 or uint8 (+ "class_names", and "image_size" [h, w] when the
 *  maps are at the working size: imageW/imageH, else the maps' own size); also reads the
 *  older one-array-per-class-name layout ("__classes__", "__scores__", one (H, W) array per
 *  class name). */
export async function parseCamNpz(buf, classNames) {
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
    const all = camValues(arrays.cams);
    h = hh; w = ww;
    for (let i = 0; i < k; i++) cams.push(all.subarray(i * h * w, (i + 1) * h * w));
  } else {
    for (const c of classes) {
      const a = arrays[classNames[c]];
      if (!a) throw new Error(`CAM npz lacks the map of class ${classNames[c]}`);
      [h, w] = a.shape;
      cams.push(camValues(a));
    }
  }
  const scores = arrays.__scores__ || arrays.scores;
  const size = arrays.image_size ? Array.from(arrays.image_size.data, Number) : [h, w];
  return { classes, cams, scores: scores ? Float32Array.from(scores.data) : new Float32Array(0), w, h,
           imageH: size[0], imageW: size[1] };
}

/** COCO compressed RLE string -> counts (service.encoding.rle_from_string). */
export function rleFromString(s) {
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
export function paintRle(label, w, h, rle, value) {
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
