"""Job state: the interface every backend implements (`seam.service.jobs.stores.redis`
for Celery mode, shared by the API and every worker; `seam.service.jobs.stores.sqlite` for
embedded mode, which survives a restart of `seam serve`).

The implementations only provide atomic primitives; the state machine (queued ->
running -> succeeded | failed, or -> cancelled) and the status derivation are
written once, in `JobStore`. Image completion is a set (SADD), never a counter, so a
redelivered chunk cannot count an image twice; done and failed are mutually
exclusive (a later success clears an earlier failure). Everything expires after
`ttl_s`.

Every job records its owner (a hash of the API key that created it; "" on an open
server). Slots for new jobs are reserved atomically (`reserve`) before the upload is
read, so concurrent submissions cannot overshoot the active-job limit; a reservation
is turned into the job by `create` or dropped by `release`, and lapses after
`RESERVATION_TTL_S` if its creator died.
"""
from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

ACTIVE_STATES: tuple[str, ...] = ("queued", "running")
MAX_ERRORS_SHOWN = 100
RESERVATION_TTL_S = 3600  # longest a submission may take between reserving a slot and creating the job


def encodable(text: str) -> str:
    """`text` with anything that is not valid UTF-8 (lone surrogates from undecodable
    file names) escaped, so that every string in job state can be stored and served."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass
class JobSnapshot:
    id: str
    state: str
    total: int
    done: int
    failed: int
    created_at: float
    expires_at: float
    options: dict
    source: str
    chunks: int
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    errors: list[tuple[str, str]] = field(default_factory=list)
    owner: str = ""

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


def _f(v: object) -> float | None:
    return None if v in (None, "") else float(v)  # type: ignore[arg-type]


class JobStore(ABC):
    def __init__(self, ttl_s: int) -> None:
        self.ttl_s = ttl_s

    # --- primitives ---------------------------------------------------------------
    @abstractmethod
    def _create(self, job_id: str, meta: dict[str, str], created_at: float) -> None: ...

    @abstractmethod
    def _meta(self, job_id: str) -> dict[str, str] | None: ...

    @abstractmethod
    def _transition(self, job_id: str, from_states: tuple[str, ...], fields: dict[str, str], final: bool) -> bool:
        """Atomically: if the job's state is in from_states, set fields; final -> leave the active set."""

    @abstractmethod
    def _add_done(self, job_id: str, image: str) -> bool: ...

    @abstractmethod
    def _add_failed(self, job_id: str, image: str, error: str) -> bool: ...

    @abstractmethod
    def _counts(self, job_id: str) -> tuple[int, int]: ...

    @abstractmethod
    def _failures(self, job_id: str, limit: int) -> list[tuple[str, str]]: ...

    @abstractmethod
    def done_images(self, job_id: str) -> set[str]: ...

    def done_among(self, job_id: str, images: Iterable[str]) -> set[str]:
        """Which of `images` (a chunk's) are recorded done: what a chunk needs, without reading the
        whole job's set (a million ids for a big job)."""
        return self.done_images(job_id) & set(images)

    def iter_failures(self, job_id: str) -> Iterator[tuple[str, str]]:
        """Every (image, error) of the job, read in pages (the backends override it)."""
        yield from self._failures(job_id, 1 << 30)

    @abstractmethod
    def incr_delivery(self, job_id: str, chunk: int) -> int:
        """How many times this chunk has now been started (poison-chunk guard)."""

    @abstractmethod
    def _list(self, offset: int, limit: int, owner: str | None) -> tuple[int, list[str]]:
        """Job ids, newest first; owner None = every owner's."""

    @abstractmethod
    def active_count(self) -> int:
        """Queued + running jobs plus live reservations."""

    @abstractmethod
    def _reserve(self, job_id: str, limit: int, until: float) -> int:
        """Atomically: if active + reserved < limit, reserve a slot for job_id until `until`
        and return -1; else return the count."""

    @abstractmethod
    def release(self, job_id: str) -> None:
        """Drop job_id's reservation (its submission failed)."""

    @abstractmethod
    def active_ids(self) -> list[str]: ...

    @abstractmethod
    def stats(self) -> dict[str, int]: ...

    @abstractmethod
    def ping(self) -> None: ...

    @abstractmethod
    def delete(self, job_id: str) -> None: ...

    # --- the state machine, written once -------------------------------------------------
    def reserve(self, job_id: str, limit: int) -> int | None:
        """None when a slot is now held for job_id; else how many are taken (refuse)."""
        n = self._reserve(job_id, limit, time.time() + RESERVATION_TTL_S)
        return None if n < 0 else n

    def create(self, job_id: str, total: int, chunks: int, options: dict, source: str,
               owner: str = "") -> JobSnapshot:
        """Create the job (state queued), taking over job_id's reservation if any."""
        now = time.time()
        meta = {"id": job_id, "state": "queued", "total": str(total), "chunks": str(chunks),
                "options": json.dumps(options), "source": encodable(source), "created_at": repr(now),
                "expires_at": repr(now + self.ttl_s), "owner": owner}
        self._create(job_id, meta, now)
        snap = self.snapshot(job_id)
        assert snap is not None
        return snap

    def snapshot(self, job_id: str, errors_limit: int = MAX_ERRORS_SHOWN) -> JobSnapshot | None:
        meta = self._meta(job_id)
        if not meta:
            return None
        done, failed = self._counts(job_id)
        return JobSnapshot(
            id=job_id, state=meta["state"], total=int(meta["total"]), done=done, failed=failed,
            created_at=float(meta["created_at"]), expires_at=float(meta["expires_at"]),
            options=json.loads(meta.get("options") or "{}"), source=meta.get("source", ""),
            chunks=int(meta.get("chunks", 0)), started_at=_f(meta.get("started_at")),
            finished_at=_f(meta.get("finished_at")), error=meta.get("error") or None,
            errors=self._failures(job_id, errors_limit) if failed else [], owner=meta.get("owner", ""))

    def state(self, job_id: str) -> str | None:
        meta = self._meta(job_id)
        return meta["state"] if meta else None

    def is_active(self, job_id: str) -> bool:
        return self.state(job_id) in ACTIVE_STATES

    def mark_running(self, job_id: str) -> bool:
        return self._transition(job_id, ("queued",), {"state": "running", "started_at": repr(time.time())}, False)

    def record_done(self, job_id: str, image: str) -> bool:
        return self._add_done(job_id, image)

    def record_failed(self, job_id: str, image: str, error: str) -> bool:
        return self._add_failed(job_id, image, encodable(error[:2000]))

    def failed_images(self, job_id: str) -> set[str]:
        return {i for i, _ in self.iter_failures(job_id)}

    def finish_if_complete(self, job_id: str) -> str | None:
        """Move an active job whose every image is done or failed to its final state."""
        meta = self._meta(job_id)
        if not meta or meta["state"] not in ACTIVE_STATES:
            return None
        done, failed = self._counts(job_id)
        total = int(meta["total"])
        if done + failed < total:
            return None
        final = "succeeded" if done > 0 or total == 0 else "failed"
        fields = {"state": final, "finished_at": repr(time.time())}
        if final == "failed":
            fields["error"] = "every image failed"
        if not meta.get("started_at"):
            fields["started_at"] = fields["finished_at"]
        return final if self._transition(job_id, ACTIVE_STATES, fields, True) else None

    def set_total(self, job_id: str, total: int, chunks: int) -> bool:
        """A job read from a prefix or manifest learns its size as it is read (jobs.streamed): while
        reading, total is one more than the entries read, so it cannot finish early."""
        return self._transition(job_id, ACTIVE_STATES, {"total": str(total), "chunks": str(chunks)}, final=False)

    def fail(self, job_id: str, error: str) -> bool:
        return self._transition(job_id, ACTIVE_STATES, {"state": "failed", "finished_at": repr(time.time()),
                                                        "error": encodable(error[:2000])}, True)

    def cancel(self, job_id: str) -> bool:
        return self._transition(job_id, ACTIVE_STATES, {"state": "cancelled", "finished_at": repr(time.time())}, True)

    def list(self, offset: int, limit: int, owner: str | None = None) -> tuple[int, list[JobSnapshot]]:
        """Newest first; owner None = every owner's jobs (admin)."""
        total, ids = self._list(offset, limit, owner)
        snaps = [s for s in (self.snapshot(i, errors_limit=0) for i in ids) if s is not None]
        return total, snaps

    def close(self) -> None:
        return None
