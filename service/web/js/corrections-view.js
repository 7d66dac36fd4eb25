// Corrections view: the caller's labelling projects (GET /corrections: Label Studio projects and CVAT
// tasks with what annotators corrected), each with its number of corrections and its last fit, and a
// "Fit now" button (POST /corrections/{source}/{project}/fit). A fit is a training: its state, the
// version it published and its held-out evaluation (new vs promoted) come from GET /trainings/{id},
// drawn with the Train view's own text functions, polled while it is queued or running.
import { api } from './api.js';
import { $, currentView, el, fillTable } from './dom.js';
import { setCorrectionProjects, setCorrectionsTimer, setFitTraining, state } from './state.js';
import { clearError, say, showError } from './status.js';
import { evaluationText, isActive, progressText } from './trainings-view.js';

const POLL_MS = 1000;
const SOURCES = { labelstudio: 'Label Studio', cvat: 'CVAT' };
const lastFit = (p) => (p.fits && p.fits.length ? p.fits[p.fits.length - 1] : null);
const fitTraining = (p) => { const f = lastFit(p); return f ? state.corrections.fits.get(f.training) : null; };

/** GET /corrections, then GET /trainings/{id} of each project's last fit; polled while one is active. */
export async function refreshCorrections() {
  setCorrectionsTimer(null);
  try {
    setCorrectionProjects((await (await api('/corrections')).json()).projects);
    await Promise.all(state.corrections.projects.map(lastFit).filter(Boolean).map(async (f) => {
      const known = state.corrections.fits.get(f.training);
      if (known && !isActive(known)) return; // a finished training does not change
      try {
        setFitTraining(await (await api(`/trainings/${f.training}`)).json());
      } catch (e) {
        if (e.status !== 404) throw e; // a training removed since: the fit shows without it
      }
    }));
  } catch (e) {
    showError(e);
  }
  drawCorrections();
  const active = state.corrections.projects.some((p) => { const t = fitTraining(p); return t && isActive(t); });
  if (active && document.visibilityState !== 'hidden' && currentView() === 'corrections') {
    setCorrectionsTimer(setTimeout(refreshCorrections, POLL_MS));
  }
}

/** The last fit: the training's state and progress, the version it published, its evaluation. */
function fitCell(p) {
  const f = lastFit(p);
  if (!f) return el('td', { 'data-field': 'fit', text: 'no fit yet' });
  const t = fitTraining(p);
  const version = t && t.model ? `${t.model}${t.promoted ? ' (promoted)' : ''}` : f.model;
  return el('td', { 'data-field': 'fit', 'data-state': t ? t.state : 'unknown' },
    el('div', {}, el('code', { text: f.training.slice(0, 8) }), ` ${t ? t.state : 'training not found'} · ${version}`),
    t ? el('div', { class: 'when', 'data-field': 'progress', text: progressText(t) }) : null,
    t ? el('div', { class: 'when', 'data-field': 'evaluation', text: evaluationText(t) }) : null,
    t && t.error ? el('div', { class: 'error-text', text: t.error }) : null,
    el('div', { class: 'when', text: `${f.corrected} corrected of ${f.images} images · ${f.reason}` }));
}

function projectRow(p) {
  const t = fitTraining(p);
  const busy = Boolean(t && isActive(t));
  return el('tr', { 'data-project': `${p.source}/${p.project}` },
    el('td', { 'data-field': 'source', text: SOURCES[p.source] || p.source }),
    el('td', { 'data-field': 'project' }, el('code', { text: p.project })),
    el('td', { 'data-field': 'corrections', text: String(p.corrections) },
      el('div', { class: 'when', text: `${p.images} images, ${p.changes_since_fit} changed since the last fit` })),
    fitCell(p),
    el('td', {}, el('button', { type: 'button', 'data-action': 'fit', disabled: busy,
      'aria-label': `Fit now: ${p.source} project ${p.project}`, text: 'Fit now', onclick: () => fitNow(p) })));
}

function drawCorrections() {
  const list = state.corrections.projects;
  fillTable('corrections', list.map(projectRow));
}

/** POST .../fit with the server's defaults; the answer names the training that follows it. */
async function fitNow(p) {
  clearError();
  try {
    const fit = await (await api(`/corrections/${p.source}/${encodeURIComponent(p.project)}/fit`, { method: 'POST' })).json();
    say(`Fit of ${p.source} project ${p.project} started: training ${fit.training.slice(0, 8)}.`);
  } catch (e) { showError(e); }
  await refreshCorrections();
}

export function initCorrectionsView() {
  $('#corrections-refresh').addEventListener('click', () => { clearError(); refreshCorrections(); });
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible' && currentView() === 'corrections') refreshCorrections();
  });
}
