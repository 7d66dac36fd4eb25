// The page's state: the ONE place that holds it. Views render from `state` and change it only
// through the functions below (tests/browser/test_web_modules.py refuses assignments to `state.`
// anywhere else); a change another view shows is announced to the views subscribed with `on`.
// Nothing here touches the DOM, and nothing runs at import: `loadApiKey` is called by app.js.
//
// The lists the page offers come from the server: the methods (GET /models' `method_details`:
// name, label, description, where it may run, the CAMs it uses, whether it is a plain threshold of
// them) and classes from GET /models, the job output kinds from GET /outputs. The only method
// knowledge kept here is what the page can do itself: re-threshold the CAMs it already holds
// (raw and refined) for the methods the server says are a plain threshold of them.

export const KEY_STORAGE = 'seam.apiKey';
// The background threshold the slider shows before GET /models names the model's own
// (seam.common.cam.DEFAULT_BG_THRESHOLD).
export const DEFAULT_THRESHOLD = 0.26;
/** How the page names the CAMs it holds (the image view fetches both: /cam and /cam/refined). */
export const CAMS_TEXT = Object.freeze({ raw: 'raw CAMs', refined: 'PCM-refined CAMs' });

/** Fresh, empty results of the image view: no maps, no label. */
const noImageResults = () => ({
  w: 0, h: 0, imageW: 0, imageH: 0, rgba: null, raw: null, refined: null, label: null, labelSource: null,
  serverLabel: null, serverKey: '', timing: null,
});

export const state = {
  apiKey: '',
  models: {
    // methods: [{name, label, description, where: ['sync', 'jobs'], cams, plainThreshold}] in the server's order
    loaded: false, failed: false, names: [], classes: [], methods: [], defaultMethod: null, classThreshold: null,
    description: null,
    // the repository (GET /models `repository`: names, versions, the promoted one) and the default model's
    // NAME:VERSION; `base`: the fields above as GET /models gives them, for the default model
    repository: [], defaultModel: null, base: null,
  },
  // the model chosen for every request: '' = the server's default (no `model` field), 'NAME' = its
  // promoted version, 'NAME:VERSION' = that version
  model: '',
  outputs: { loaded: false, failed: false, kinds: [] }, // GET /outputs, in the server's order
  image: {
    file: null, picked: [], method: null, threshold: DEFAULT_THRESHOLD, labelsSent: null, seq: 0,
    ...noImageResults(),
    frameQueued: false, serverTimer: null, serverAbort: null,
  },
  jobs: {
    list: new Map(), // id -> the job as last listed (with its per-image errors when fetched)
    announced: new Map(), // id -> the state last announced in the status line
    ticked: null, // Set of the output kinds ticked in the form; null: the server's preselection
    timer: null, zips: new Map(), gallery: null,
  },
  trainings: {
    list: new Map(), // id -> the training as last fetched (GET /trainings, GET /trainings/{id})
    timer: null, // the next poll while one is queued or running
    refusals: new Map(), // id -> the server's reason a promotion was refused (the page then offers force)
  },
  corrections: {
    projects: [], // GET /corrections: [{source, project, corrections, images, changes_since_fit, fits, ...}]
    fits: new Map(), // training id of a project's last fit -> the training (GET /trainings/{id})
    timer: null, // the next poll while a last fit is queued or running
  },
};

// ───────────────────────── subscriptions ─────────────────────────
const listeners = new Map(); // topic -> Set of functions

/** Call `fn` after every change of `topic` ('apiKey', 'models', 'modelChoice', 'outputs', 'jobOutputs'). */
export function on(topic, fn) {
  if (!listeners.has(topic)) listeners.set(topic, new Set());
  listeners.get(topic).add(fn);
}

function notify(topic) {
  for (const fn of listeners.get(topic) || []) fn(state);
}

// ───────────────────────── API key ─────────────────────────
/** The key kept in this browser, read once at start. */
export function loadApiKey() {
  try { state.apiKey = localStorage.getItem(KEY_STORAGE) || ''; } catch { state.apiKey = ''; }
  notify('apiKey');
}

export function setApiKey(key) {
  try {
    if (key) localStorage.setItem(KEY_STORAGE, key); else localStorage.removeItem(KEY_STORAGE);
  } catch { /* storage disabled: the key lives for this page only */ }
  state.apiKey = key;
  notify('apiKey');
}

// ───────────────────────── what the server offers ─────────────────────────
/** A method as the page keeps it, from an entry of GET /models' `method_details` (the server's
 *  method table) or, for a name the server lists without details, the name alone (asked of the
 *  server, offered everywhere). */
function methodEntry(m) {
  if (typeof m === 'string') {
    return { name: m, label: '', description: '', where: ['sync', 'jobs'], cams: null, plainThreshold: false };
  }
  return {
    name: String(m.name), label: m.label || m.title || '', description: m.description || '',
    where: Array.isArray(m.where) ? m.where : ['sync', 'jobs'], cams: m.cams || null,
    plainThreshold: Boolean(m.plain_threshold),
  };
}

