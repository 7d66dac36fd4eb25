"""A model repository by URL (`SEAM_MODELS_URL=s3://bucket/models`): API and workers copy it into
their local model directory (`SEAM_MODELS_DIR`, then a cache) and keep it up to date, so hosts
share no folder. The layout under the URL is the repository's own (seam.modelrepo.versions):

    NAME/1/manifest.json, NAME/1/model.onnx ...   a version (or NAME/1/<kind>/... per kind)
    NAME/PROMOTED, NAME/history.jsonl             copied as they are, once the version they name is here
    NAME/manifest.json ...                        a legacy flat model dir

A version appears locally only complete and verified, exactly as `publish_version` writes one:
its manifests and the files they name are downloaded into a hidden `.NAME.tmp-*` directory,
every sha256 is checked there, then it is renamed into place. A version whose files are not all
uploaded yet, or do not match their manifest, is left for a later round. Versions are
immutable: one present locally is never downloaded again; nothing is deleted locally (a job
may pin an old version). The hot reload of the model registry sees the new directory like one
published on this host.

`push_version` / `push_repository` upload the other way (files first, manifests last, PROMOTED after
its version).
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from seam.service.blobs.base import BlobStore
from seam.service.core.config import Settings

from seam.modelrepo.manifest import MANIFEST_NAME, ManifestError, load_model_dir, read_manifest
from seam.modelrepo.versions import HISTORY_FILE, NAME_RE, PROMOTED_FILE, VERSION_RE, scan_version, verify_version

log = logging.getLogger("seam.service")


@dataclass
class SyncReport:
    added: list[str] = field(default_factory=list)  # "NAME/N" or "NAME" (legacy) now present locally
    waiting: dict[str, str] = field(default_factory=dict)  # remote dir -> why it is not here yet
    updated: list[str] = field(default_factory=list)  # PROMOTED / history files replaced


@dataclass
class _Remote:
    """What the listing says about one top-level name."""

    files: dict[str, set[str]] = field(default_factory=dict)  # "NAME/N" or "NAME" -> keys below it
    meta: dict[str, str] = field(default_factory=dict)  # "NAME/PROMOTED" ... -> key


def _group(keys: Iterable[str]) -> _Remote:
    keys = [k for k in keys if not any(part.startswith(".") for part in k.split("/"))]
    legacy = {k.split("/")[0] for k in keys if k.count("/") == 1 and k.endswith("/" + MANIFEST_NAME)}
    out = _Remote()
    for k in keys:
        parts = k.split("/")
        top = parts[0]
        if not NAME_RE.match(top) or len(parts) < 2:
            continue
        if top in legacy:
            out.files.setdefault(top, set()).add(k)
        elif len(parts) == 2 and parts[1] in (PROMOTED_FILE, HISTORY_FILE):
            out.meta[k] = k
        elif len(parts) >= 3 and VERSION_RE.match(parts[1]):
            out.files.setdefault(f"{top}/{parts[1]}", set()).add(k)
    return out


class ModelSync:
    """Copies the repository at `source` into `cache_dir`; `sync_once` is one round, `start`
    repeats it every `interval_s` seconds in a daemon thread."""

    def __init__(self, source: BlobStore, cache_dir: Path, interval_s: float = 30.0) -> None:
        self.source = source
        self.cache = Path(cache_dir)
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last: SyncReport | None = None
        self.error: str | None = None

    def sync_once(self) -> SyncReport:
        self.cache.mkdir(parents=True, exist_ok=True)
        remote = _group(info.key for info in self.source.list(""))
        report = SyncReport()
        for rel, keys in sorted(remote.files.items()):
            if (self.cache / rel).exists() and "/" in rel:
                continue  # versions are immutable
            if "/" not in rel and self._legacy_current(rel, keys):
                continue
            try:
                self._fetch_dir(rel, keys)
                report.added.append(rel)
            except (ManifestError, FileNotFoundError, ValueError) as exc:
                report.waiting[rel] = str(exc)
        for key in sorted(remote.meta):
            if self._copy_meta(key):
                report.updated.append(key)
        for rel, why in report.waiting.items():
            log.info("model sync: %s not taken yet: %s", rel, why)
        if report.added:
            log.info("model sync: added %s", ", ".join(report.added))
        self.last, self.error = report, None
        return report

    def _legacy_current(self, name: str, keys: set[str]) -> bool:
        """A legacy dir already here with the same manifest (a changed one is replaced)."""
        here = self.cache / name / MANIFEST_NAME
        return here.is_file() and here.read_bytes() == self.source.get(f"{name}/{MANIFEST_NAME}")

    def _fetch_dir(self, rel: str, keys: set[str]) -> None:
        """Download the manifests of `rel`, then the files they name, into a hidden directory;
        verify; rename into place."""
        name = rel.split("/")[0]
        tmp = self.cache / f".{name}.tmp-{uuid.uuid4().hex[:12]}"
        try:
            manifests = sorted(k for k in keys if k.endswith("/" + MANIFEST_NAME))
            if not manifests:
                raise FileNotFoundError(f"no {MANIFEST_NAME} yet")
            for k in manifests:
                self._download(k, tmp / k[len(rel) + 1:])
            for d in _model_dirs(rel, tmp):
                for fname in _named_files(d):
                    key = f"{rel}/{d.relative_to(tmp).as_posix()}/{fname}".replace("/./", "/")
                    if key not in keys:
                        raise FileNotFoundError(f"{key} is not uploaded yet")
                    self._download(key, d / fname)
            self._verify(rel, tmp)
            self._into_place(rel, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _download(self, key: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with dest.open("wb") as f:
            for chunk in self.source.iter_bytes(key):
                f.write(chunk)

    def _verify(self, rel: str, tmp: Path) -> None:
        if "/" in rel:
            name, n = rel.split("/")
            verify_version(scan_version(name, int(n), tmp))
        else:
            load_model_dir(tmp, verify=True)

    def _into_place(self, rel: str, tmp: Path) -> None:
        dest = self.cache / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if "/" not in rel and dest.exists():  # a legacy dir that changed: swap it
            old = self.cache / f".{rel}.old-{uuid.uuid4().hex[:12]}"
            os.rename(dest, old)
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.rename(tmp, dest)
        except OSError:
            if not dest.exists():  # (else another process of this host synced it first)
                raise

    def _copy_meta(self, key: str) -> bool:
        """PROMOTED / history.jsonl, replaced atomically when different; PROMOTED only once the
        version it names is here (a host never promotes a version it does not have)."""
        data = self.source.get(key)
        dest = self.cache / key
        if not dest.parent.is_dir():
            return False
        if key.endswith(PROMOTED_FILE):
            text = data.decode(errors="replace").strip()
            if not VERSION_RE.match(text) or not (dest.parent / text).is_dir():
                return False
        with contextlib.suppress(OSError):
            if dest.read_bytes() == data:
                return False
        part = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp"
        part.write_bytes(data)
        os.replace(part, dest)
        return True

    # --- in the background ------------------------------------------------------------------
    def start(self) -> ModelSync:
        self._thread = threading.Thread(target=self._loop, name="seam-model-sync", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sync_once()
            except Exception as exc:  # noqa: BLE001 - the store may be down for a while: keep what we have
                self.error = f"{type(exc).__name__}: {exc}"
                log.warning("model sync from %s failed: %s", self.source.url, self.error)


def _model_dirs(rel: str, tmp: Path) -> list[Path]:
    """The model dirs of a downloaded version (itself, or one per kind sub-dir)."""
    if (tmp / MANIFEST_NAME).is_file():
        return [tmp]
    if "/" not in rel:
        raise ManifestError(f"{rel}: no {MANIFEST_NAME}")
    version = scan_version(rel.split("/")[0], int(rel.split("/")[1]), tmp)
    if version.error is not None:
        raise ManifestError(version.error)
    return list(version.dirs.values())


def _named_files(model_dir: Path) -> list[str]:
    mf = read_manifest(model_dir)
    files = mf.onnx.files() | ({mf.pcm.file: mf.pcm.sha256} if mf.pcm else {})
    return sorted(files)


def push_version(store: BlobStore, version_dir: Path, rel: str) -> int:
    """Upload a local version (or legacy model dir) `version_dir` under `rel` ("NAME/N" or
    "NAME"): the files first, the manifests last, so a reader never takes a half-uploaded
    version. Returns how many objects were written."""
    files = sorted(p for p in Path(version_dir).rglob("*") if p.is_file() and not p.name.startswith("."))
    ordered = [p for p in files if p.name != MANIFEST_NAME] + [p for p in files if p.name == MANIFEST_NAME]
    for p in ordered:
        store.put(f"{rel}/{p.relative_to(version_dir).as_posix()}", p.read_bytes())
    return len(ordered)


def push_repository(store: BlobStore, repo: Path) -> list[str]:
    """Upload a local repository (legacy dirs, versions, PROMOTED) to `store`, skipping what is
    there already (versions are immutable); the dirs uploaded ("NAME" or "NAME/N")."""
    there = _group(info.key for info in store.list(""))
    pushed: list[str] = []
    for top in sorted(p for p in Path(repo).iterdir() if p.is_dir() and NAME_RE.match(p.name)):
        if (top / MANIFEST_NAME).is_file():
            dirs = {top.name: top}
        else:
            dirs = {f"{top.name}/{v.name}": v for v in sorted(top.iterdir()) if v.is_dir() and VERSION_RE.match(v.name)}
        for rel, d in dirs.items():
            if rel not in there.files:
                push_version(store, d, rel)
                pushed.append(rel)
        if (top / PROMOTED_FILE).is_file():  # after the versions: readers take it only once they have the version
            store.put(f"{top.name}/{PROMOTED_FILE}", (top / PROMOTED_FILE).read_bytes())
    return pushed


def start_model_sync(settings: Settings) -> ModelSync | None:
    """With SEAM_MODELS_URL: the sync into SEAM_MODELS_DIR, one round done (so the engine finds
    its models at start-up; a store that cannot be reached is logged, the rounds go on) and
    the background rounds started. None without SEAM_MODELS_URL (nothing changes)."""
    if not settings.models_url:
        return None
    from seam.service.blobs.stores import open_blob_store

    sync = ModelSync(open_blob_store(settings.models_url, settings.s3_endpoint_url), settings.models_dir,
                     settings.models_sync_s)
    try:
        sync.sync_once()
    except Exception as exc:  # noqa: BLE001 - serve what the cache already holds; retried every round
        sync.error = f"{type(exc).__name__}: {exc}"
        log.warning("model sync from %s failed: %s", settings.models_url, sync.error)
    return sync.start()
