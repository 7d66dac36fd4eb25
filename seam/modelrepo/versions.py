"""The versioned model repository: names, versions, the promoted version and publishing.

    models/
      seam-demo/manifest.json ...   legacy flat model dirs: together ONE model, version 1
      NAME/1/ NAME/2/ ...           versions (decimal integers, a new one is max + 1): a model dir
                                    (manifest.json + graphs) or one sub-dir per kind (seam/ affinity/ deeplab/)
      NAME/PROMOTED                 the promoted (default) version, replaced atomically
      NAME/history.jsonl            publish / promote / rollback events
      .NAME.tmp-*                   hidden: publications in progress, ignored

A version is what ONE engine serves (one label set). Legacy flat dirs are grouped as the
engine always grouped them (the first model of each kind, in MODEL_KINDS order) into one model
named after the first of them, so old repositories keep working unchanged.

Publishing copies into a hidden directory beside the versions, verifies every checksum there and
only then `os.rename`s it to `NAME/<n>/`: readers never see a half-written version, and two
publishers racing for the same number cannot both win (renaming onto a non-empty directory
fails; the loser takes the next number). Torch-free: training and the service both use it.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from seam.modelrepo.manifest import MANIFEST_NAME, MODEL_KINDS, Manifest, ManifestError, load_model_dir, read_manifest

PROMOTED_FILE = "PROMOTED"
HISTORY_FILE = "history.jsonl"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
VERSION_RE = re.compile(r"^[0-9]+$")
LEGACY_VERSION = 1
_PUBLISH_ATTEMPTS = 100


class ModelNotFound(LookupError):
    """No model of that name, or no such version of it (the service answers 404)."""


@dataclass(frozen=True)
class ModelVersion:
    """One version of a model: the model dir of each kind it holds (MODEL_KINDS order).

    `error` is set when the scan could not read it (no or unreadable manifest, unknown kind
    sub-dir); checksums are not checked by the scan (`verify_version` does)."""

    name: str
    version: int
    path: Path
    dirs: dict[str, Path] = field(default_factory=dict)
    legacy: bool = False
    error: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def kinds(self) -> list[str]:
        return list(self.dirs)


@dataclass(frozen=True)
class ModelEntry:
    """A model name: its versions (ascending) and the promoted one (None: no usable version)."""

    name: str
    versions: dict[int, ModelVersion]
    promoted: int | None
    legacy: bool = False

    def get(self, version: int | None = None) -> ModelVersion:
        v = self.promoted if version is None else version
        if v is None or v not in self.versions:
            have = ", ".join(str(n) for n in self.versions) or "none"
            what = "no promoted version" if version is None else f"no version {version}"
            raise ModelNotFound(f"model {self.name!r} has {what} (versions: {have})")
        return self.versions[v]


# ----------------------------------------------------------------------------- scanning


def list_models(repo: str | Path) -> dict[str, ModelEntry]:
    """Every model of the repository by name (the legacy group first, then by name)."""
    repo = Path(repo)
    if not repo.is_dir():
        raise ManifestError(f"model repository {repo} does not exist")
    legacy_dirs, named = [], []
    for d in sorted(repo.iterdir()):
        if d.name.startswith(".") or not d.is_dir():
            continue
        (legacy_dirs if (d / MANIFEST_NAME).is_file() else named).append(d)
    out: dict[str, ModelEntry] = {}
    group = _legacy_group(legacy_dirs)
    if group is not None:
        out[group.name] = group
    for d in named:
        entry = _scan_versioned(d)
        if entry is not None and entry.name not in out:
            out[entry.name] = entry
    return out


def find_model(repo: str | Path, name: str) -> ModelEntry | None:
    """`list_models(repo).get(name)`, reading only that model's directory when it is versioned."""
    repo = Path(repo)
    if not repo.is_dir():
        raise ManifestError(f"model repository {repo} does not exist")
    d = repo / name
    if not NAME_RE.match(name) or not d.is_dir():
        return None
    if (d / MANIFEST_NAME).is_file():  # a flat dir: the legacy group, named after its first dir
        return list_models(repo).get(name)
    return _scan_versioned(d)