/** The methods of GET /models: `method_details` in its order, then any name of `methods` it lacks. */
function methodsOf(m) {
  const details = (m.method_details || []).map(methodEntry);
  const known = new Set(details.map((x) => x.name));
  return [...details, ...(m.methods || []).filter((x) => !known.has(x.name || x)).map(methodEntry)];
}

/** The answer of GET /models. The model's own default threshold replaces the slider's the first
 *  time, unless results are already on screen; the chosen mask method is kept while offered, else
 *  the first the page recomputes itself (no request as the slider moves), else the server's default. */
export function setModels(m) {
  const methods = methodsOf(m);
  const names = methods.map((x) => x.name);
  const defaultMethod = (m.default_method && (m.default_method.name || m.default_method)) || names[0] || null;
  const thr = Number(m.default_threshold);
  if (!state.models.loaded && m.default_threshold != null && thr >= 0 && thr <= 1 && !state.image.refined) {
    state.image.threshold = thr;
  }
  const base = {
    names: (m.models || []).map((x) => x.name), classes: m.classes || [], methods, defaultMethod,
    classThreshold: typeof m.class_threshold === 'number' ? m.class_threshold : null, description: m.description || null,
  };
  Object.assign(state.models, {
    loaded: true, failed: false, base, repository: Array.isArray(m.repository) ? m.repository : [],
    defaultModel: m.default_model || null,
  });
  if (state.model && !findVersion(state.model)) state.model = '';
  applyModel();
  notify('models');
}

/** The repository's entry and version that `ref` names ('NAME': the version serving requests
 *  without one, else the promoted one; 'NAME:VERSION'), or null. */
export function findVersion(ref) {
  const [name, v] = String(ref || '').split(':');
  const entry = state.models.repository.find((e) => e.name === name);
  if (!entry) return null;
  const want = v === undefined ? (entry.serving ?? entry.promoted) : Number(v);
  const version = (entry.versions || []).find((x) => x.version === want);
  return version ? { entry, version } : null;
}

/** The model fields the views render: GET /models' own for the server's default model, else
 *  the chosen version's classes, methods (their details from `method_details` by name) and
 *  description from the repository listing. */
function applyModel() {
  const { base } = state.models;
  const found = state.model ? findVersion(state.model) : null;
  const ref = found ? `${found.entry.name}:${found.version.version}` : null;
  if (!found || ref === state.models.defaultModel) {
    Object.assign(state.models, base);
  } else {
    const byName = new Map(base.methods.map((x) => [x.name, x]));
    const methods = (found.version.methods || []).map((n) => byName.get(n) || methodEntry(n));
    Object.assign(state.models, {
      names: [ref], classes: found.version.classes || [], methods, classThreshold: null,
      description: found.version.description || null,
      defaultMethod: methods.length ? methods[0].name : null,
    });
  }
  const sync = methodsFor('sync').map((x) => x.name);
  if (!sync.includes(state.image.method)) {
    const { defaultMethod } = state.models;
    state.image.method = sync.find((x) => browserCams(x)) || (sync.includes(defaultMethod) ? defaultMethod : sync[0])
      || null;
  }
  state.image.picked = state.image.picked.filter((c) => state.models.classes.includes(c));
}

/** Choose the model of the next requests ('' = the server's default); the views redraw
 *  ('models') and the image view computes the shown image again ('modelChoice'). */
export function setModelChoice(ref) {
  state.model = ref && findVersion(ref) ? ref : '';
  applyModel();
  notify('models');
  notify('modelChoice');
}

/** The `model` field of a request: the chosen model, or null for the server's default. */
export function modelField() { return state.model || null; }

export function setModelsFailed() {
  state.models.failed = true;
  notify('models');
}

/** The answer of GET /outputs: [{kind, extension, media_type, label, description, requires, preselected, ...}]. */
export function setOutputs(kinds) {
  Object.assign(state.outputs, { loaded: true, failed: false, kinds });
  notify('outputs');
}

export function setOutputsFailed() {
  state.outputs.failed = true;
  notify('outputs');
}

export function methodNames() { return state.models.methods.map((m) => m.name); }

/** The methods that may run in `where` ('sync': the image view's POST /segment; 'jobs'). */
export function methodsFor(where) { return state.models.methods.filter((m) => m.where.includes(where)); }

/** Which CAMs the page thresholds itself for method `name` ('raw' | 'refined'), or null when the
 *  server computes its mask: the server says it is a plain threshold of CAMs the page holds. */
export function browserCams(name) {
  const m = state.models.methods.find((x) => x.name === name);
  return m && m.plainThreshold && Object.hasOwn(CAMS_TEXT, m.cams) ? m.cams : null;
}

// ───────────────────────── image view ─────────────────────────
export function setThreshold(t) { state.image.threshold = t; }
export function setMaskMethod(m) { state.image.method = m; }
/** Tick or untick class `name`; the ticked ones stay in the model's class order. */
export function setClassPicked(name, on) {
  const { picked } = state.image;
  state.image.picked = state.models.classes.filter((c) => (c === name ? on : picked.includes(c)));
}
export function clearPickedClasses() { state.image.picked = []; }
export function setImageFile(file) { state.image.file = file; }

