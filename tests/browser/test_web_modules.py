"""The web page's ES modules, read as text (no browser, fast): no import cycles, no DOM work when a
module is imported (app.js starts the page with one explicit call), and the page's state changed
only inside js/state.js. A small JavaScript tokenizer (strings, template literals, regex literals
and comments skipped) finds the code that runs at import: everything outside function, method and
arrow-function bodies. Where Node.js is installed, importing every module with no DOM at all
confirms it at run time."""
from __future__ import annotations

import json
import posixpath
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest
from seam.service.api.routes import web

WEB = Path(web.__file__).resolve().parents[2] / "web"
ENTRY = "app.js"
STATE = "js/state.js"
# The floors (docs/web.md): a module imports only from floors below its own. A new module gets a line.
FLOORS = [
    ["js/state.js", "js/dom.js", "js/palette.js", "js/formats.js"],
    ["js/pixels.js", "js/status.js", "js/api.js"],
    ["js/catalog.js"],
    ["js/mask.js", "js/gallery.js", "js/model-picker.js"],
    ["js/image-view.js", "js/jobs-view.js", "js/trainings-view.js"],
    ["js/corrections-view.js"],  # reuses the Train view's text of a training (its fits are trainings)
    [ENTRY],
]

# What no module may touch while it is being imported: the document and the browser around it.
DOM_GLOBALS = {"document", "window", "location", "localStorage", "sessionStorage", "history", "navigator",
               "requestAnimationFrame", "customElements", "fetch"}
DOM_MEMBERS = {"getElementById", "querySelector", "querySelectorAll", "addEventListener"}
DOM_HELPERS = {"$", "el"}  # js/dom.js: a call of either is DOM work
CONTROL = {"if", "for", "while", "switch", "catch", "with", "function"}
REGEX_AFTER = set("(,=:[!&|?{};+-*%<>~^") | {"=>", "==", "===", "!=", "!==", "&&", "||", "??", "return", "typeof",
                                              "case", "do", "else", "in", "of", "new", "delete", "void", "throw",
                                              "yield", "await", None}
_CODE = re.compile(r"""(?P<ws>\s+)|(?P<line>//[^\n]*)|(?P<block>/\*.*?\*/)
    |(?P<str>'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*")|(?P<num>\d[\w.]*)|(?P<id>[A-Za-z_$][\w$]*)
    |(?P<punct>=>|\.\.\.|\?\.|[=!]==?|&&=?|\|\|=?|\?\?=?|\+\+|--|[-+*/%&|^<>]=|<<|>>>?|[-+*/%&|^<>!~?:;,.()\[\]={}`])""",
                   re.S | re.X)


def tokens(src: str) -> list[str]:
    """The code tokens of `src`: identifiers, punctuation, and '"…"' for a string, regex or template
    text. A template's `${…}` comes out as '(' … ')', so the code inside it is kept."""
    out: list[str] = []
    i = 0
    while i < len(src):
        prev = out[-1] if out else None
        if src[i] == "`":
            i = _template(src, i + 1, out)
        elif src[i] == "/" and prev in REGEX_AFTER and src[i:i + 2] not in ("//", "/*"):
            i = _regex_end(src, i)
            out.append('"…"')
        else:
            m = _CODE.match(src, i)
            if m is None:
                raise ValueError(f"cannot read {src[i:i + 30]!r}")
            i = m.end()
            if m.lastgroup == "str":
                out.append('"…"')
            elif m.lastgroup not in ("ws", "line", "block"):
                out.append(m.group())
    return out


def _template(src: str, i: int, out: list[str]) -> int:
    """Read template text from `i` up to its closing backtick or a `${` (emitted as '(' whose
    code the caller then reads, its '}' closing it); returns where to go on."""
    out.append('"…"')
    while i < len(src):
        c = src[i]
        if c == "\\":
            i += 2
        elif c == "`":
            return i + 1
        elif src.startswith("${", i):
            out.append("(")
            j, depth = i + 2, 1
            start = j
            while depth:  # the expression, with its own braces and nested templates
                if src[j] == "{":
                    depth += 1
                elif src[j] == "}":
                    depth -= 1
                elif src[j] in "'\"`":
                    j = _skip_quoted(src, j)
                    continue
                j += 1
            out.extend(tokens(src[start:j - 1]))
            out.append(")")
            i = j
        else:
            i += 1
    raise ValueError("unterminated template literal")


def _skip_quoted(src: str, i: int) -> int:
    q = src[i]
    i += 1
    while src[i] != q:
        i += 2 if src[i] == "\\" else 1
    return i + 1


def _regex_end(src: str, i: int) -> int:
    i += 1
    in_class = False
    while src[i] != "/" or in_class:
        if src[i] == "\\":
            i += 1
        elif src[i] == "[":
            in_class = True
        elif src[i] == "]":
            in_class = False
        elif src[i] == "\n":
            raise ValueError("unterminated regex literal")
        i += 1
    i += 1
    while i < len(src) and (src[i].isalnum() or src[i] == "_"):
        i += 1
    return i