def _legacy_group(dirs: list[Path]) -> ModelEntry | None:
    """The flat model dirs as the engine groups them: the first of each kind (by dir name)."""
    chosen: dict[str, Path] = {}
    for d in dirs:
        try:
            kind = read_manifest(d).kind
        except ManifestError:
            continue  # an unreadable flat dir never stood in the group (the engine refused it too)
        chosen.setdefault(kind, d)
    if not chosen:
        if not dirs:
            return None
        name = dirs[0].name
        bad = ModelVersion(name, LEGACY_VERSION, dirs[0], {}, True, f"{dirs[0]}: no readable {MANIFEST_NAME}")
        return ModelEntry(name, {LEGACY_VERSION: bad}, LEGACY_VERSION, legacy=True)
    ordered = {k: chosen[k] for k in MODEL_KINDS if k in chosen}
    name = next(iter(ordered.values())).name
    v = ModelVersion(name, LEGACY_VERSION, next(iter(ordered.values())).parent, ordered, legacy=True)
    return ModelEntry(name, {LEGACY_VERSION: v}, LEGACY_VERSION, legacy=True)


def _scan_versioned(d: Path) -> ModelEntry | None:
    if not NAME_RE.match(d.name):
        return None
    versions = {}
    for sub in d.iterdir():
        if sub.is_dir() and VERSION_RE.match(sub.name):
            versions[int(sub.name)] = scan_version(d.name, int(sub.name), sub)
    if not versions:
        return None
    versions = dict(sorted(versions.items()))
    return ModelEntry(d.name, versions, _promoted(d, versions))


def scan_version(name: str, version: int, path: Path) -> ModelVersion:
    """A version directory: a single model dir, or one model dir per kind sub-dir."""
    if (path / MANIFEST_NAME).is_file():
        try:
            kind = read_manifest(path).kind
        except ManifestError as exc:
            return ModelVersion(name, version, path, {}, error=str(exc))
        return ModelVersion(name, version, path, {kind: path})
    subs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = [p.name for p in subs if p.name not in MODEL_KINDS]
    dirs = {k: path / k for k in MODEL_KINDS if (path / k / MANIFEST_NAME).is_file()}
    error = None
    if unknown:
        error = f"{path}: unknown kind sub-dirs {unknown} (expected {', '.join(MODEL_KINDS)})"
    elif not dirs:
        error = f"{path}: no {MANIFEST_NAME} (neither here nor in a kind sub-dir)"
    elif len(dirs) < len(subs):
        error = f"{path}: sub-dirs without {MANIFEST_NAME}: {sorted(p.name for p in subs if p.name not in dirs)}"
    return ModelVersion(name, version, path, dirs if error is None else {}, error=error)


def _promoted(d: Path, versions: Mapping[int, ModelVersion]) -> int | None:
    """PROMOTED's version when it names one, else the highest readable version."""
    try:
        text = (d / PROMOTED_FILE).read_text().strip()
    except OSError:
        text = ""
    if VERSION_RE.match(text) and int(text) in versions:
        return int(text)
    readable = [n for n, v in versions.items() if v.error is None]
    return max(readable) if readable else None


def parse_ref(ref: str | None) -> tuple[str | None, int | None]:
    """`NAME[:VERSION]` (or `:VERSION`, or empty) -> (name or None, version or None)."""
    ref = (ref or "").strip()
    if not ref:
        return None, None
    name, sep, version = ref.partition(":")
    if name and not NAME_RE.match(name):
        raise ValueError(f"invalid model name {name!r} (letters, digits, '.', '_', '-')")
    if sep and not VERSION_RE.match(version):
        raise ValueError(f"invalid model version {version!r} in {ref!r} (a decimal number, e.g. {name or 'NAME'}:2)")
    return name or None, int(version) if sep else None


def default_name(models: Mapping[str, ModelEntry], default: str | None = None) -> str:
    """`default` (SEAM_DEFAULT_MODEL), else the legacy group, else the first name."""
    if default:
        return default
    for entry in models.values():
        if entry.legacy:
            return entry.name
    if not models:
        raise ModelNotFound("the model repository holds no model")
    return next(iter(models))