/** Forget the shown results and stop what is pending for them. */
export function clearImageResults() {
  Object.assign(state.image, noImageResults());
  clearTimeout(state.image.serverTimer);
  if (state.image.serverAbort) state.image.serverAbort.abort();
}

/** A new computation: the ones still running for an older image must not draw. */
export function nextImageRun() { return ++state.image.seq; }
export function isCurrentRun(seq) { return seq === state.image.seq; }

/** The maps of a finished computation, at the drawn w x h grid. */
export function setImageResults({ w, h, imageW, imageH, rgba, raw, refined, labelsSent }) {
  Object.assign(state.image, { w, h, imageW, imageH, rgba, raw, refined, labelsSent, label: null, serverLabel: null,
                               serverKey: '' });
}

export function setImageTiming(timing) { state.image.timing = timing; }

/** The label map on screen and what made it ({method, threshold}). */
export function setLabel(label, source) { Object.assign(state.image, { label, labelSource: source }); }

/** A mask the server computed, remembered for its method@threshold `key`. */
export function setServerLabel(label, key, source) {
  Object.assign(state.image, { serverLabel: label, serverKey: key });
  setLabel(label, source);
}

export function setFrameQueued(queued) { state.image.frameQueued = queued; }
export function setServerTimer(timer) {
  clearTimeout(state.image.serverTimer);
  state.image.serverTimer = timer;
}

/** A new AbortController for the server mask request, aborting the previous one. */
export function newServerAbort() {
  if (state.image.serverAbort) state.image.serverAbort.abort();
  state.image.serverAbort = new AbortController();
  return state.image.serverAbort;
}

// ───────────────────────── jobs view ─────────────────────────
/** The output kinds ticked in the jobs form (the server's preselection until the user ticks). */
export function tickedOutputs() {
  const { ticked } = state.jobs;
  return state.outputs.kinds.map((k) => k.kind).filter((k) => (ticked ? ticked.has(k)
    : state.outputs.kinds.find((x) => x.kind === k).preselected));
}

export function setOutputTicked(kind, on) {
  const ticked = new Set(tickedOutputs());
  if (on) ticked.add(kind); else ticked.delete(kind);
  state.jobs.ticked = ticked;
  notify('jobOutputs');
}

/** Back to the server's preselection (the form was reset). */
export function resetTickedOutputs() {
  state.jobs.ticked = null;
  notify('jobOutputs');
}

/** The listed jobs, newest first (those no longer listed are forgotten); returns the previous list. */
export function setJobs(list) {
  const previous = state.jobs.list;
  state.jobs.list = new Map(list.map((j) => [j.id, j]));
  return previous;
}

/** Remember `jobState` as announced for job `id`; returns the state announced before. */
export function setAnnounced(id, jobState) {
  const before = state.jobs.announced.get(id);
  state.jobs.announced.set(id, jobState);
  return before;
}

export function setPollTimer(timer) {
  clearTimeout(state.jobs.timer);
  state.jobs.timer = timer;
}

/** The results zip of job `id`, fetched once by `fetchZip` (a failed fetch is forgotten). */
export function jobZip(id, fetchZip) {
  if (!state.jobs.zips.has(id)) {
    const p = fetchZip(id);
    state.jobs.zips.set(id, p);
    p.catch(() => state.jobs.zips.delete(id));
  }
  return state.jobs.zips.get(id);
}

/** The open gallery ({id, urls}) or null; the object URLs of the one closed are revoked. */
export function setGallery(gallery) {
  if (state.jobs.gallery) state.jobs.gallery.urls.forEach((u) => URL.revokeObjectURL(u));
  state.jobs.gallery = gallery;
}

// ───────────────────────── trainings view ─────────────────────────
/** The listed trainings, newest first (GET /trainings). */
export function setTrainings(list) {
  state.trainings.list = new Map(list.map((t) => [t.id, t]));
}

/** One training as GET /trainings/{id} (or a POST) answered. */
export function setTraining(t) {
  state.trainings.list.set(t.id, t);
}

/** Why the server refused to promote training `id` (null: forget it). */
export function setPromoteRefusal(id, message) {
  if (message) state.trainings.refusals.set(id, message); else state.trainings.refusals.delete(id);
}

export function setTrainingsTimer(timer) {
  clearTimeout(state.trainings.timer);
  state.trainings.timer = timer;
}

// ───────────────────────── corrections view ─────────────────────────
/** The caller's labelling projects (GET /corrections). */
export function setCorrectionProjects(list) {
  state.corrections.projects = list;
}

/** The training of a project's fit as GET /trainings/{id} answered. */
export function setFitTraining(t) {
  state.corrections.fits.set(t.id, t);
}

export function setCorrectionsTimer(timer) {
  clearTimeout(state.corrections.timer);
  state.corrections.timer = timer;
}
