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

/** A .npy array: {dtype, shape, data (typed array)}. Little-endian, C order only. */
export function parseNpy(u8) {
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
export function halfToFloat(h) {
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
  if (e === 0) return s * 2 ** -14 * (f / 1024);
  if (e === 31) return f ? NaN : s * Infinity;
  return s * 2 ** (e - 15) * (1 + f / 1024);
}
export const toFloat32 = (a) => (a.dtype === '<f2' ? Float32Array.from(a.data, halfToFloat)
  : a.data instanceof Float32Array ? a.data : Float32Array.from(a.data));

/** The service's CAM npz -> {classes: [fg index], cams: [Float32Array (H*W)], scores, w, h}.
 *  Layout of seam.common.encoders.encode_cams_npz: "classes" (K,) int, "cams" (K, H, W)
 *  float32/16 (+ "class_names"); also reads the older one-array-per-class-name layout
 *  ("__classes__", "__scores__", one (H, W) array per class name). */
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
