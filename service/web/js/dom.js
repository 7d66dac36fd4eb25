// DOM helpers: `$` and `el` (attributes, text, CSSOM styles, listeners).

export const $ = (sel, root = document) => root.querySelector(sel);
export const el = (tag, attrs = {}, ...children) => {
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

/** The view the address names: `#jobs`, `#train`, `#corrections` or (anything else) the image view. */
export function currentView() {
  return { '#jobs': 'jobs', '#train': 'train', '#corrections': 'corrections' }[location.hash] || 'image';
}
