// The loaded models: classes and methods (GET /models), the class list and method selects.
import { api, say, showError } from './api.js';
import { $, el } from './dom.js';
import { img } from './image-view.js';
import { rgbCss, VOC } from './palette.js';

export const models = { classes: [], methods: [], defaultMethod: null, classThreshold: null, description: null,
                         loaded: false };

export async function loadModels() {
  try {
    const m = await (await api('/models')).json();
    models.classes = m.classes || [];
    models.methods = m.methods || [];
    models.defaultMethod = m.default_method || models.methods[0] || null;
    models.classThreshold = typeof m.class_threshold === 'number' ? m.class_threshold : null;
    models.description = m.description || null;
    renderDescription((m.models || []).map((x) => x.name));
    const thr = Number(m.default_threshold);
    if (!models.loaded && m.default_threshold != null && thr >= 0 && thr <= 1 && !img.refined) {
      $('#threshold').value = String(thr); // the model's own default, when the API says it
      $('#threshold-value').textContent = thr.toFixed(2);
    }
    models.loaded = true;
    renderClassList();
    renderMethodSelects();
    const names = (m.models || []).map((x) => x.name).join(', ');
    say(`Ready: ${names || 'model'} with ${models.classes.length} classes.`);
    return true;
  } catch (e) {
    $('#class-list').textContent = 'Classes unavailable.';
    showError(e);
    return false;
  }
}

/** What the model knows, so that a photo from outside its domain is not read as one of its
 *  classes unawares (a cat is not a "ring"). */
export function renderDescription(names) {
  const who = names.length ? names.join(', ') : 'The model';
  const knows = `It knows only these classes: ${models.classes.join(', ')}; any other image still gets the closest of them.`;
  $('#model-description').textContent = models.description
    ? `${who}: ${models.description}. ${knows}`
    : `${who} does not describe what it was trained on. ${knows}`;
}

export function renderClassList() {
  const list = $('#class-list');
  list.replaceChildren();
  models.classes.forEach((name, i) => {
    const id = `class-${i}`;
    list.append(el('label', { for: id },
      el('input', { type: 'checkbox', id, name: 'classes', value: name }),
      el('span', { class: 'swatch', style: { backgroundColor: rgbCss(VOC[i + 1]) }, 'aria-hidden': 'true' }),
      name));
  });
}

export function renderMethodSelects() {
  const pref = models.methods.includes('pcm') ? 'pcm' : models.defaultMethod;
  const maskSel = $('#mask-method');
  maskSel.replaceChildren(...models.methods.map((m) => el('option', { value: m, text: methodLabel(m), selected: m === pref })));
  const jobSel = $('#job-method');
  jobSel.replaceChildren(el('option', { value: '', text: `default (${models.defaultMethod || 'best'})` }),
    ...models.methods.map((m) => el('option', { value: m, text: methodLabel(m) })));
}

export function methodLabel(m) {
  return { cam: 'cam (raw CAMs)', pcm: 'pcm (PCM-refined CAMs)', rw: 'rw (random walk)', deeplab: 'deeplab' }[m] || m;
}
