"""Who may see a job: its owner's key, or an admin key. Someone else's job answers exactly
like a job that does not exist, so job ids leak nothing."""
from __future__ import annotations

from seam.service.core.errors import ApiError
from seam.service.core.security import Principal
from seam.service.jobs.stores.base import MAX_ERRORS_SHOWN, JobSnapshot, JobStore


def visible_snapshot(store: JobStore, job_id: str, principal: Principal,
                     errors_limit: int = MAX_ERRORS_SHOWN) -> JobSnapshot:
    """The job's snapshot, or 404 when it is unknown, expired or someone else's."""
    snap = store.snapshot(job_id, errors_limit=errors_limit)
    if snap is None or not principal.may_see(snap.owner):
        raise ApiError(404, "not_found", f"no job {job_id} (unknown or expired)")
    return snap
