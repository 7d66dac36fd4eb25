// The VOC palette (seam.common.palette.voc_palette) and CSS colours.

export const VOC = (() => {
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
export const rgbCss = ([r, g, b]) => `rgb(${r}, ${g}, ${b})`;
