"""The data directory: job manifests, inputs and outputs on a filesystem shared by
the API and the workers.

    <data_dir>/jobs/<job id>/job.json         manifest (options, image list, labels)
    <data_dir>/jobs/<job id>/inputs/...       extracted upload (upload jobs)
    <data_dir>/jobs/<job id>/outputs/<kind>/<image id><extension>   (seam.service.outputs.kinds)
    <data_dir>/jobs/<job id>/tmp/             in-progress writes (atomic rename into outputs)

Per-image output files are the record of what is done: every write goes to a
temporary file then `os.replace`, so a file either exists complete or not at all,
and a redelivered chunk rewrites identical bytes instead of duplicating anything.

When a job ends its `inputs/` and `tmp/` are deleted (outputs stay until the TTL);
`usage_bytes()` is what the data-directory quota (`SEAM_MAX_DATA_BYTES`) counts.
"""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import threading
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache
from pathlib import Path

from seam.service.blobs.files import atomic_write_chunks
from seam.service.outputs.kinds import OUTPUT_KINDS

JOB_ID_RE = re.compile(r"^[0-9a-f]{32}$")


def atomic_write(path: Path, data: bytes, tmp_dir: Path | None = None) -> None:
    """Write `data` to `path` so readers see either the old file, or the new one complete."""
    atomic_write_chunks(path, (data,), tmp_dir)


