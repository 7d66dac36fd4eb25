"""Label Studio annotations -> the corrections store.

A webhook event only says which annotation changed; what is stored is always read back from
Label Studio's API with the backend's token (`FetchPolicy.api_json`), so an event that is
repeated, reordered, forged or lost changes nothing wrong: a task is *synced*, i.e. its latest
non-cancelled annotation becomes its correction (none left: the correction is removed), and a
project's re-sync syncs every task (repairing missed events).

Per annotation: brush regions (Label Studio's RLE, decoded with the same code that encodes our
predictions, `seam.common.labelling.ls_rle_decode`) and polygons are painted in order into one
label map (0 background, c + 1 class c; a later region wins where they overlap), their labels
mapped back to model classes through the project's label config (`predicted_values`, value,
alias); Choices give the image-level labels (else the classes the mask shows).
"""
from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw
from seam.service.core.urlrules import UrlRefused
from seam.service.corrections.store import Change, Correction, CorrectionError, ProjectStore
from seam.service.inputs import parse_label_tokens
from seam.service.integrations.fetch import FetchFailed, FetchPolicy
from seam.service.integrations.ls_config import Control, LabelConfig, LabelConfigError, parse_label_config

from seam.common.labelling import ls_rle_decode

log = logging.getLogger("seam.service")
SOURCE = "labelstudio"
REGION_TYPES = ("brushlabels", "polygonlabels")


def project_id(value: object) -> str:
    """Label Studio names a project by its id, `"<id>.<created timestamp>"` (setup, predict) or
    a serialized project (webhooks)."""
    if isinstance(value, dict):
        value = value.get("id")
    text = str(value if value is not None else "").split(".")[0].strip()
    if not text.isdigit():
        raise CorrectionError(f"no Label Studio project id in {str(value)[:80]!r}")
    return text


def image_id(task_id: object) -> str:
    return f"task-{int(str(task_id))}"


def latest_annotation(task: dict) -> dict | None:
    """The annotation that counts for a task: the latest non-cancelled one."""
    anns = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
    if not anns:
        return None
    return max(anns, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), int(a.get("id") or 0)))


def _region_mask(r: dict, hw: tuple[int, int]) -> np.ndarray:
    value = r.get("value") or {}
    h, w = hw
    rh, rw = r.get("original_height"), r.get("original_width")
    if (rh, rw) != (None, None) and (int(rh), int(rw)) != hw:
        raise CorrectionError(f"a region is for a {rw}x{rh} image but the task's image is {w}x{h}")
    if r.get("type") == "brushlabels":
        if value.get("format", "rle") != "rle" or not isinstance(value.get("rle"), list):
            raise CorrectionError("a brush region without RLE")
        try:
            return ls_rle_decode(value["rle"], h, w)
        except (ValueError, IndexError) as exc:
            raise CorrectionError(f"a brush region's RLE does not decode at {w}x{h}: {exc}") from None
    pts = value.get("points") or []
    img = Image.new("L", (w, h), 0)
    if len(pts) >= 3:
        ImageDraw.Draw(img).polygon([(float(x) * w / 100.0, float(y) * h / 100.0) for x, y in pts], fill=1)
    return np.array(img, bool)


def annotation_mask(ann: dict, cfg: LabelConfig, classes: Sequence[str],
                    hw: tuple[int, int]) -> tuple[np.ndarray, list[str]]:
    """One annotation -> (label map, image-level class names)."""
    controls: dict[str, Control] = {c.name: c for c in cfg.controls}
    mask = np.zeros(hw, np.uint8)
    chosen: list[int] | None = None
    for r in ann.get("result") or []:
        if not isinstance(r, dict):
            continue
        kind, ctl = r.get("type"), controls.get(str(r.get("from_name")))
        if kind == "choices" and ctl is not None:
            toks = [str(t) for t in (r.get("value") or {}).get("choices") or []]
            idx = ctl.to_classes(toks, classes)
            if idx is None:
                raise CorrectionError(f"the choices {toks} name no model class ({', '.join(classes)})")
            chosen = sorted(set(chosen or []) | set(idx))
        elif kind in REGION_TYPES and ctl is not None:
            labels = [str(t) for t in (r.get("value") or {}).get(kind) or []]
            idx = ctl.to_classes(labels, classes)
            if not idx:
                raise CorrectionError(f"the label {labels} maps to no model class ({', '.join(classes)}); "
                                      "add predicted_values to the <Label>")
            mask[_region_mask(r, hw)] = idx[0] + 1
    present = [classes[int(v) - 1] for v in np.unique(mask) if 1 <= v <= len(classes)]
    names = [classes[i] for i in chosen] if chosen is not None else present
    return mask, sorted(set(names) | set(present))


