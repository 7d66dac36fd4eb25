"""The records a synchronous request and its reply travel as, and their Redis keys.

A request is `<prefix>:rt:req:<id>` (a hash: `params` JSON + `image` bytes, the upload
as received, at most SEAM_MAX_UPLOAD_MB) expiring with the API's deadline, and its id
in the list `<prefix>:rt:pending`; the Celery message on the realtime queue only wakes
a worker up. The reply is pushed to `<prefix>:rt:reply:<id>`, which expires soon after.
Nothing is pickled: JSON plus raw bytes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, Field

REALTIME_TASK = "seam.realtime"
REALTIME_BUDGET_S = 30.0  # one wake-up of a worker serves pending requests at most this long
REPLY_TTL_S = 60  # a reply nobody collects (the API gave up) disappears after this


class SyncRequest(BaseModel):
    """What to compute for one uploaded image (validated by the API before it is queued)."""

    op: Literal["segment", "cam"]
    fmt: str = Field(description="png or json (segment); npz, png or json (cam)")
    labels: list[int] | None = None
    method: str | None = None  # segment: resolved by the API
    threshold: float | None = None
    refined: bool = False  # cam: PCM-refined maps
    max_side: int | None = None
    size: Literal["image", "working"] = "image"  # cam: maps at the image's size or the working size
    dtype: Literal["float32", "float16", "uint8"] = "float32"  # cam npz: how the maps are stored
    model: str | None = None  # NAME:VERSION resolved by the API (None: the worker's default model)

    def batch_key(self) -> tuple:
        """Requests with equal keys (and equal image sizes) can share one engine batch."""
        if self.op == "segment":
            return ("segment", self.model, self.method, self.threshold, self.max_side)
        return ("cam", self.model, self.refined, self.max_side, self.size)


@dataclass
class Reply:
    """A finished response, or an error (status >= 400, `code`, `message`)."""

    status: int = 200
    body: bytes = b""
    media_type: str = "application/octet-stream"
    headers: dict[str, str] = field(default_factory=dict)
    code: str | None = None
    message: str | None = None
    details: object = None
    meta: dict = field(default_factory=dict)  # for the route: method used, classes

    def encode(self) -> bytes:
        head = {"status": self.status, "media_type": self.media_type, "headers": self.headers, "code": self.code,
                "message": self.message, "details": self.details, "meta": self.meta}
        return json.dumps(head, separators=(",", ":")).encode() + b"\n" + self.body

    @classmethod
    def decode(cls, blob: bytes) -> Reply:
        head, _, body = blob.partition(b"\n")
        h = json.loads(head)
        return cls(status=int(h["status"]), body=body, media_type=h.get("media_type") or "application/octet-stream",
                   headers=dict(h.get("headers") or {}), code=h.get("code"), message=h.get("message"),
                   details=h.get("details"), meta=dict(h.get("meta") or {}))


class Keys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.pending = f"{prefix}:rt:pending"

    def request(self, rid: str) -> str:
        return f"{self.prefix}:rt:req:{rid}"

    def reply(self, rid: str) -> str:
        return f"{self.prefix}:rt:reply:{rid}"
