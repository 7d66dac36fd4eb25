"""What happens to jobs around their processing: resuming them after a restart of
`seam serve` (embedded mode), freeing their inputs once they end, the TTL sweep and
the data-directory quota.

Called by the API process (`seam.service.main`): at start-up (`resume_embedded`) and from
its periodic sweeper (`sweep`).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from seam.service.core.config import Settings
from seam.service.core.errors import ApiError
from seam.service.jobs.create import chunked
from seam.service.jobs.stores.base import ACTIVE_STATES, JobStore
from seam.service.jobs.stores.sqlite import SqliteJobStore
from seam.service.jobs.streamed import fail_lost_readers, resume_streamed
from seam.service.storage import Storage

log = logging.getLogger("seam.service")

SubmitFn = Callable[..., None]  # Dispatcher.submit(job_id, chunks, first=0)


def resume_embedded(store: JobStore, storage: Storage, submit: SubmitFn, chunk_size: int) -> list[str]:
    """Re-queue the jobs that were queued or running when the previous process died.

    Only what is not finished is re-queued: each chunk keeps its number (and so its
    delivery count: an image that keeps killing the process is given up after
    SEAM_MAX_DELIVERIES starts) but carries only its images that are neither done nor
    failed; chunks with nothing left are sent empty, which just lets the job finish.
    Outputs written before the crash are kept, recognised and never recomputed.
    Returns the resumed job ids. Never raises: a store that is down must not stop the
    API from starting (it answers 503 until the store is back).
    """
    try:
        return _resume(store, storage, submit, chunk_size)
    except Exception:  # noqa: BLE001
        log.exception("could not resume the jobs of the previous run")
        return []


def _resume(store: JobStore, storage: Storage, submit: SubmitFn, chunk_size: int) -> list[str]:
    if isinstance(store, SqliteJobStore):
        store.release_all()  # submissions in flight died with the old process
        known = store.known_ids()
        for job_id in storage.job_ids():  # half-created jobs of a crashed submission
            if job_id not in known:
                log.info("removing the files of job %s: it was never created", job_id)
                storage.delete_job(job_id)
    resumed = []
    for job_id in store.active_ids():
        try:
            manifest = storage.read_manifest(job_id)
        except (FileNotFoundError, ValueError):
            store.fail(job_id, "the job's files are missing from the data directory")
            continue
        storage.clear_tmp(job_id)
        finished = store.done_images(job_id) | store.failed_images(job_id)
        if manifest.get("streamed"):  # a job over a data set: its chunk files say what to re-queue
            if resume_streamed(store, storage, submit, job_id, finished):
                resumed.append(job_id)
            continue
        ids = sorted(manifest["images"])
        chunks = chunked(ids, int(manifest.get("chunk_size") or chunk_size))
        pending = [[img for img in c if img not in finished] for c in chunks]
        log.info("resuming job %s: %d of %d images left", job_id, sum(map(len, pending)), len(ids))
        submit(job_id, pending)
        resumed.append(job_id)
    return resumed


def free_finished_inputs(store: JobStore, storage: Storage, job_ids: Sequence[str] | None = None) -> list[str]:
    """Delete the inputs of every job that has ended (or whose state has expired)."""
    freed = []
    for job_id in job_ids if job_ids is not None else storage.job_ids():
        if not (storage.inputs_dir(job_id).exists() or storage.tmp_dir(job_id).exists()):
            continue  # freed already (or never had any): no need to ask the job store
        if store.state(job_id) in ACTIVE_STATES:
            continue
        if storage.delete_inputs(job_id):
            freed.append(job_id)
    if freed:
        storage.forget_usage()
    return freed


def sweep(store: JobStore, storage: Storage, settings: Settings) -> tuple[list[str], list[str]]:
    """Job folders past their TTL, and inputs of ended jobs: (removed, freed)."""
    removed = storage.sweep(settings.job_ttl_s)
    freed = free_finished_inputs(store, storage)
    for job_id in fail_lost_readers(store, storage):  # Celery mode: no restart resumes them
        log.warning("job %s failed: the reading of its data set stopped", job_id)
    return removed, freed


def check_quota(storage: Storage, settings: Settings, incoming: int) -> None:
    """507 when the data directory is (or, with `incoming` more bytes, would be) over quota."""
    if settings.max_data_bytes is None:
        return
    used = storage.usage_bytes()
    if used + incoming > settings.max_data_bytes:
        raise ApiError(507, "insufficient_storage",
                       f"the server's job storage is full ({used} of {settings.max_data_bytes} bytes used; this "
                       f"upload declares {incoming} more); retry once older jobs have expired or been collected",
                       {"Retry-After": "600"})