def _group_end(toks: list[str], i: int) -> int:
    """Index after the bracket group opening at `i`."""
    pairs = {"(": ")", "[": "]", "{": "}"}
    depth = 0
    for j in range(i, len(toks)):
        if toks[j] in pairs:
            depth += 1
        elif toks[j] in pairs.values():
            depth -= 1
            if depth == 0:
                return j + 1
    raise ValueError("unbalanced brackets")


def _expression_end(toks: list[str], i: int) -> int:
    """Index after an arrow function's expression body starting at `i`."""
    j = i
    while j < len(toks) and toks[j] not in (",", ";", ")", "]", "}"):
        j = _group_end(toks, j) if toks[j] in "([{" else j + 1
    return j


def _drop_params(out: list[str]) -> None:
    """Remove an arrow function's parameters (and `async`) from the end of `out`."""
    if out and out[-1] == ")":
        depth = 0
        for j in range(len(out) - 1, -1, -1):
            depth += {")": 1, "(": -1}.get(out[j], 0)
            if depth == 0:
                del out[j:]
                break
    elif out:
        out.pop()
    if out and out[-1] == "async":
        out.pop()


def import_time(toks: list[str]) -> list[str]:
    """The tokens of the code that runs when the module is imported: all but import statements and
    the bodies (and parameters) of functions, methods, classes and arrow functions."""
    out: list[str] = []
    i = 0
    while i < len(toks):
        t = toks[i]
        if t == "import" and (i + 1 < len(toks) and toks[i + 1] != "("):
            while i < len(toks) and toks[i] != ";":
                i += 1
            i += 1
        elif t == "function":
            i += 1
            while toks[i] != "(":
                i += 1
            i = _group_end(toks, _group_end(toks, i))  # the parameters, then the body
        elif t == "class":
            while toks[i] != "{":
                i += 1
            i = _group_end(toks, i)
        elif t == "=>":
            _drop_params(out)
            i = _group_end(toks, i + 1) if toks[i + 1] == "{" else _expression_end(toks, i + 1)
        elif t == "{" and out and out[-1] == ")" and _method_name(out) is not None:
            _drop_params(out)  # a method `name(…) { … }` of an object literal
            out.pop()
            i = _group_end(toks, i)
        else:
            out.append(t)
            i += 1
    return out


def _method_name(out: list[str]) -> str | None:
    depth = 0
    for j in range(len(out) - 1, -1, -1):
        depth += {")": 1, "(": -1}.get(out[j], 0)
        if depth == 0:
            name = out[j - 1] if j else None
            return name if name and re.fullmatch(r"[A-Za-z_$][\w$]*", name) and name not in CONTROL else None
    return None


def dom_at_import(src: str) -> list[str]:
    """The DOM names the module touches while being imported."""
    run = import_time(tokens(src))
    found = []
    for k, t in enumerate(run):
        member = k > 0 and run[k - 1] in (".", "?.")
        called = k + 1 < len(run) and run[k + 1] == "("
        if (t in DOM_GLOBALS and not member) or t in DOM_MEMBERS or (t in DOM_HELPERS and called and not member):
            found.append(t)
    return found


_STATE_CHAIN = r"(?<![\w$.])state(?:\s*(?:\?\.|\.)\s*[\w$]+|\s*\[[^\]]*\])*"
STATE_WRITES = [
    re.compile(_STATE_CHAIN + r"\s*(?:[-+*/%&|^]|\*\*|<<|>>>?|&&|\|\||\?\?)?=(?!=)"),
    re.compile(r"(?:\+\+|--)\s*" + _STATE_CHAIN),
    re.compile(_STATE_CHAIN + r"\s*(?:\+\+|--)"),
    re.compile(r"Object\s*\.\s*assign\s*\(\s*state\b"),
    re.compile(_STATE_CHAIN + r"\s*\.\s*(?:set|delete|clear|add|push|pop|shift|unshift|splice)\s*\("),
]


def state_writes(src: str) -> list[str]:
    code = re.sub(r"/\*.*?\*/|//[^\n]*", "", src, flags=re.S)
    return [m.group().strip() for p in STATE_WRITES for m in p.finditer(code)]


_IMPORT = re.compile(r"""\b(?:import|export)\b[^;'"`]*?\bfrom\s*['"]([^'"]+)['"]|\bimport\s*\(?\s*['"]([^'"]+)['"]""")


def imports(src: str) -> list[str]:
    code = re.sub(r"/\*.*?\*/|//[^\n]*", "", src, flags=re.S)
    return [a or b for a, b in _IMPORT.findall(code)]


def module_sources(root: Path = WEB) -> dict[str, str]:
    files = [root / ENTRY, *sorted((root / "js").glob("*.js"))]
    return {p.relative_to(root).as_posix(): p.read_text() for p in files}


