"""The worker's side of jobs read as a stream (jobs.streamed): a chunk's entries from its chunk
file, images read from their URIs, outputs written to the job's output_url when it has one, and
the results manifest.

With output_url (an allowed s3:// prefix), outputs go to `<output_url>/<kind>/<image id><ext>` and
each chunk writes `<output_url>/results/part-<chunk>.jsonl` (one line per image of the chunk: id,
uri, outputs, classes, scores, error) when it ends; the process that ends the job concatenates
the parts, in chunk order, with the reader's line errors, into `<output_url>/results.jsonl` (a
streamed multipart upload: never whole in memory). A redelivered chunk recomputes its images
rather than skipping finished ones, so its part lists every image with its classes and scores.
"""
from __future__ import annotations

import io
import itertools
import json
import posixpath
from collections.abc import Iterator
from typing import Any

from seam.service.blobs.base import BlobStore
from seam.service.datasets.fetching import DatasetReader
from seam.service.outputs.kinds import OUTPUT_KINDS, merge_job
from seam.service.outputs.sources import JobFiles
from seam.service.storage import Storage


def _file_names(lines: list[dict]) -> dict[str, str]:
    """image id -> file name of chunk entries: the id with the URI's extension, so the name keeps
    the id's folders (as an archive member's path does): COCO `file_name`s stay unique and a Label
    Studio task's URL is image_url_prefix + that path."""
    return {ln["id"]: ln["id"] + posixpath.splitext(ln["uri"].rsplit("/", 1)[-1])[1] for ln in lines}


def chunk_manifest(storage: Storage, job_id: str, chunk: int, manifest: dict) -> dict:
    """The job's manifest as one chunk's processing sees it: this chunk's images, labels, URIs and
    COCO ids (the line numbers: unique across the whole job)."""
    lines = storage.read_chunk(job_id, chunk)
    view = dict(manifest)
    view["images"] = _file_names(lines)
    view["labels"] = {ln["id"]: ln["labels"] for ln in lines if ln.get("labels") is not None}
    view["uris"] = {ln["id"]: ln["uri"] for ln in lines}
    view["coco_ids"] = {ln["id"]: int(ln["n"]) for ln in lines}
    return view


def streamed_images(storage: Storage, job_id: str) -> dict[str, str]:
    """image id -> file name of every image of a job read as a stream, from its chunk files (its
    manifest lists none). What the whole-job files of a job without output_url are merged over:
    such a job is capped at SEAM_MAX_ARCHIVE_MEMBERS images, like an upload."""
    images: dict[str, str] = {}
    for chunk in itertools.count():
        try:
            lines = storage.read_chunk(job_id, chunk)
        except FileNotFoundError:  # chunks are numbered from 0 without gaps
            break
        images.update(_file_names(lines))
    return images


def read_input(reader: DatasetReader | None, manifest: dict, image_id: str) -> io.BytesIO:
    if reader is None:
        raise RuntimeError("this process cannot read data-set URIs")
    return io.BytesIO(reader.read(manifest["uris"][image_id]))


