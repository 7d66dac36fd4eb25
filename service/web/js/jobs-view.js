// Jobs view: the job form (its methods and output kinds from the state, i.e. from the server),
// submit an archive, the jobs table polled while a job is active, cancel; results and gallery are
// gallery.js's.
import { api } from './api.js';
import { methodText } from './catalog.js';
import { $, currentView, el, showListed } from './dom.js';
import { downloadJob, initGallery, short, showGallery } from './gallery.js';
import {
  methodsFor, modelField, on, resetTickedOutputs, setAnnounced, setJobs, setOutputTicked, setPollTimer, state, tickedOutputs,
} from './state.js';
import { clearError, say, showError } from './status.js';

export const POLL_MS = 1000;
// The job option the prefix field holds; output kinds that list it in `requires` need it.
const PREFIX_OPTION = 'image_url_prefix';

const isActive = (j) => j.state === 'queued' || j.state === 'running';
const kindsNeedingPrefix = (kinds) => state.outputs.kinds.filter((k) => kinds.includes(k.kind)
  && (k.requires || []).includes(PREFIX_OPTION));

// ───────────────────────── the form ─────────────────────────
/** The methods a job may run (GET /models' `where` has 'jobs'); the server's default for a job is
 *  the first of them (the table is best first). */
function drawJobMethods() {
  const methods = methodsFor('jobs');
  const best = methods.length ? methods[0].name : state.models.defaultMethod;
  $('#job-method').replaceChildren(el('option', { value: '', text: `default (${best || 'best'})` }),
    ...methods.map((m) => el('option', { value: m.name, text: methodText(m) })));
}

function drawOutputs() {
  const box = $('#job-outputs');
  if (!state.outputs.loaded) {
    if (state.outputs.failed) box.textContent = 'Output kinds unavailable.';
    return;
  }
  const ticked = tickedOutputs();
  box.replaceChildren(...state.outputs.kinds.map((k) => el('label', { title: k.description },
    el('input', { type: 'checkbox', name: 'outputs', value: k.kind, checked: ticked.includes(k.kind),
                  'aria-controls': (k.requires || []).includes(PREFIX_OPTION) ? 'job-prefix-field' : null }),
    ` ${k.label || k.kind}`)));
  drawPrefixField();
}

/** The image URL prefix is asked for only while an output that needs it is ticked. */
function drawPrefixField() {
  const on = kindsNeedingPrefix(tickedOutputs()).length > 0;
  $('#job-prefix-field').hidden = !on;
  $('#job-prefix').required = on;
}

/** The multipart body of POST /jobs from the form, or an error message (and the control to fix). */
function jobRequest() {
  const fields = new FormData($('#job-form'));
  const archive = fields.get('archive');
  if (!archive || !archive.name) return { error: 'Choose an archive (zip or tar) of images.', focus: '#job-archive' };
  const f = new FormData();
  f.append('archive', archive, archive.name);
  const labels = fields.get('labels');
  if (labels && labels.name) f.append('labels', labels, labels.name);
  const method = fields.get('method');
  if (method) f.append('method', method);
  if (modelField()) f.append('model', modelField());
  const thr = String(fields.get('threshold') || '').trim();
  if (thr) f.append('threshold', thr);
  const outputs = tickedOutputs();
  if (!outputs.length) return { error: 'Pick at least one output.' };
  f.append('outputs', outputs.join(','));
  const needing = kindsNeedingPrefix(outputs);
  if (needing.length) {
    const prefix = String(fields.get(PREFIX_OPTION) || '').trim();
    if (!/^(https?:\/\/|\/)/.test(prefix)) {
      return { error: `The ${needing.map((k) => k.label || k.kind).join(', ')} output needs an image URL prefix ` +
        'starting with http://, https:// or / (how Label Studio reaches the images, e.g. /data/local-files/?d=photos/).',
      focus: '#job-prefix' };
    }
    f.append(PREFIX_OPTION, prefix);
  }
  return { body: f, archive };
}

async function submitJob(ev) {
  ev.preventDefault();
  clearError();
  const { body, archive, error, focus } = jobRequest();
  if (error) { showError(error); if (focus) $(focus).focus(); return; }
  const button = $('#job-submit');
  button.disabled = true;
  say(`Uploading ${archive.name}…`);
  try {
    const job = await (await api('/jobs', { method: 'POST', body })).json();
    say(`Job ${short(job.id)} submitted: ${job.total} images.`);
    setAnnounced(job.id, job.state);
    $('#job-form').reset();
    resetTickedOutputs();
    await refreshJobs();
  } catch (e) { showError(e); say(''); } finally { button.disabled = false; }
}

// ───────────────────────── the table ─────────────────────────
/** GET /jobs (and each job with failures not yet seen, for its per-image errors) into the
 *  state, drawn; polled while a job is active and the tab is visible. */
