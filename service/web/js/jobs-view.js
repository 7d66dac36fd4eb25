// Jobs view: submit an archive, poll, cancel, download the results zip, gallery of its overlays.
import { api, clearError, saveBlob, say, showError } from './api.js';
import { $, currentView, el } from './dom.js';
import { zipEntries, zipRead } from './formats.js';

export const POLL_MS = 1000;
export const GALLERY_MAX = 100;

export const jobs = { rows: new Map(), data: new Map(), timer: null, zips: new Map(), gallery: null, announced: new Map() };

export async function submitJob(ev) {
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
  if (outputs.includes('labelstudio')) {
    const prefix = $('#job-prefix').value.trim();
    if (!/^(https?:\/\/|\/)/.test(prefix)) {
      showError('The Label Studio output needs an image URL prefix starting with http://, https:// or / ' +
        '(how Label Studio reaches the images, e.g. /data/local-files/?d=photos/).');
      $('#job-prefix').focus();
      return;
    }
    f.append('image_url_prefix', prefix);
  }
  const button = $('#job-submit');
  button.disabled = true;
  say(`Uploading ${archive.name}…`);
  try {
    const job = await (await api('/jobs', { method: 'POST', body: f })).json();
    say(`Job ${short(job.id)} submitted: ${job.total} images.`);
    jobs.announced.set(job.id, job.state);
    $('#job-form').reset();
    syncPrefixField();
    await refreshJobs();
  } catch (e) { showError(e); say(''); } finally { button.disabled = false; }
}

export const short = (id) => id.slice(0, 8);
export const isActive = (j) => j.state === 'queued' || j.state === 'running';

export async function refreshJobs() {
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

export function renderJobs(list) {
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

export function announce(j) {
  const before = jobs.announced.get(j.id);
  if (before === j.state) return;
  jobs.announced.set(j.id, j.state);
  if (before === undefined && !isActive(j)) return; // old jobs found on load: no noise
  if (!isActive(j)) say(`Job ${short(j.id)} ${j.state}: ${j.done} done, ${j.failed} failed of ${j.total}.`);
}

export function buildJobRow(j) {
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

export function updateJobRow(row, j, prev) {
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

export function renderActions(box, j) {
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

export async function cancelJob(id) {
  clearError();
  try {
    const j = await (await api(`/jobs/${id}`, { method: 'DELETE' })).json();
    say(`Job ${short(id)} ${j.state === 'cancelled' ? 'cancelled' : `is ${j.state}`}.`);
    jobs.announced.set(id, j.state);
  } catch (e) { showError(e); }
  refreshJobs();
}

export async function jobZip(id) {
  if (!jobs.zips.has(id)) {
    const p = api(`/jobs/${id}/results`).then((r) => r.arrayBuffer());
    jobs.zips.set(id, p);
    p.catch(() => jobs.zips.delete(id));
  }
  return jobs.zips.get(id);
}

export async function downloadJob(id) {
  clearError();
  say(`Downloading the results of job ${short(id)}…`);
  try {
    const buf = await jobZip(id);
    saveBlob(new Blob([buf], { type: 'application/zip' }), `seam-${id}.zip`);
    say(`Downloaded seam-${id}.zip.`);
  } catch (e) { showError(e); say(''); }
}

export async function showGallery(id) {
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

export function closeGallery() {
  if (jobs.gallery) jobs.gallery.urls.forEach((u) => URL.revokeObjectURL(u));
  jobs.gallery = null;
  $('#gallery-grid').replaceChildren();
  $('#gallery').hidden = true;
}

/** The image URL prefix is asked for only while the Label Studio output is ticked. */
export function syncPrefixField() {
  const on = document.querySelector('#job-form input[name="outputs"][value="labelstudio"]').checked;
  $('#job-prefix-field').hidden = !on;
  $('#job-prefix').required = on;
}

export function initJobsView() {
  $('#job-form').addEventListener('submit', submitJob);
  document.querySelector('#job-form input[name="outputs"][value="labelstudio"]').addEventListener('change', syncPrefixField);
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
