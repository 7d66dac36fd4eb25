"""Job files in an object store (`SEAM_STORAGE_URL=s3://bucket/prefix`): the same layout as the
data directory (seam.service.storage), as keys under the store's prefix,

    jobs/<job id>/job.json, inputs/<rel>, outputs/<kind>/<image id><ext>, chunks/<n>.jsonl

and a local data directory that holds only what one process needs for a while: upload scratch
(an archive is extracted there, then its images are put into the store before the manifest:
a job whose manifest exists has its inputs in the store) and a bounded cache of inputs and
downloaded outputs (`SEAM_STORAGE_CACHE_BYTES`, least recently used evicted). No host shares a
folder with another; a worker that is killed leaves nothing another needs.

Writes are atomic per object (an S3 PUT); a redelivered chunk rewrites identical objects.
`make_storage` picks this class or the folder-based Storage from the settings.
"""
from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from functools import partial
from pathlib import Path

from seam.service.blobs.base import BlobNotFound, BlobStore
from seam.service.blobs.stores import open_blob_store
from seam.service.core.config import Settings
from seam.service.outputs.kinds import OUTPUT_KINDS
from seam.service.storage import JOB_ID_RE, Storage, stream_zip


def make_storage(settings: Settings) -> Storage:
    """The folder-based Storage (no SEAM_STORAGE_URL, or a file:// one) or ObjectStorage."""
    url = settings.storage_url
    if not url:
        return Storage(settings.data_dir)
    blobs = open_blob_store(url, settings.s3_endpoint_url)
    local = blobs.local_path("jobs")
    if local is not None:  # file://: the folder-based layout rooted there
        return Storage(local.parent)
    return ObjectStorage(blobs, settings.data_dir, settings.storage_cache_bytes)


def _drop_dead_caches(root: Path) -> None:
    try:
        names = [d.name for d in root.iterdir() if d.is_dir()]
    except FileNotFoundError:
        return
    for name in names:
        if name.isdigit() and not _alive(int(name)):
            shutil.rmtree(root / name, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class LocalCache:
    """Files under a folder, at most `limit` bytes, least recently used evicted first."""

    def __init__(self, root: Path, limit: int) -> None:
        self.root = root
        self.limit = limit
        self._lock = threading.Lock()
        self._sizes: OrderedDict[Path, int] = OrderedDict()
        self._total = 0

    def get(self, rel: str, fetch) -> Path:
        path = self.root / rel
        with self._lock:
            if path in self._sizes and path.is_file():
                self._sizes.move_to_end(path)
                return path
        data = fetch()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".w-{os.getpid()}-{threading.get_ident()}-{path.name}")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        with self._lock:
            self._total += len(data) - self._sizes.pop(path, 0)
            self._sizes[path] = len(data)
            while self._total > self.limit and len(self._sizes) > 1:
                old, size = self._sizes.popitem(last=False)
                self._total -= size
                old.unlink(missing_ok=True)
        return path

    def drop(self, prefix: str) -> None:
        base = self.root / prefix
        with self._lock:
            for p in [p for p in self._sizes if p.is_relative_to(base)]:
                self._total -= self._sizes.pop(p)
        shutil.rmtree(base, ignore_errors=True)

    @property
    def total(self) -> int:
        return self._total