export async function refreshJobs() {
  setPollTimer(null);
  try {
    const list = await (await api('/jobs?limit=50')).json();
    const fresh = [];
    for (const j of list.jobs) {
      const prev = state.jobs.list.get(j.id);
      // the list carries no per-image errors: fetch the job when it has failures we have not seen
      if (j.failed > 0 && (!prev || prev.failed !== j.failed || !prev.errors || !prev.errors.length)) {
        try { Object.assign(j, await (await api(`/jobs/${j.id}`)).json()); } catch { /* keep the list's */ }
      } else if (prev && prev.errors) j.errors = prev.errors;
      fresh.push(j);
    }
    drawJobs(fresh, setJobs(fresh));
  } catch (e) {
    showError(e);
  }
  if ([...state.jobs.list.values()].some(isActive) && document.visibilityState !== 'hidden') {
    setPollTimer(setTimeout(refreshJobs, POLL_MS));
  }
}

function drawJobs(list, previous) {
  const body = $('#jobs-body');
  const listed = new Set(list.map((j) => j.id));
  for (const row of Array.from(body.children)) if (!listed.has(row.dataset.job)) row.remove();
  list.forEach((j, idx) => {
    let row = body.querySelector(`tr[data-job="${j.id}"]`);
    if (!row) row = jobRow(j);
    updateJobRow(row, j, previous.get(j.id));
    if (body.children[idx] !== row) body.insertBefore(row, body.children[idx] || null);
    announce(j);
  });
  showListed('jobs', list.length);
}

function announce(j) {
  const before = setAnnounced(j.id, j.state);
  if (before === j.state) return;
  if (before === undefined && !isActive(j)) return; // old jobs found on load: no noise
  if (!isActive(j)) say(`Job ${short(j.id)} ${j.state}: ${j.done} done, ${j.failed} failed of ${j.total}.`);
}

function jobRow(j) {
  const created = new Date(j.created_at);
  return el('tr', { 'data-job': j.id },
    el('td', { class: 'job-id' }, el('code', { title: j.id, text: short(j.id) }),
      el('span', { class: 'when', text: `${created.toLocaleString()} · ${j.source}` }),
      el('span', { class: 'when', 'data-field': 'opts' })),
    el('td', {}, el('span', { class: 'state', 'data-field': 'state' })),
    el('td', {},
      el('progress', { max: 1, value: 0, 'aria-label': `Progress of job ${short(j.id)}`, 'data-field': 'progress' }),
      el('div', { class: 'counts', 'data-field': 'counts' }),
      el('div', { 'data-field': 'errors' })),
    el('td', {}, el('div', { class: 'actions', 'data-field': 'actions' })));
}

function drawErrors(box, j, prev) {
  const errors = j.errors || [];
  if (errors.length && (!prev || JSON.stringify(prev.errors || []) !== JSON.stringify(errors) || !box.firstChild)) {
    box.replaceChildren(el('details', {},
      el('summary', { text: `${j.failed} image error${j.failed === 1 ? '' : 's'}` }),
      el('ul', { class: 'errors-list' }, ...errors.map((e) => el('li', {}, el('code', { text: e.image }), `: ${e.error}`)))));
  } else if (!errors.length) box.replaceChildren();
}

function updateJobRow(row, j, prev) {
  const f = (name) => row.querySelector(`[data-field="${name}"]`);
  const stateEl = f('state');
  stateEl.textContent = j.state;
  stateEl.className = `state ${j.state}`;
  f('opts').textContent = `${j.model ? `${j.model} · ` : ''}${j.method || 'default method'} · threshold ${j.threshold ?? 'default'} · ${(j.outputs || []).join(', ')}`;
  const progress = f('progress');
  progress.max = Math.max(j.total, 1);
  progress.value = j.total ? j.done + j.failed : 1;
  progress.setAttribute('aria-valuetext', `${j.done + j.failed} of ${j.total} images`);
  f('counts').textContent = `${j.done + j.failed}/${j.total} · ${j.done} done · ${j.failed} failed` +
    (j.error ? ` · ${j.error}` : '');
  drawErrors(f('errors'), j, prev);
  if (!prev || prev.state !== j.state || !f('actions').firstChild) drawActions(f('actions'), j);
}

function drawActions(box, j) {
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
    setAnnounced(id, j.state);
  } catch (e) { showError(e); }
  refreshJobs();
}

/** Wire the jobs view's controls to the state; it draws whenever the models or outputs change. */
export function initJobsView() {
  $('#job-form').addEventListener('submit', submitJob);
  $('#job-outputs').addEventListener('change', (ev) => setOutputTicked(ev.target.value, ev.target.checked));
  $('#jobs-refresh').addEventListener('click', refreshJobs);
  initGallery();
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible' && currentView() === 'jobs') refreshJobs();
  });
  on('models', drawJobMethods);
  on('outputs', drawOutputs);
  on('jobOutputs', drawPrefixField);
}