def import_graph(sources: Mapping[str, str]) -> dict[str, list[str]]:
    """module -> the modules it imports (paths relative to the web folder)."""
    return {name: [posixpath.normpath(posixpath.join(posixpath.dirname(name), spec)) for spec in imports(src)]
            for name, src in sources.items()}


def find_cycle(graph: Mapping[str, list[str]]) -> list[str] | None:
    """One import cycle as [a, b, …, a], or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return path[path.index(node):] + [node]
        if node in done:
            return None
        for nxt in graph.get(node, []):
            cycle = visit(nxt, [*path, node])
            if cycle:
                return cycle
        done.add(node)
        return None

    return next((c for n in graph if (c := visit(n, [])) is not None), None)


# ───────────────────────── the page ─────────────────────────
@pytest.fixture(scope="module")
def sources() -> dict[str, str]:
    return module_sources()


def test_every_import_resolves_and_no_cycle(sources):
    graph = import_graph(sources)
    missing = {m: [d for d in deps if d not in sources] for m, deps in graph.items()}
    assert not any(missing.values()), missing
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"
    # every module is reachable from the entry (none left behind after a move)
    seen, todo = set(), [ENTRY]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += graph[m]
    assert seen == set(sources), set(sources) - seen


def test_imports_go_down_the_floors(sources):
    floor = {m: k for k, names in enumerate(FLOORS) for m in names}
    assert set(floor) == set(sources), f"place every module on a floor: {set(sources) ^ set(floor)}"
    upward = [f"{m} -> {d}" for m, deps in import_graph(sources).items() for d in deps if floor[d] >= floor[m]]
    assert not upward, upward


def test_no_dom_work_at_import(sources):
    found = {name: dom_at_import(src) for name, src in sources.items()}
    assert not any(found.values()), found
    # the page starts with one explicit call at the end of app.js
    assert import_time(tokens(sources[ENTRY]))[-4:] == ["start", "(", ")", ";"]


def test_state_changes_only_in_the_state_module(sources):
    writes = {name: state_writes(src) for name, src in sources.items() if name != STATE}
    assert not any(writes.values()), writes
    assert state_writes(sources[STATE])  # the check sees the writes where they belong


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_modules_import_without_a_dom(tmp_path):
    """Run-time confirmation: every module under js/ imports in Node, which has no document,
    window or localStorage (app.js is left out: it starts the page)."""
    shutil.copytree(WEB / "js", tmp_path / "js")
    (tmp_path / "package.json").write_text(json.dumps({"type": "module"}))
    names = sorted(p.name for p in (tmp_path / "js").glob("*.js"))
    script = f"for (const n of {json.dumps(names)}) await import('./js/' + n);"
    (tmp_path / "check.mjs").write_text(script)
    r = subprocess.run(["node", "check.mjs"], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr[-2000:]


# ───────────────────────── the checks themselves ─────────────────────────
@pytest.mark.parametrize("src", [
    "export const statusEl = $('#status');",
    "window.seamPage = {};",
    "const t = `title: ${document.title}`;",
    "const re = /[{]/; document.title;",
    "if (ready) { document.body.append(x); }",
    "export let key = localStorage.getItem('k');",
    "list.addEventListener('change', f);",
])
def test_dom_at_import_is_seen(src):
    assert dom_at_import(src), src


@pytest.mark.parametrize("src", [
    "export const $ = (sel, root = document) => root.querySelector(sel);",
    "export function f() { document.title = 'x'; }",
    "export async function g(a = window) { await fetch('/x'); }",
    "const o = { m() { return document.body; }, n: () => window.x, k: async (a) => { $('#a'); } };",
    "class A extends Error { constructor() { super(); this.x = document.body; } }",
    "const f = () => `${document.title}`; const re = /[}]/g;",
    "const s = 'document.title'; // document.title\n/* window */",
    "import { $ } from './dom.js';\nstart();",
])
def test_deferred_dom_is_not_import_time(src):
    assert not dom_at_import(src), (src, import_time(tokens(src)))


def test_find_cycle_sees_the_old_models_image_view_loop():
    old = {"app.js": ["js/models.js", "js/image-view.js"], "js/models.js": ["js/image-view.js", "js/api.js"],
           "js/image-view.js": ["js/models.js"], "js/api.js": []}
    assert find_cycle(old) == ["js/models.js", "js/image-view.js", "js/models.js"]
    assert find_cycle({**old, "js/image-view.js": []}) is None


def test_imports_read_every_form():
    src = ("import { a } from './a.js';\nimport './b.js';\nexport { c } from \"./c.js\";\n"
           "import {\n  d,\n} from './d.js';\nconst e = await import('./e.js');\n// import x from './no.js';")
    assert imports(src) == ["./a.js", "./b.js", "./c.js", "./d.js", "./e.js"]


def test_state_writes_seen():
    assert state_writes("state.image.label = x;") and state_writes("Object.assign(state.models, m);")
    assert state_writes("state.jobs.list.set(id, j);") and state_writes("++state.image.seq;")
    assert not state_writes("const a = state.image.label; if (state.x === 1) f(state);")

