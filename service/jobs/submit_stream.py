"""Submitting a job over a data set where it lives (POST /jobs): JSON `{"input_url": ...,
"output_url": ...}` or a form with a `manifest` file (and `output_url`). The request checks the
URLs (datasets.policy: 403 not allowed here, 422 malformed) and that a manifest exists; the
entries are read after the answer, by jobs.streamed in a thread of this process."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

from seam.service.core.config import Settings
from seam.service.core.errors import ApiError
from seam.service.core.urlrules import UrlRefused
from seam.service.datasets import sources
from seam.service.datasets.entries import Entry, LineError, manifest_kind
from seam.service.datasets.fetching import DatasetReader
from seam.service.jobs import stream_chunks
from seam.service.jobs.dispatch import Dispatcher
from seam.service.jobs.execution import dataset_reader
from seam.service.jobs.stores.base import JobStore
from seam.service.jobs.streamed import StreamJob, refuse, start_reader
from seam.service.storage import Storage

UPLOADED = "manifest"  # the job file an uploaded manifest is kept as (+ .jsonl / .csv)


@dataclass(frozen=True)
class StreamPlan:
    """Where a job's entries come from and where its outputs go."""

    input_url: str | None  # None: an uploaded manifest
    kind: str  # 'prefix', 'jsonl' or 'csv'
    output_url: str | None

    def manifest_fields(self, merge_max_images: int) -> dict:
        """The job manifest's fields for this plan. `merge_max_images`: with output_url, the whole-job
        files (coco.json, ...) are merged beside the outputs for jobs of at most that many images."""
        return {"streamed": True, "input_url": self.input_url, "input_kind": self.kind, "output_url": self.output_url,
                "merge_max_images": merge_max_images}


def check_output_url(reader: DatasetReader, output_url: str | None) -> str | None:
    if output_url is None or not output_url.strip():
        return None
    url = output_url.strip()
    if not url.lower().startswith("s3://"):
        raise ApiError(422, "url_refused", "output_url must be an s3:// prefix")
    try:
        reader.policy.check_s3(url if url.endswith("/") else url + "/")
    except UrlRefused as exc:
        raise refuse(exc) from None
    return url.rstrip("/") + "/"


def plan_from_url(settings: Settings, input_url: str, output_url: str | None) -> StreamPlan:
    """The plan of a JSON request (runs in a worker thread: DNS and one HEAD request)."""
    reader = dataset_reader(settings)
    out = check_output_url(reader, output_url)
    url = input_url.strip()
    try:
        if url.lower().startswith("s3://") and not sources.is_manifest_url(url):
            reader.policy.check_s3(url if url.endswith("/") else url + "/")
            return StreamPlan(url, "prefix", out)
        reader.policy.check(url)
        if url.lower().startswith("s3://"):
            store, key = reader.s3_object(url)
            if not store.exists(key):
                raise ApiError(422, "invalid_manifest", f"no manifest at {url[:200]}")
    except UrlRefused as exc:
        raise refuse(exc) from None
    return StreamPlan(url, manifest_kind(url, b""), out)


def plan_from_upload(settings: Settings, storage: Storage, job_id: str, upload: IO[bytes], filename: str,
                     output_url: str | None) -> StreamPlan:
    """Keep an uploaded manifest as a job file (streamed: never whole in memory) and plan it."""
    out = check_output_url(dataset_reader(settings), output_url)
    head = upload.read(1024)
    upload.seek(0)
    kind = manifest_kind(filename or "", head)
    storage.put_job_file(job_id, f"{UPLOADED}.{kind}", iter(lambda: upload.read(1 << 20), b""))
    return StreamPlan(None, kind, out)


def _entries(plan: StreamPlan, reader: DatasetReader, storage: Storage,
             job_id: str) -> Callable[[], Iterator[Entry | LineError]]:
    def open_entries() -> Iterator[Entry | LineError]:
        if plan.kind == "prefix":
            return sources.prefix_entries(reader, plan.input_url or "")
        if plan.input_url is None:
            return sources.stored_manifest_entries(storage.iter_job_file(job_id, f"{UPLOADED}.{plan.kind}"), plan.kind)
        return sources.url_manifest_entries(reader, plan.input_url, plan.kind)

    return open_entries


def start(settings: Settings, store: JobStore, storage: Storage, dispatcher: Dispatcher, job_id: str,
          plan: StreamPlan, names: list[str]) -> None:
    """Start reading the job's entries (jobs.streamed) once the job exists in the store."""
    reader = dataset_reader(settings)
    # the zip stays for small jobs: without output_url a job reads at most as many images as an archive holds
    max_lines = settings.dataset_max_lines if plan.output_url else min(settings.dataset_max_lines,
                                                                        settings.max_archive_members)

    def on_end(state: str) -> None:
        if plan.output_url:  # every chunk ended before the reading did: the results manifest is made here
            stream_chunks.finalize(storage, store, stream_chunks.OutputPrefix(reader.prefix_store(plan.output_url)),
                                   job_id)

    job = StreamJob(job_id, _entries(plan, reader, storage, job_id), names, settings.chunk_size,
                    settings.dataset_max_queued_chunks, max_lines, settings.data_dir / "readers", on_end)
    start_reader(job, store, storage, dispatcher)
