"""What the corrections tests share: an app with the fake engine, API keys and a fake Label
Studio holding one project (its config, tasks and annotations served as Label Studio's API
would), images and masks, and a training submitter that records what it is given."""
from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from seam.common.labelling import ls_rle_encode

KEY_A = "corrections-key-a-0123456789"
KEY_B = "corrections-key-b-0123456789"
CLASSES = ["red", "green", "blue"]  # the fake engine's
CONFIG = """<View>
  <Image name="image" value="$image"/>
  <Choices name="classes" toName="image" choice="multiple">
    <Choice value="Red thing" predicted_values="red"/>
    <Choice value="Blue thing" predicted_values="blue"/>
  </Choices>
  <BrushLabels name="tag" toName="image">
    <Label value="Red thing" predicted_values="red"/>
    <Label value="Blue thing" predicted_values="blue"/>
    <Label value="Zebra"/>
  </BrushLabels>
  <PolygonLabels name="poly" toName="image">
    <Label value="Green"/>
  </PolygonLabels>
</View>"""


def png(h: int, w: int, seed: int = 0) -> bytes:
    rgb = np.random.default_rng(seed).integers(90, 120, (h, w, 3), dtype=np.uint8)
    rgb[h // 6: h // 2, 1: w // 2] = (230, 20, 25)  # something red for the fake engine
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def block(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def brush(mask: np.ndarray, label: str, rid: str = "r1") -> dict:
    h, w = mask.shape
    return {"id": rid, "type": "brushlabels", "from_name": "tag", "to_name": "image", "original_width": w,
            "original_height": h, "image_rotation": 0,
            "value": {"format": "rle", "rle": ls_rle_encode(mask), "brushlabels": [label]}}


def choices(*values: str) -> dict:
    return {"id": "c1", "type": "choices", "from_name": "classes", "to_name": "image",
            "value": {"choices": list(values)}}


@dataclass
class LsProject:
    """Project 1 of a FakeLabelStudio: tasks with annotations, served at the API paths the
    backend reads (task, project, export, webhooks)."""

    ls: Any
    tasks: dict[int, dict] = field(default_factory=dict)
    next_annotation: int = 100

    def __post_init__(self) -> None:
        self.publish()

    def add_task(self, task_id: int, h: int, w: int, seed: int = 0) -> None:
        path = f"/data/upload/1/t{task_id}.png"
        self.ls.files[path] = png(h, w, seed)
        self.tasks[task_id] = {"id": task_id, "project": 1, "data": {"image": path}, "annotations": []}
        self.publish()

    def annotate(self, task_id: int, result: list[dict], cancelled: bool = False) -> dict:
        self.next_annotation += 1
        ann = {"id": self.next_annotation, "task": task_id, "project": 1, "result": result,
               "was_cancelled": cancelled, "updated_at": f"2026-01-01T00:00:{self.next_annotation % 60:02d}Z"}
        self.tasks[task_id]["annotations"].append(ann)
        self.publish()
        return ann

    def update(self, task_id: int, ann_id: int, result: list[dict]) -> dict:
        ann = next(a for a in self.tasks[task_id]["annotations"] if a["id"] == ann_id)
        ann["result"] = result
        ann["updated_at"] = "2026-01-02T00:00:00Z"
        self.publish()
        return ann

    def delete_annotation(self, task_id: int, ann_id: int) -> None:
        self.tasks[task_id]["annotations"] = [a for a in self.tasks[task_id]["annotations"] if a["id"] != ann_id]
        self.publish()

    def delete_task(self, task_id: int) -> None:
        del self.tasks[task_id]
        self.ls.files.pop(f"/api/tasks/{task_id}/", None)
        self.publish()

    def publish(self) -> None:
        f = self.ls.files
        f["/api/projects/1/"] = json.dumps({"id": 1, "label_config": CONFIG}).encode()
        f["/api/webhooks/?project=1"] = b"[]"
        f["/api/projects/1/export?exportType=JSON&download_all_tasks=true"] = json.dumps(
            list(self.tasks.values())).encode()
        for tid, t in self.tasks.items():
            f[f"/api/tasks/{tid}/"] = json.dumps(t).encode()


def event(action: str, ann: dict | None = None, **extra) -> dict:
    body: dict = {"action": action, "project": {"id": 1, "title": "p"}}
    if ann is not None:
        body["annotation"] = {k: ann[k] for k in ("id", "task", "result")}
        body["task"] = {"id": ann["task"]}
    body.update(extra)
    return body


def wait_for(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    end = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


@dataclass
class RecordingSubmitter:
    """Stands in for the training service: records (spec, owner) and answers an id."""

    calls: list[tuple[dict, str]] = field(default_factory=list)

    def __call__(self, spec: dict, principal) -> str:
        self.calls.append((spec, principal.owner))
        return f"training-{len(self.calls)}"