class OutputPrefix:
    """Outputs of a job with output_url: the Storage calls processing makes, on that prefix."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store

    def key(self, kind: str, image_id: str) -> str:
        return f"{kind}/{image_id}{OUTPUT_KINDS[kind].extension}"

    def write_output(self, job_id: str, kind: str, image_id: str, data: bytes) -> None:
        self.store.put(self.key(kind, image_id), data)

    def outputs_complete(self, job_id: str, image_id: str, kinds: list[str]) -> bool:
        return False  # a redelivered chunk recomputes: its results part must list every image

    def uris(self, image_id: str, kinds: list[str]) -> dict[str, str]:
        return {k: self.store.uri(self.key(k, image_id)) for k in kinds}


def outputs_of(storage: Storage, reader: DatasetReader | None, manifest: dict) -> Storage | OutputPrefix:
    url = manifest.get("output_url")
    if not url:
        return storage
    if reader is None:
        raise RuntimeError("this process cannot write to output_url")
    return OutputPrefix(reader.prefix_store(url))


def record(image_id: str, manifest: dict, sink: Any, kinds: list[str], classes: list[str] | None = None,
           scores: dict[str, float] | None = None, error: str | None = None) -> dict:
    """One line of the results manifest."""
    outputs = sink.uris(image_id, kinds) if error is None and isinstance(sink, OutputPrefix) else {}
    return {"id": image_id, "uri": (manifest.get("uris") or {}).get(image_id), "outputs": outputs,
            "classes": classes, "scores": scores, "error": error}


def write_part(sink: OutputPrefix, chunk: int, records: list[dict]) -> None:
    data = "".join(json.dumps(r) + "\n" for r in records).encode()
    sink.store.put(f"results/part-{chunk:07d}.jsonl", data)


def finalize(storage: Storage, store: Any, sink: OutputPrefix, job_id: str) -> str:
    """The whole-job files of a small enough job (merge_beside), then results.jsonl: every chunk's
    part in order, then the lines the reader could not use (written last: once it is there, so is
    everything else)."""
    snap = store.snapshot(job_id, errors_limit=0)
    if snap is not None:
        merge_beside(storage, sink, job_id, snap.total)

    def body() -> Iterator[bytes]:
        for info in sink.store.list("results/part-"):
            yield from sink.store.iter_bytes(info.key)
        for image, error in sorted(_line_errors(store, job_id), key=_line_order):  # line 2 before line 10
            yield (json.dumps({"id": None, "line": image, "uri": None, "outputs": {}, "classes": None,
                               "scores": None, "error": error}) + "\n").encode()

    sink.store.put_stream("results.jsonl", body())
    return sink.store.uri("results.jsonl")


def _line_errors(store: Any, job_id: str) -> list[tuple[str, str]]:
    """The manifest lines the reader could not use, recorded as failures named 'line N' or
    'manifest ...' among the images' (read page by page: a job's failures may be millions)."""
    return [(image, error) for image, error in store.iter_failures(job_id) if image.startswith(("line ", "manifest"))]


def _line_order(item: tuple[str, str]) -> tuple[int, str]:
    number = item[0].removeprefix("line ").split(" ", 1)[0]
    return (int(number), item[0]) if number.isdigit() else (-1, item[0])


def merge_beside(storage: Storage, sink: OutputPrefix, job_id: str, total: int) -> list[str]:
    """The whole-job files of the job's output kinds (coco.json, cvat_segmentation_mask.zip,
    labelstudio_tasks.json, labelmap.txt) written under output_url, for a job of at most
    `merge_max_images` images (its manifest: SEAM_MAX_ARCHIVE_MEMBERS at submission): merged in
    memory, as the results zip of an upload is. A bigger job has its per-image files only. Their names."""
    manifest = storage.read_manifest(job_id)
    if total > int(manifest.get("merge_max_images") or 0):
        return []
    images = streamed_images(storage, job_id) if manifest.get("streamed") else manifest["images"]

    def read(kind: str, image_id: str) -> bytes | None:
        try:
            return sink.store.get(sink.key(kind, image_id))
        except FileNotFoundError:  # a failed image has no outputs
            return None

    job = JobFiles(job_id, {**manifest, "images": images}, manifest.get("classes") or [], read)
    merged = merge_job(manifest["options"].get("outputs", []), job)
    for name, data in merged.items():
        sink.store.put(name, data)
    return sorted(merged)


def gave_up(storage: Storage, store: Any, reader: DatasetReader | None, manifest: dict, job_id: str,
            chunk: int | None, images: list[str], reason: str, final: str | None) -> None:
    """A chunk given up outside process_chunk (retries spent, a crash): its part lists its images
    (failed ones with why), and the results manifest is made when this ended the job."""
    prefix = outputs_of(storage, reader, manifest)
    if not isinstance(prefix, OutputPrefix):
        return
    if chunk is not None:
        view = chunk_manifest(storage, job_id, chunk, manifest) if manifest.get("streamed") else manifest
        done = store.done_among(job_id, images)
        write_part(prefix, chunk, [record(img, view, prefix, list(manifest["options"]["outputs"]),
                                          error=None if img in done else reason) for img in images])
    if final is not None:
        finalize(storage, store, prefix, job_id)