class ObjectStorage(Storage):
    """Storage over a BlobStore; see the module docstring."""

    def __init__(self, blobs: BlobStore, scratch: Path, cache_bytes: int) -> None:
        super().__init__(scratch)
        self.blobs = blobs
        # one cache folder per process (a file another process evicts must not vanish under us);
        # the folders of processes that are gone are removed: the cache stays bounded across restarts
        _drop_dead_caches(self.root / "cache")
        self.cache = LocalCache(self.root / "cache" / str(os.getpid()), cache_bytes)
        self._manifests: OrderedDict[str, dict] = OrderedDict()

    def key(self, job_id: str, rel: str = "") -> str:
        if not JOB_ID_RE.match(job_id):
            raise ValueError(f"bad job id {job_id!r}")
        return f"jobs/{job_id}/{rel}" if rel else f"jobs/{job_id}/"

    def describe(self) -> str:
        return self.blobs.url

    # --- manifest (immutable once written: cached per process) ------------------------
    def write_manifest(self, job_id: str, manifest: dict) -> None:
        self._publish_inputs(job_id)
        self.blobs.put(self.key(job_id, "job.json"), json.dumps(manifest).encode())
        self._manifests.pop(job_id, None)

    def read_manifest(self, job_id: str) -> dict:
        cached = self._manifests.get(job_id)
        if cached is not None:
            return cached
        manifest = json.loads(self.blobs.get(self.key(job_id, "job.json")))
        self._manifests[job_id] = manifest
        while len(self._manifests) > 64:
            self._manifests.popitem(last=False)
        return manifest

    def has_job(self, job_id: str) -> bool:
        return self.blobs.exists(self.key(job_id, "job.json")) or self.job_dir(job_id).is_dir()

    def _publish_inputs(self, job_id: str) -> None:
        """An extracted upload goes from the local scratch into the store, then the scratch goes."""
        local = self.inputs_dir(job_id)
        if not local.is_dir():
            return
        for path in sorted(local.rglob("*")):
            if path.is_file():
                rel = path.relative_to(local).as_posix()
                self.blobs.put(self.key(job_id, f"inputs/{rel}"), path.read_bytes())
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    def input_path(self, job_id: str, manifest: dict, image_id: str) -> Path:
        if manifest.get("source_dir"):  # directory jobs read a folder the host must see
            return super().input_path(job_id, manifest, image_id)
        rel = manifest["images"][image_id]
        key = self.key(job_id, f"inputs/{rel}")
        return self.cache.get(key, lambda: self.blobs.get(key))

    # --- outputs --------------------------------------------------------------------
    def output_key(self, job_id: str, kind: str, image_id: str) -> str:
        return self.key(job_id, f"outputs/{kind}/{image_id}{OUTPUT_KINDS[kind].extension}")

    def write_output(self, job_id: str, kind: str, image_id: str, data: bytes) -> None:
        self.blobs.put(self.output_key(job_id, kind, image_id), data)

    def read_output(self, job_id: str, kind: str, image_id: str) -> bytes | None:
        try:
            return self.blobs.get(self.output_key(job_id, kind, image_id))
        except BlobNotFound:
            return None

    def outputs_complete(self, job_id: str, image_id: str, kinds: list[str]) -> bool:
        return all(self.blobs.exists(self.output_key(job_id, k, image_id)) for k in kinds)

    def resolve_output(self, job_id: str, kind: str, name: str) -> Path | None:
        """The output downloaded into the cache (FileResponse serves a file), or None."""
        if kind not in OUTPUT_KINDS or not name or "\x00" in name or "\\" in name or name.startswith("/"):
            return None
        if any(p in ("", ".", "..") for p in name.split("/")):
            return None
        ext = OUTPUT_KINDS[kind].extension
        key = self.key(job_id, f"outputs/{kind}/{name if name.endswith(ext) else name + ext}")
        try:
            return self.cache.get(key, lambda: self.blobs.get(key))
        except (BlobNotFound, ValueError):
            return None

    def iter_output_keys(self, job_id: str) -> Iterator[tuple[str, str]]:
        """(archive name, key) of every output object, kinds in table order, names sorted."""
        for kind in OUTPUT_KINDS:
            prefix = self.key(job_id, f"outputs/{kind}/")
            for info in self.blobs.list(prefix):
                yield f"{kind}/{info.key[len(prefix):]}", info.key

    def stream_results_zip(self, job_id: str, extra: dict[str, bytes]) -> Iterator[bytes]:
        return stream_zip(extra, ((name, partial(self.blobs.get, key))
                                  for name, key in self.iter_output_keys(job_id)))

    # --- lifecycle --------------------------------------------------------------------
    def delete_job(self, job_id: str) -> None:
        self.blobs.delete_prefix(self.key(job_id))
        self.cache.drop(self.key(job_id))
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)
        self._manifests.pop(job_id, None)

    def delete_inputs(self, job_id: str) -> bool:
        removed = self.blobs.delete_prefix(self.key(job_id, "inputs/")) > 0
        self.cache.drop(self.key(job_id, "inputs"))
        return super().delete_inputs(job_id) or removed

    def job_ids(self) -> list[str]:
        # some servers (SeaweedFS) keep a deleted job's 'folder' as an empty common prefix
        return sorted(name for name in self.blobs.children("jobs/")
                      if JOB_ID_RE.match(name) and self.blobs.any(f"jobs/{name}/"))

    def sweep(self, ttl_s: int, keep: set[str] | None = None, now: float | None = None) -> list[str]:
        now = now or time.time()
        removed = []
        for job_id in self.job_ids():
            if keep and job_id in keep:
                continue
            try:
                created = float(json.loads(self.blobs.get(self.key(job_id, "job.json"))).get("created_at", 0))
            except (BlobNotFound, ValueError, AttributeError):
                created = 0.0  # a half-created job (no manifest): its first object says its age
                for info in self.blobs.list(self.key(job_id)):
                    created = info.mtime
                    break
            if created and now - created > ttl_s:
                self.delete_job(job_id)
                removed.append(job_id)
        return removed

    def put_chunk(self, job_id: str, chunk: int, lines: list[dict]) -> None:
        data = "".join(json.dumps(line) + "\n" for line in lines).encode()
        self.blobs.put(self.key(job_id, f"chunks/{chunk:07d}.jsonl"), data)

    def read_chunk(self, job_id: str, chunk: int) -> list[dict]:
        data = self.blobs.get(self.key(job_id, f"chunks/{chunk:07d}.jsonl"))
        return [json.loads(line) for line in data.splitlines() if line.strip()]

    def put_job_file(self, job_id: str, name: str, chunks) -> None:
        self.blobs.put_stream(self.key(job_id, name), chunks)

    def iter_job_file(self, job_id: str, name: str) -> Iterator[bytes]:
        return self.blobs.iter_bytes(self.key(job_id, name))
