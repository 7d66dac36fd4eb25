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

/** Show the table `#NAME-table` when it lists `n` rows, else its empty note `#NAME-empty`. */
export function showListed(name, n) {
  $(`#${name}-empty`).hidden = n > 0;
  $(`#${name}-table`).hidden = n === 0;
}

/** The rows of the table `#NAME-body`, replaced; the table or its empty note shown. */
export function fillTable(name, rows) {
  $(`#${name}-body`).replaceChildren(...rows);
  showListed(name, rows.length);
}

/** The view the address names: `#jobs`, `#train`, `#corrections` or (anything else) the image view. */
export function currentView() {
  return { '#jobs': 'jobs', '#train': 'train', '#corrections': 'corrections' }[location.hash] || 'image';
}