def resolve_in(models: Mapping[str, ModelEntry], ref: str | None, default: str | None = None) -> ModelVersion:
    """The version `ref` names among `models` (already scanned). ValueError: malformed;
    ModelNotFound: unknown name or version."""
    name, version = parse_ref(ref)
    name = name or default_name(models, default)
    if name not in models:
        raise ModelNotFound(f"no model named {name!r} (models: {', '.join(models) or 'none'})")
    return models[name].get(version)


def resolve(repo: str | Path, ref: str | None = None, default: str | None = None) -> ModelVersion:
    """`NAME[:VERSION]` in the repository; no version = the promoted one; no name = `default`,
    else the legacy group, else the first name."""
    return resolve_in(list_models(repo), ref, default)


def repo_fingerprint(repo: str | Path) -> str:
    """Changes whenever a name, a version, a PROMOTED file or a file of a version changes
    (names, sizes and mtimes only: cheap enough to poll every second)."""
    repo = Path(repo)
    h = hashlib.sha256()
    try:
        tops = sorted(p for p in repo.iterdir() if not p.name.startswith("."))
    except OSError as exc:
        return f"unreadable: {exc}"
    for top in tops:
        for p in sorted(_walk(top, depth=3)):
            try:
                st = p.stat()
            except OSError:
                continue
            h.update(f"{p.relative_to(repo)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            if p.name == PROMOTED_FILE:
                h.update(p.read_bytes()[:64])
    return h.hexdigest()


def _walk(p: Path, depth: int) -> list[Path]:
    if not p.is_dir():
        return [p]
    if depth == 0:
        return []
    out = [p]
    for child in p.iterdir():
        if not child.name.startswith("."):
            out += _walk(child, depth - 1)
    return out


# ----------------------------------------------------------------------------- checks


def verify_version(version: ModelVersion) -> dict[str, Manifest]:
    """{kind: manifest} with every file checked against its manifest's sha256; ManifestError
    when a file is missing, modified or half-copied, or the kinds disagree on the classes."""
    if version.error is not None:
        raise ManifestError(version.error)
    manifests: dict[str, Manifest] = {}
    for kind, d in version.dirs.items():
        mf = load_model_dir(d, verify=True)
        if mf.kind != kind:
            raise ManifestError(f"{d}: holds a {mf.kind} model, not {kind}")
        manifests[kind] = mf
    labelled = {k: m.class_names for k, m in manifests.items() if k in ("seam", "deeplab")}
    if len(set(labelled.values())) > 1:
        raise ManifestError(f"{version.path}: its seam and deeplab models have different class names; "
                            "a version serves one label set")
    return manifests


def version_digest(version: ModelVersion | str | Path) -> str:
    """sha256 over each kind's manifest.json bytes and the file checksums it records: what a
    job pins. Cheap (no model file is read); `verify_version` ties the files to it."""
    if not isinstance(version, ModelVersion):
        version = scan_version("x", 0, Path(version))
    if version.error is not None:
        raise ManifestError(version.error)
    h = hashlib.sha256()
    for kind, d in version.dirs.items():
        raw = (d / MANIFEST_NAME).read_bytes()
        h.update(f"{kind} {MANIFEST_NAME} {hashlib.sha256(raw).hexdigest()}\n".encode())
        mf = read_manifest(d)
        files = mf.onnx.files() | ({mf.pcm.file: mf.pcm.sha256} if mf.pcm else {})
        for fname, digest in sorted(files.items()):
            h.update(f"{kind} {fname} {digest}\n".encode())
    return h.hexdigest()


# ----------------------------------------------------------------------------- writing


def publish_version(repo: str | Path, name: str, source: str | Path | Mapping[str, str | Path] | Sequence[str | Path],
                    *, promote: bool = False, note: str | None = None) -> int:
    """Copy a model into `repo/name/<n>/` as a new version and return n (max + 1).

    `source`: a model dir (manifest.json + the files it names: a single-kind version), a dir
    with kind sub-dirs, {kind: model dir}, or a list of model dirs (their kinds read from their
    manifests). Only the manifest and the files it names are copied; every checksum is verified
    in the hidden temporary copy before the atomic rename. The first version of a name is
    promoted; later ones only with `promote=True`. ValueError for a bad name or source,
    ManifestError for a corrupt one."""
    repo = Path(repo)
    if not NAME_RE.match(name):
        raise ValueError(f"invalid model name {name!r} (letters, digits, '.', '_', '-'; not starting with '.')")
    if (repo / name / MANIFEST_NAME).is_file():
        raise ValueError(f"{repo / name} is a legacy (unversioned) model dir; publish under another name")
    dirs = _source_dirs(source)
    repo.mkdir(parents=True, exist_ok=True)
    tmp = repo / f".{name}.tmp-{uuid.uuid4().hex[:12]}"
    try:
        _copy_version(dirs, tmp)
        verify_version(scan_version(name, 0, tmp))
        (repo / name).mkdir(exist_ok=True)
        number = _rename_into_place(tmp, repo / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _append_history(repo / name, "publish", number, note=note)
    first = not (repo / name / PROMOTED_FILE).exists()
    if promote or first:
        _write_promoted(repo / name, number, "promote", _current_promoted(repo / name), note)
    return number


def _source_dirs(source: str | Path | Mapping[str, str | Path] | Sequence[str | Path]) -> dict[str, Path]:
    if isinstance(source, Mapping):
        dirs = {str(k): Path(v) for k, v in source.items()}
    elif isinstance(source, (str, Path)):
        src = Path(source)
        if not src.is_dir():
            raise ValueError(f"{src} is not a directory")
        if (src / MANIFEST_NAME).is_file():
            dirs = {read_manifest(src).kind: src}
        else:
            dirs = {k: src / k for k in MODEL_KINDS if (src / k / MANIFEST_NAME).is_file()}
    else:
        dirs = {}
        for d in map(Path, source):
            kind = read_manifest(d).kind
            if kind in dirs:
                raise ValueError(f"two {kind} models given ({dirs[kind]}, {d}); a version holds one per kind")
            dirs[kind] = d
    if not dirs:
        raise ValueError(f"no model dir (with {MANIFEST_NAME}) in {source}")
    unknown = set(dirs) - set(MODEL_KINDS)
    if unknown:
        raise ValueError(f"unknown kinds {sorted(unknown)} (expected {', '.join(MODEL_KINDS)})")
    return {k: dirs[k] for k in MODEL_KINDS if k in dirs}


def _copy_version(dirs: Mapping[str, Path], dest: Path) -> None:
    """Single kind: its files directly in `dest`; several: one sub-dir per kind."""
    dest.mkdir(parents=True)
    for kind, src in dirs.items():
        target = dest if len(dirs) == 1 else dest / kind
        target.mkdir(exist_ok=True)
        mf = read_manifest(src)
        files = [MANIFEST_NAME, *mf.onnx.files(), *([mf.pcm.file] if mf.pcm else [])]
        for fname in files:
            if not (src / fname).is_file():
                raise ManifestError(f"{src}: {fname} is missing")
            shutil.copy2(src / fname, target / fname)


def _rename_into_place(tmp: Path, model_dir: Path) -> int:
    """os.rename onto the next free number; a racing publisher that took it makes the rename fail
    (the target exists and is not empty), and this one tries the number after."""
    for _ in range(_PUBLISH_ATTEMPTS):
        taken = [int(p.name) for p in model_dir.iterdir() if VERSION_RE.match(p.name)]
        number = max(taken, default=0) + 1
        try:
            os.rename(tmp, model_dir / str(number))
            return number
        except OSError:
            if not (model_dir / str(number)).exists():
                raise
    raise ManifestError(f"could not find a free version number in {model_dir}")


def _current_promoted(model_dir: Path) -> int | None:
    entry = _scan_versioned(model_dir)
    return entry.promoted if entry is not None else None


def _write_promoted(model_dir: Path, version: int, event: str, previous: int | None, note: str | None) -> None:
    tmp = model_dir / f".{PROMOTED_FILE}.{uuid.uuid4().hex[:8]}"
    tmp.write_text(f"{version}\n")
    os.replace(tmp, model_dir / PROMOTED_FILE)  # atomic: readers see the old or the new number
    _append_history(model_dir, event, version, previous=previous, note=note)


def _append_history(model_dir: Path, event: str, version: int, previous: int | None = None,
                    note: str | None = None) -> None:
    rec = {"time": datetime.now(UTC).isoformat(timespec="seconds"), "event": event, "version": version}
    if previous is not None:
        rec["previous"] = previous
    if note:
        rec["note"] = note
    # one write() on an O_APPEND file: concurrent writers do not interleave lines
    fd = os.open(model_dir / HISTORY_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(rec) + "\n").encode())
    finally:
        os.close(fd)


def history(repo: str | Path, name: str) -> list[dict]:
    """The events of `name` (oldest first); unreadable lines are skipped."""
    path = Path(repo) / name / HISTORY_FILE
    out = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def _entry(repo: Path, name: str) -> ModelEntry:
    entry = find_model(repo, name)
    if entry is None:
        raise ModelNotFound(f"no model named {name!r} (models: {', '.join(list_models(repo)) or 'none'})")
    if entry.legacy:
        raise ValueError(f"{name!r} is a legacy (unversioned) model: it has one version and cannot be promoted")
    return entry


def promote(repo: str | Path, name: str, version: int, *, verify: bool = True, note: str | None = None) -> int:
    """Make `version` the promoted one (checksums verified first, unless verify=False); returns it."""
    entry = _entry(Path(repo), name)
    target = entry.get(int(version))
    if verify:
        verify_version(target)
    _write_promoted(Path(repo) / name, target.version, "promote", entry.promoted, note)
    return target.version


def _promotion_stack(events: Sequence[dict]) -> list[int]:
    """The promoted versions in order, rollbacks popping them."""
    stack: list[int] = []
    for e in events:
        v = e.get("version")
        if not isinstance(v, int):
            continue
        if e.get("event") == "promote":
            stack.append(v)
        elif e.get("event") == "rollback":
            if stack:
                stack.pop()
            while stack and stack[-1] != v:
                stack.pop()
            if not stack:
                stack.append(v)
    return stack


def rollback(repo: str | Path, name: str, *, note: str | None = None) -> int:
    """Promote again the version promoted before the current one; returns it. ValueError when
    there is none (or none left that still exists)."""
    repo = Path(repo)
    entry = _entry(repo, name)
    current = entry.promoted
    stack = _promotion_stack(history(repo, name))
    if not stack or stack[-1] != current:
        stack.append(current)  # PROMOTED was written by hand
    earlier = [v for v in reversed(stack[:-1]) if v != current and v in entry.versions]
    if not earlier:
        raise ValueError(f"model {name!r}: no earlier promoted version to roll back to (promoted: {current})")
    target = entry.versions[earlier[0]]
    verify_version(target)
    _write_promoted(repo / name, target.version, "rollback", current, note)
    return target.version


def version_info(version: ModelVersion) -> dict:
    """A JSON summary of a version (kinds, classes, provenance of each kind), without checksums."""
    out: dict = {"version": version.version, "path": version.path.name, "kinds": version.kinds,
                 "legacy": version.legacy, "error": version.error}
    if version.error is None:
        try:
            mfs = {k: read_manifest(d) for k, d in version.dirs.items()}
            first = next(iter(mfs.values()))
            out["classes"] = list(first.foreground)
            out["description"] = first.description
            out["provenance"] = {k: _provenance(m) for k, m in mfs.items()}
        except ManifestError as exc:
            out["error"] = str(exc)
    return out


def _provenance(mf: Manifest) -> dict:
    p = mf.provenance
    return {"backbone": mf.backbone, "checkpoint": p.checkpoint, "checkpoint_sha256": p.checkpoint_sha256,
            "created": p.created.isoformat(), "dataset": {k: p.dataset.get(k) for k in ("kind", "num_images")
                                                          if k in p.dataset},
            "training": {k: p.training.get(k) for k in ("iterations", "seconds", "device") if k in p.training},
            "weights": mf.precision.weights, "sha256": mf.onnx.sha256}
