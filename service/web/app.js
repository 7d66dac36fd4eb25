/* SEAM segmentation page. Plain JavaScript, no build step, no dependencies.
 *
 * Image view: the raw and the PCM-refined CAMs are fetched once as npz (float32, at the
 * model's working size, resampled here to the drawn size: at most 1024 px a side), the
 * heat maps are drawn here, and the mask is recomputed here on every slider move with
 * the server's rule  label = argmax([threshold, cam_1 .. cam_K])  (ties -> the first,
 * threshold cast to float32 like numpy does), so re-thresholding needs no new upload.
 * Methods that are not a plain threshold of those CAMs (rw, deeplab) ask /segment.
 *
 * Jobs view: submit an archive, poll the jobs, cancel, download the results zip, and
 * show a gallery of the overlays read from that zip.
 *
 * Train view: upload an archive to POST /trainings, follow its progress, promote the version it
 * published. Corrections view: the labelling projects' corrections and fits, "Fit now". The model picker (header) names the model version every request asks for.
 *
 * The page's state lives in js/state.js; the modules under js/ hold one concern each and
 * do nothing when imported. This entry module wires them up in start(), its one top-level
 * statement (tests/browser/test_web_modules.py checks both).
 */
import { loadModels, loadOutputs } from './js/catalog.js';
import { $, currentView } from './js/dom.js';
import { initImageView } from './js/image-view.js';
import { refreshJobs, initJobsView } from './js/jobs-view.js';
import { initMask } from './js/mask.js';
import { initModelPicker } from './js/model-picker.js';
import { initTrainingsView, refreshTrainings } from './js/trainings-view.js';
import { initCorrectionsView, refreshCorrections } from './js/corrections-view.js';
import { loadApiKey, on, setApiKey, state } from './js/state.js';
import { clearError, say } from './js/status.js';

// ───────────────────────── views ─────────────────────────
function showView(focus) {
  const view = currentView();
  $('#view-image').hidden = view !== 'image';
  $('#view-jobs').hidden = view !== 'jobs';
  $('#view-train').hidden = view !== 'train';
  $('#view-corrections').hidden = view !== 'corrections';
  document.querySelectorAll('nav a[data-view]').forEach((a) => {
    if (a.dataset.view === view) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  });
  const titles = { image: 'Segment an image', jobs: 'Batch jobs', train: 'Train', corrections: 'Corrections' };
  document.title = `${titles[view]} · SEAM segmentation`;
  if (view === 'jobs') refreshJobs();
  if (view === 'train') refreshTrainings();
  if (view === 'corrections') refreshCorrections();
  if (focus) $(`#${view}-title`).focus();
}

function drawApiKey() {
  $('#apikey-state').textContent = state.apiKey ? '(set)' : '(none)';
  $('#apikey-input').value = state.apiKey;
}

function initApiKey() {
  on('apiKey', drawApiKey);
  $('#apikey-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    setApiKey(String(new FormData(ev.target).get('apikey') || '').trim());
    say(state.apiKey ? 'API key saved in this browser.' : 'API key removed.');
    clearError();
    loadModels();
    if (currentView() === 'jobs') refreshJobs();
    if (currentView() === 'train') refreshTrainings();
    if (currentView() === 'corrections') refreshCorrections();
  });
  $('#apikey-clear').addEventListener('click', () => {
    setApiKey('');
    say('API key removed from this browser.');
  });
}

/** A read-only hook for the browser tests (and curious users): what the image view shows. */
function installTestHook() {
  const img = state.image;
  window.seamPage = {
    labelMap: () => (img.label ? Array.from(img.label) : null),
    size: () => ({ width: img.w, height: img.h }), // the drawn grid (the image's size up to 1024 px a side)
    imageSize: () => ({ width: img.imageW, height: img.imageH }),
    timing: () => img.timing, // {totalMs, serverMs, bytes} of the last computation
    maskSource: () => img.labelSource || null,
    classes: () => (img.refined ? img.refined.classes.slice() : null),
  };
}

function start() {
  ['#image-title', '#jobs-title', '#train-title', '#corrections-title'].forEach((s) => $(s).setAttribute('tabindex', '-1'));
  initApiKey();
  initImageView();
  initMask();
  initJobsView();
  initModelPicker();
  initTrainingsView();
  initCorrectionsView();
  installTestHook();
  loadApiKey();
  window.addEventListener('hashchange', () => showView(true));
  showView(false);
  loadModels();
  loadOutputs();
}

start();
