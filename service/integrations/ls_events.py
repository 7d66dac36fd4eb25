"""Label Studio's events at `/labelstudio/webhook`: what each one does to the corrections store.

Label Studio 1.23 delivers them two ways (label_studio/ml/models.py, webhooks/):
- on *Connect Model* it creates a **project webhook** to `<backend URL>/webhook` (send_payload,
  all actions) that POSTs `{"action", "project": {...}, "annotation": {...}, "task": {...}}`
  (ANNOTATIONS_DELETED: `"annotations": [{"id"}]`; TASKS_DELETED: `"tasks": [{"id"}]`) with
  **the webhook's own headers only** (none by default, and a 1 s timeout);
- *Start Training* POSTs `{"action": "START_TRAINING", "project": {...}}` as the ML backend,
  with its Basic auth.

So the backend puts its Basic auth on the project webhook itself (`ensure_webhook_auth`, on
/setup and on every re-sync; the header Label Studio stores is the same key it already holds
for the backend). An event is accepted quickly (key, project owner) and the work (reading the
task and its annotations back from Label Studio, fetching the image, storing) runs after the
answer: the payload is never trusted, only read for which task changed.
"""
from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from seam.service.core.security import Principal
from seam.service.core.urlrules import UrlRefused
from seam.service.corrections.store import CorrectionError, CorrectionStore, NotOwner, ProjectStore
from seam.service.integrations.corrections_fit import settings_of
from seam.service.integrations.fetch import FetchFailed, FetchPolicy
from seam.service.integrations.ls_corrections import ProjectSync, image_id, project_id

log = logging.getLogger("seam.service")
WEBHOOK_SUFFIX = "/labelstudio/webhook"
ANNOTATION_EVENTS = ("ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED")
DELETE_EVENTS = ("ANNOTATION_DELETED", "ANNOTATIONS_DELETED", "TASKS_DELETED")
TRAIN_EVENT = "START_TRAINING"
EVENTS = (*ANNOTATION_EVENTS, *DELETE_EVENTS, TRAIN_EVENT)
# Label Studio sends the webhook from inside the request that saved the annotation: the task
# read back right away may not show it yet, so it is read again a few times
SEEN_RETRIES = 6
SEEN_WAIT_S = 0.5


def _ids(items: object, key: str = "id") -> list[int]:
    out = []
    for it in items if isinstance(items, list) else [items]:
        v = it.get(key) if isinstance(it, dict) else it
        if isinstance(v, dict):
            v = v.get("id")
        if isinstance(v, int) or (isinstance(v, str) and v.isdigit()):
            out.append(int(v))
    return out


@dataclass
class EventWork:
    """What one event asks: the tasks to sync (and the annotation ids each must show), the
    annotations or tasks deleted."""

    action: str
    tasks: dict[int, set[int]]
    deleted_annotations: list[int]
    deleted_tasks: list[int]

    @classmethod
    def of(cls, body: dict) -> EventWork:
        action = str(body.get("action"))
        tasks: dict[int, set[int]] = {}
        if action in ANNOTATION_EVENTS or action == "ANNOTATION_DELETED":
            anns = body.get("annotation")
            for ann in anns if isinstance(anns, list) else [anns]:
                if not isinstance(ann, dict):
                    continue
                for t in _ids(ann.get("task")):
                    tasks.setdefault(t, set()).update(_ids(ann) if action != "ANNOTATION_DELETED" else [])
            for t in _ids(body.get("task") or []):
                tasks.setdefault(t, set())
        deleted = _ids(body.get("annotations") or []) if action == "ANNOTATIONS_DELETED" else []
        gone = _ids(body.get("tasks") or []) if action == "TASKS_DELETED" else []
        return cls(action, tasks, deleted, gone)

    def empty(self) -> bool:
        return not (self.tasks or self.deleted_annotations or self.deleted_tasks)


