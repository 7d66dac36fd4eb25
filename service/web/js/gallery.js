// A finished job's results: the zip (fetched once per job, kept in the state) saved as a file, and
// the gallery of its overlay PNGs read from that zip in the browser.
import { api, saveBlob } from './api.js';
import { $, el } from './dom.js';
import { zipEntries, zipRead } from './formats.js';
import { jobZip, setGallery, state } from './state.js';
import { clearError, say, showError } from './status.js';

export const GALLERY_MAX = 100;

export const short = (id) => id.slice(0, 8);

const resultsZip = (id) => jobZip(id, (jobId) => api(`/jobs/${jobId}/results`).then((r) => r.arrayBuffer()));

export async function downloadJob(id) {
  clearError();
  say(`Downloading the results of job ${short(id)}…`);
  try {
    const buf = await resultsZip(id);
    saveBlob(new Blob([buf], { type: 'application/zip' }), `seam-${id}.zip`);
    say(`Downloaded seam-${id}.zip.`);
  } catch (e) { showError(e); say(''); }
}

/** The first GALLERY_MAX overlays of the zip as figures, with their object URLs. */
async function overlayFigures(buf, entries) {
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
  return { urls, figures };
}

function galleryNote(id, count) {
  if (!count) return 'This job has no overlays.';
  const j = state.jobs.list.get(id);
  const failed = j && j.failed
    ? ` (${j.failed} image${j.failed === 1 ? '' : 's'} failed and ha${j.failed === 1 ? 's' : 've'} none)` : '';
  return `${Math.min(count, GALLERY_MAX)} of ${count} overlays${failed}. Colours: VOC palette.`;
}

export async function showGallery(id) {
  clearError();
  closeGallery();
  $('#gallery').hidden = false;
  $('#gallery-title').textContent = `Gallery of job ${short(id)}`;
  $('#gallery-note').textContent = 'Loading the overlays…';
  say(`Loading the gallery of job ${short(id)}…`);
  try {
    const buf = await resultsZip(id);
    const entries = zipEntries(buf).filter((e) => e.name.startsWith('overlay/') && e.name.endsWith('.png'));
    const { urls, figures } = await overlayFigures(buf, entries);
    setGallery({ id, urls });
    $('#gallery-grid').replaceChildren(...figures);
    $('#gallery-note').textContent = galleryNote(id, entries.length);
    say(`Gallery of job ${short(id)}: ${entries.length} overlays.`);
    $('#gallery-title').focus();
  } catch (e) {
    $('#gallery-note').textContent = '';
    showError(e);
    say('');
  }
}

export function closeGallery() {
  setGallery(null);
  $('#gallery-grid').replaceChildren();
  $('#gallery').hidden = true;
}

export function initGallery() {
  $('#gallery-close').addEventListener('click', () => {
    const id = state.jobs.gallery && state.jobs.gallery.id;
    closeGallery();
    const b = id && document.querySelector(`tr[data-job="${id}"] [data-action="gallery"]`);
    if (b) b.focus();
  });
}
