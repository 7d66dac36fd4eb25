// The model picker in the page header: which model (and version) of the repository every request
// names (`model` = NAME or NAME:VERSION; "server default" sends none). Its options are GET /models'
// `repository`; hidden when the server lists none (the fake engine, an old server).
import { $, el } from './dom.js';
import { on, setModelChoice, state } from './state.js';

/** One version's option: NAME:VERSION, whether it is promoted, and its load state (a refused
 *  version is listed, disabled, with the server's reason). */
function versionOption(entry, v) {
  const ref = `${entry.name}:${v.version}`;
  const notes = [v.promoted ? 'promoted' : '', v.state || ''].filter(Boolean).join(', ');
  return el('option', { value: ref, text: notes ? `${ref} (${notes})` : ref, disabled: v.state === 'refused',
    title: v.error || '', selected: state.model === ref });
}

function drawPicker() {
  const { repository, defaultModel } = state.models;
  $('#model-picker').hidden = !repository.length;
  if (!repository.length) return;
  const options = [el('option', { value: '', text: `server default${defaultModel ? ` (${defaultModel})` : ''}`,
    selected: !state.model })];
  for (const entry of repository) {
    const { promoted } = entry;
    options.push(el('optgroup', { label: entry.name },
      el('option', { value: entry.name, text: `${entry.name} (promoted${promoted == null ? '' : `: ${promoted}`})`,
        selected: state.model === entry.name }),
      ...(entry.versions || []).map((v) => versionOption(entry, v))));
  }
  $('#model-select').replaceChildren(...options);
}

export function initModelPicker() {
  const select = $('#model-select');
  select.addEventListener('change', () => setModelChoice(select.value));
  on('models', drawPicker);
}