def run_event(work: EventWork, sync: ProjectSync, sleep: Callable[[float], None] = time.sleep) -> dict:
    """Do what the event asks (after the webhook answered). Returns a summary, also kept in the
    project's record as `last_event` (the web page and tests read it)."""
    changes: list[str] = []
    error = None
    try:
        for task_id, must_show in sorted(work.tasks.items()):
            changes.append(_sync_seen(sync, task_id, must_show, sleep).value)
        changes += [c.value for c in sync.sync_annotations_deleted(work.deleted_annotations)]
        for task_id in work.deleted_tasks:
            changes.append(sync.store.delete(image_id(task_id), keep_image=False).value)
    except (CorrectionError, FetchFailed, UrlRefused) as exc:
        error = str(exc)
        log.warning("labelstudio %s on project %s: %s (a re-sync repairs it)", work.action, sync.store.project, exc)
    summary = {"action": work.action, "changes": changes, "error": error, "at": time.time()}
    sync.store.update_meta(last_event=summary)
    return summary


def _sync_seen(sync: ProjectSync, task_id: int, must_show: set[int], sleep: Callable[[float], None]):
    task = None
    for attempt in range(SEEN_RETRIES):
        try:
            task = sync.policy.api_json("GET", f"/api/tasks/{int(task_id)}/")
        except FetchFailed as exc:
            if exc.status == 404:
                return sync.store.delete(image_id(task_id), keep_image=False)
            raise
        shown = set(_ids(task.get("annotations") or [])) if isinstance(task, dict) else set()
        if must_show <= shown or attempt == SEEN_RETRIES - 1:
            break
        sleep(SEEN_WAIT_S)
    return sync.sync_task(task)  # type: ignore[arg-type]


def basic_auth(key: str) -> str:
    return "Basic " + base64.b64encode(f"seam:{key}".encode()).decode()


def ensure_webhook_auth(policy: FetchPolicy, store: ProjectStore, key: str | None) -> int:
    """Put our Basic auth on the project's ML-backend webhook(s) (url ending in
    /labelstudio/webhook) that lack it. Returns how many were changed; best effort (a failure
    is logged: the re-sync route repairs what the events missed)."""
    if not key:
        return 0
    changed = 0
    try:
        hooks = policy.api_json("GET", f"/api/webhooks/?project={store.project}")
        for hook in hooks if isinstance(hooks, list) else []:
            if not str(hook.get("url", "")).rstrip("/").endswith(WEBHOOK_SUFFIX):
                continue
            headers = dict(hook.get("headers") or {})
            if headers.get("Authorization") == basic_auth(key):
                continue
            headers["Authorization"] = basic_auth(key)
            policy.api_json("PATCH", f"/api/webhooks/{int(hook['id'])}/", {"headers": headers})
            changed += 1
    except (FetchFailed, UrlRefused, KeyError, TypeError, ValueError) as exc:
        log.warning("labelstudio: could not put the backend's auth on project %s's webhook: %s", store.project, exc)
    return changed


def claim_project(app: Any, project: str, principal: Principal, classes: list[str], policy: FetchPolicy,
                  key: str | None) -> None:
    """On /setup: the calling key owns the project's corrections, and a thread puts its Basic auth
    on the project's ML-backend webhook, which Label Studio creates only after /setup answered
    (so it is looked for during `SEAM_CORRECTIONS_WEBHOOK_WAIT_S`)."""
    try:
        store = CorrectionStore(app.state.settings.data_dir).project("labelstudio", project_id(project))
        store.claim(principal.owner, classes, principal.admin)
    except (CorrectionError, NotOwner) as exc:
        log.warning("labelstudio: project %s not claimed for corrections: %s", project, exc)
        return
    wait_s = settings_of(app).webhook_wait_s
    if key and wait_s > 0:
        threading.Thread(target=_authorise_webhook, args=(policy, store, key, wait_s), daemon=True,
                         name="seam-ls-webhook-auth").start()


def _authorise_webhook(policy: FetchPolicy, store: ProjectStore, key: str, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while not ensure_webhook_auth(policy, store, key) and time.monotonic() < deadline:
        time.sleep(1.0)