class _StreamBuffer:
    """A write-only file object whose contents are drained by a generator."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.pos = 0

    def write(self, b: bytes) -> int:
        self.chunks.append(bytes(b))
        self.pos += len(b)
        return len(b)

    def tell(self) -> int:
        return self.pos

    def flush(self) -> None:
        pass

    def drain(self) -> bytes:
        out = b"".join(self.chunks)
        self.chunks.clear()
        return out


def stream_zip(extra: dict[str, bytes],
               members: Iterable[tuple[str, Path | Callable[[], bytes]]]) -> Iterator[bytes]:
    """A zip of `extra`, then of each (name, source) member, yielded as it is written.

    A source is a local file (copied in pieces, so a big map is never whole in memory) or a
    function giving the bytes; one that is gone (swept meanwhile) is left out.
    PNGs are stored: they are compressed already, and deflating them again only costs CPU.
    """
    buf = _StreamBuffer()
    with zipfile.ZipFile(buf, mode="w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, data in extra.items():
            zf.writestr(name, data)
            yield buf.drain()
        for name, source in members:
            compress = zipfile.ZIP_STORED if name.endswith(".png") else zipfile.ZIP_DEFLATED
            try:
                if isinstance(source, Path):
                    zf.write(source, name, compress_type=compress)
                else:
                    info = zipfile.ZipInfo(name, time.localtime()[:6])
                    info.compress_type = compress
                    zf.writestr(info, source())
            except FileNotFoundError:
                continue
            if chunk := buf.drain():
                yield chunk
    yield buf.drain()


class Storage:
    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir)
        self.jobs_root = self.root / "jobs"
        self._lock = threading.Lock()
        self._usage: tuple[float, int] | None = None  # (when, bytes) of the last usage walk

    def ensure(self) -> None:
        self.jobs_root.mkdir(parents=True, exist_ok=True)

    # --- layout ---------------------------------------------------------------
    def job_dir(self, job_id: str) -> Path:
        if not JOB_ID_RE.match(job_id):
            raise ValueError(f"bad job id {job_id!r}")
        return self.jobs_root / job_id

    def inputs_dir(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "inputs"

    def outputs_dir(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "outputs"

    def tmp_dir(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "tmp"

    def output_path(self, job_id: str, kind: str, image_id: str) -> Path:
        return self.outputs_dir(job_id) / kind / f"{image_id}{OUTPUT_KINDS[kind].extension}"

    # --- manifest -------------------------------------------------------------
    def write_manifest(self, job_id: str, manifest: dict) -> None:
        atomic_write(self.job_dir(job_id) / "job.json", json.dumps(manifest).encode(), self.tmp_dir(job_id))

    def read_manifest(self, job_id: str) -> dict:
        path = self.job_dir(job_id) / "job.json"
        st = path.stat()
        return _read_json(str(path), st.st_mtime_ns, st.st_size)

    def input_path(self, job_id: str, manifest: dict, image_id: str) -> Path:
        rel = manifest["images"][image_id]
        base = Path(manifest["source_dir"]) if manifest.get("source_dir") else self.inputs_dir(job_id)
        path = (base / rel).resolve()
        if not path.is_relative_to(base.resolve()):
            raise PermissionError(f"{rel!r} escapes the job's input directory")
        return path

    # --- outputs --------------------------------------------------------------
    def write_output(self, job_id: str, kind: str, image_id: str, data: bytes) -> None:
        atomic_write(self.output_path(job_id, kind, image_id), data, self.tmp_dir(job_id))

    def read_output(self, job_id: str, kind: str, image_id: str) -> bytes | None:
        """An output's bytes, or None (failed image, or swept meanwhile)."""
        try:
            return self.output_path(job_id, kind, image_id).read_bytes()
        except OSError:
            return None

    def outputs_complete(self, job_id: str, image_id: str, kinds: list[str]) -> bool:
        return all(self.output_path(job_id, k, image_id).is_file() for k in kinds)

    def resolve_output(self, job_id: str, kind: str, name: str) -> Path | None:
        """The output file `<kind>/<name>` (name with or without its extension), or None.
        Refuses anything that would leave the job's output folder."""
        if kind not in OUTPUT_KINDS or not name or "\x00" in name or "\\" in name:
            return None
        parts = name.split("/")
        if any(p in ("", ".", "..") for p in parts) or name.startswith("/"):
            return None
        base = (self.outputs_dir(job_id) / kind).resolve()
        ext = OUTPUT_KINDS[kind].extension
        cand = name if name.endswith(ext) else f"{name}{ext}"
        try:
            path = (base / cand).resolve()
            if not path.is_relative_to(base) or not path.is_file():
                return None
        except (OSError, ValueError):  # ENAMETOOLONG, unencodable name: no such output
            return None
        return path

    def iter_outputs(self, job_id: str) -> Iterator[tuple[str, Path]]:
        """(archive name, path) of every finished output file, sorted."""
        out = self.outputs_dir(job_id)
        if not out.is_dir():
            return
        for kind in OUTPUT_KINDS:
            kdir = out / kind
            if not kdir.is_dir():
                continue
            for p in sorted(kdir.rglob("*")):
                if p.is_file() and not p.name.startswith(".w-"):
                    yield p.relative_to(out).as_posix(), p

    def stream_results_zip(self, job_id: str, extra: dict[str, bytes]) -> Iterator[bytes]:
        """A zip of the outputs (+ extra generated members), produced as it is read."""
        return stream_zip(extra, self.iter_outputs(job_id))

    # --- chunks of jobs read from a prefix or manifest (seam.service.datasets) -----------
    def put_chunk(self, job_id: str, chunk: int, lines: list[dict]) -> None:
        """The entries (id, uri, labels, n) of one chunk: what its task processes."""
        data = "".join(json.dumps(line) + "\n" for line in lines).encode()
        atomic_write(self.job_dir(job_id) / "chunks" / f"{chunk:07d}.jsonl", data, self.tmp_dir(job_id))

    def read_chunk(self, job_id: str, chunk: int) -> list[dict]:
        data = (self.job_dir(job_id) / "chunks" / f"{chunk:07d}.jsonl").read_bytes()
        return [json.loads(line) for line in data.splitlines() if line.strip()]

    def put_job_file(self, job_id: str, name: str, chunks) -> None:
        """A job file of any size (an uploaded manifest) written from chunks, atomically."""
        from seam.service.blobs.files import FileBlobStore

        self.job_dir(job_id)
        FileBlobStore(self.jobs_root).put_stream(f"{job_id}/{name}", chunks)

    def iter_job_file(self, job_id: str, name: str) -> Iterator[bytes]:
        from seam.service.blobs.files import FileBlobStore

        self.job_dir(job_id)
        return FileBlobStore(self.jobs_root).iter_bytes(f"{job_id}/{name}")

    def has_job(self, job_id: str) -> bool:
        """Whether the job's files exist (its folder, or its manifest in an object store)."""
        return self.job_dir(job_id).is_dir()

    def describe(self) -> str:
        """Where job files live, for logs and /readyz (a folder or an s3:// prefix)."""
        return str(self.root)

    # --- lifecycle ------------------------------------------------------------
    def delete_job(self, job_id: str) -> None:
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    def delete_inputs(self, job_id: str) -> bool:
        """Free what only a running job needs (the extracted upload, partial writes);
        the outputs and the manifest stay. True when something was deleted."""
        removed = False
        for d in (self.inputs_dir(job_id), self.tmp_dir(job_id)):
            if d.exists():
                shutil.rmtree(d, ignore_errors=True)
                removed = True
        return removed

    def clear_tmp(self, job_id: str) -> None:
        """Partial writes of a process that died (only called when no one writes)."""
        shutil.rmtree(self.tmp_dir(job_id), ignore_errors=True)

    def job_ids(self) -> list[str]:
        if not self.jobs_root.is_dir():
            return []
        return sorted(d.name for d in self.jobs_root.iterdir() if JOB_ID_RE.match(d.name) and d.is_dir())

    def usage_bytes(self, max_age_s: float = 2.0) -> int:
        """Bytes allocated under the data directory (st_blocks, so sparse files count
        what they really use); cached for `max_age_s` because a walk costs a syscall per file."""
        now = time.monotonic()
        with self._lock:
            cached = self._usage
            if cached is not None and now - cached[0] < max_age_s:
                return cached[1]
        total = 0
        stack = [str(self.root)]
        while stack:
            top = stack.pop()
            try:
                with os.scandir(top) as it:
                    for e in it:
                        try:
                            if e.is_dir(follow_symlinks=False):
                                stack.append(e.path)
                            else:
                                total += e.stat(follow_symlinks=False).st_blocks * 512
                        except OSError:  # deleted meanwhile
                            continue
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                    raise
        with self._lock:
            self._usage = (now, total)
        return total

    def forget_usage(self) -> None:
        with self._lock:
            self._usage = None

    def sweep(self, ttl_s: int, keep: set[str] | None = None, now: float | None = None) -> list[str]:
        """Delete job folders older than `ttl_s` (their state has expired too)."""
        now = now or time.time()
        removed = []
        if not self.jobs_root.is_dir():
            return removed
        for d in self.jobs_root.iterdir():
            if not d.is_dir() or not JOB_ID_RE.match(d.name) or (keep and d.name in keep):
                continue
            try:
                created = float(json.loads((d / "job.json").read_bytes()).get("created_at", 0)) or d.stat().st_mtime
            except (OSError, ValueError, AttributeError):
                try:
                    created = d.stat().st_mtime
                except FileNotFoundError:
                    continue
            age = now - created
            if age > ttl_s:
                shutil.rmtree(d, ignore_errors=True)
                removed.append(d.name)
        return removed


@lru_cache(maxsize=16)
def _read_json(path: str, mtime_ns: int, size: int) -> dict:
    with open(path, "rb") as f:
        return json.loads(f.read())
