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
 * The modules under js/ hold one concern each; this entry module wires the views.
 */
import { clearError, say, sessionKey, setApiKey } from './js/api.js';
import { $, currentView } from './js/dom.js';
import { img, initImageView } from './js/image-view.js';
import { initJobsView, refreshJobs } from './js/jobs-view.js';
import { loadModels } from './js/models.js';

// ───────────────────────── views ─────────────────────────
function showView(focus) {
  const view = currentView();
  $('#view-image').hidden = view !== 'image';
  $('#view-jobs').hidden = view !== 'jobs';
  document.querySelectorAll('nav a[data-view]').forEach((a) => {
    if (a.dataset.view === view) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  });
  document.title = `${view === 'jobs' ? 'Batch jobs' : 'Segment an image'} · SEAM segmentation`;
  if (view === 'jobs') refreshJobs();
  if (focus) $(view === 'jobs' ? '#jobs-title' : '#image-title').focus();
}

function initApiKey() {
  $('#apikey-state').textContent = sessionKey ? '(set)' : '(none)';
  $('#apikey-input').value = sessionKey;
  $('#apikey-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    setApiKey($('#apikey-input').value.trim());
    say(sessionKey ? 'API key saved in this browser.' : 'API key removed.');
    clearError();
    loadModels();
    if (currentView() === 'jobs') refreshJobs();
  });
  $('#apikey-clear').addEventListener('click', () => {
    $('#apikey-input').value = '';
    setApiKey('');
    say('API key removed from this browser.');
  });
}

function init() {
  ['#image-title', '#jobs-title'].forEach((s) => $(s).setAttribute('tabindex', '-1'));
  initApiKey();
  initImageView();
  initJobsView();
  window.addEventListener('hashchange', () => showView(true));
  showView(false);
  loadModels();
}

// A read-only hook for the browser tests (and curious users): the current label map.
window.seamPage = {
  labelMap: () => (img.label ? Array.from(img.label) : null),
  size: () => ({ width: img.w, height: img.h }), // the drawn grid (the image's size up to 1024 px a side)
  imageSize: () => ({ width: img.imageW, height: img.imageH }),
  timing: () => img.timing, // {totalMs, serverMs, bytes} of the last computation
  maskSource: () => img.labelSource || null,
  classes: () => (img.refined ? img.refined.classes.slice() : null),
};

init();
