"""A small stand-in for Label Studio's REST API on loopback, for the corrections loop benchmark
(bench/correction_loop.py): one project whose label config, tasks (image + weak labels) and
annotations are served at the paths the seam backend reads (`/api/projects/1/`, `/api/tasks/<id>/`,
the project's JSON export, `/api/webhooks/`, `/data/upload/...`) to requests with its legacy
token; and a simulated annotator's annotation (brush RLE per class, as Label Studio stores it).
The tests use their own fake (tests/service/integrations/helpers.py); the real Label Studio runs
in tests/service/integrations/test_labelstudio_corrections_real.py."""
from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from seam.common.labelling import ls_rle_encode

TOKEN = "bench-labelstudio-token-0123456789"


def brush_config(values: Sequence[str]) -> str:
    labels = "\n".join(f'    <Label value="{v}"/>' for v in values)
    return (f'<View>\n  <Image name="image" value="$image"/>\n  <BrushLabels name="tag" toName="image">\n'
            f"{labels}\n  </BrushLabels>\n</View>")


def brush_result(label_map: np.ndarray, classes: Sequence[str]) -> list[dict]:
    """An annotation's result painting `label_map` (0 background, c + 1 class c; 255 = left
    unpainted): one brush region per class present."""
    h, w = label_map.shape
    out = []
    for c, name in enumerate(classes):
        m = label_map == c + 1
        if m.any():
            out.append({"id": f"r{c}", "type": "brushlabels", "from_name": "tag", "to_name": "image",
                        "original_width": w, "original_height": h, "image_rotation": 0,
                        "value": {"format": "rle", "rle": ls_rle_encode(m), "brushlabels": [name]}})
    return out


class FakeLabelStudio:
    """Project 1 of a Label Studio: `add_task`, `annotate`; served until `close()`."""

    def __init__(self, classes: Sequence[str]) -> None:
        self.files: dict[str, bytes] = {}
        self.tasks: dict[int, dict] = {}
        self.config = brush_config(classes)
        self._next = 0
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a) -> None:
                pass

            def do_GET(self) -> None:
                if self.headers.get("Authorization") != f"Token {TOKEN}":
                    self.send_response(401)
                    self.end_headers()
                    return
                with outer._lock:
                    body = outer.files.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True)
        self.thread.start()
        self._publish()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def add_task(self, task_id: int, image: bytes, weak: Sequence[str]) -> None:
        path = f"/data/upload/1/{task_id}.png"
        with self._lock:
            self.files[path] = image
            self.tasks[task_id] = {"id": task_id, "project": 1, "annotations": [],
                                   "data": {"image": path, "tags": list(weak)}}
        self._publish()

    def annotate(self, task_id: int, result: list[dict]) -> dict:
        with self._lock:
            self._next += 1
            ann = {"id": self._next, "task": task_id, "project": 1, "result": result, "was_cancelled": False,
                   "updated_at": f"2026-01-01T00:{self._next // 60 % 60:02d}:{self._next % 60:02d}Z"}
            self.tasks[task_id]["annotations"].append(ann)
        self._publish()
        return ann

    def _publish(self) -> None:
        with self._lock:
            f = self.files
            f["/api/projects/1/"] = json.dumps({"id": 1, "label_config": self.config}).encode()
            f["/api/webhooks/?project=1"] = b"[]"
            f["/api/projects/1/export?exportType=JSON&download_all_tasks=true"] = json.dumps(
                list(self.tasks.values())).encode()
            for tid, t in self.tasks.items():
                f[f"/api/tasks/{tid}/"] = json.dumps(t).encode()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