@dataclass
class ProjectSync:
    """Syncing one Label Studio project's tasks into its store."""

    policy: FetchPolicy
    store: ProjectStore
    classes: list[str]
    labels_field: str | None = None  # SEAM_LABELSTUDIO_LABELS_FIELD: the weak labels in the task's data
    _cfg: LabelConfig | None = field(default=None, init=False)

    def config(self) -> LabelConfig:
        if self._cfg is None:
            proj = self.policy.api_json("GET", f"/api/projects/{self.store.project}/")
            try:
                self._cfg = parse_label_config((proj or {}).get("label_config") or "")  # type: ignore[union-attr]
            except LabelConfigError as exc:
                raise CorrectionError(f"project {self.store.project}: {exc}") from None
        return self._cfg

    def _image(self, task: dict, cfg: LabelConfig) -> tuple[bytes | None, str]:
        """The task's image bytes, or None when the stored one is from the same URL."""
        keys = list(cfg.images.values())
        raw = next((task.get("data", {}).get(k) for k in keys if isinstance(task.get("data", {}).get(k), str)), None)
        if raw is None:
            raise CorrectionError(f"task {task.get('id')}: no image in data ({', '.join(keys) or 'no <Image>'})")
        old = self.store.item(image_id(task["id"]))
        if old and old.get("ref", {}).get("url") == raw and old.get("image"):
            return None, raw
        try:
            return self.policy.fetch(self.policy.absolute(raw, task.get("id"))), raw
        except (UrlRefused, FetchFailed) as exc:
            raise CorrectionError(f"task {task.get('id')}: image not fetched: {exc}") from None

    def _weak(self, task: dict, cfg: LabelConfig) -> list[str] | None:
        """The task's weak image-level labels (class names) from the labels field, if any: the
        fit pseudo-labels an uncorrected image with them."""
        value = task.get("data", {}).get(self.labels_field) if self.labels_field else None
        if isinstance(value, str):
            value = parse_label_tokens(value)
        if not isinstance(value, list) or not value:
            return None
        try:
            idx = cfg.pick("auto").to_classes([str(v) for v in value], self.classes)
        except LabelConfigError:
            idx = None
        return [self.classes[i] for i in idx] if idx else None

    def sync_task(self, task: dict) -> Change:
        """Store the task's latest annotation as its correction (or remove the correction)."""
        cfg = self.config()
        iid = image_id(task["id"])
        ann = latest_annotation(task)
        image, raw = self._image(task, cfg)
        ref = {"task": int(task["id"]), "url": raw, "weak": self._weak(task, cfg)}
        if ann is None:
            gone = self.store.delete(iid)
            if image is not None:  # cached for the next fit, which pseudo-labels it
                cached = self.store.put_image(iid, image, ref)
                return gone if gone is Change.deleted else cached
            return gone
        if image is not None:
            hw = _hw(image)
        else:
            old = self.store.item(iid) or {}
            hw = (int(old["height"]), int(old["width"]))
        mask, labels = annotation_mask(ann, cfg, self.classes, hw)
        ref |= {"annotation": int(ann.get("id") or 0), "updated_at": ann.get("updated_at")}
        return self.store.put(Correction(iid, mask, labels, image, ref))

    def sync_task_id(self, task_id: int) -> Change:
        try:
            task = self.policy.api_json("GET", f"/api/tasks/{int(task_id)}/")
        except FetchFailed as exc:
            if exc.status == 404:  # the task was deleted: so is its correction
                return self.store.delete(image_id(task_id), keep_image=False)
            raise
        return self.sync_task(task)  # type: ignore[arg-type]

    def sync_annotations_deleted(self, annotation_ids: Sequence[int]) -> list[Change]:
        """ANNOTATIONS_DELETED names annotations only: re-sync the tasks we stored them for."""
        wanted = {int(a) for a in annotation_ids}
        tasks = {it["ref"]["task"] for it in self.store.items()
                 if it.get("ref", {}).get("annotation") in wanted and "task" in it.get("ref", {})}
        return [self.sync_task_id(t) for t in sorted(tasks)]

    def sync_project(self) -> dict[str, int]:
        """Every task of the project (Label Studio's JSON export with all tasks): corrections
        where annotated, images cached where not, corrections of vanished tasks removed."""
        tasks = self.policy.api_json("GET", f"/api/projects/{self.store.project}/export?exportType=JSON"
                                            "&download_all_tasks=true")
        if not isinstance(tasks, list):
            raise CorrectionError("Label Studio's export is not a task list")
        counts: dict[str, int] = {c.value: 0 for c in Change}
        counts["failed"] = 0
        seen = set()
        for task in tasks:
            seen.add(image_id(task["id"]))
            try:
                counts[self.sync_task(task).value] += 1
            except CorrectionError as exc:  # one bad task does not stop the repair of the others
                log.warning("labelstudio re-sync of project %s: %s", self.store.project, exc)
                counts["failed"] += 1
        for it in self.store.items():
            if it["image_id"] not in seen:
                counts[self.store.delete(it["image_id"], keep_image=False).value] += 1
        return counts


def _hw(image: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(image)) as img:
        return img.height, img.width
