"""What output writers and merge steps read: one segmented image (`ImageResults`) and the
per-image files of a finished job (`JobFiles`)."""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from seam.service.engine.base import SegmentResult

from seam.common.cam import CamResult


@dataclass
class ImageResults:
    """One image's segmentation and what its output files name it by. `cams` computes the
    class maps when a kind asks for them (only the npz output does; segmenting may not need them)."""

    rgb: np.ndarray
    seg: SegmentResult
    names: Sequence[str]
    image_id: str
    file_name: str
    coco_id: int = 0
    compute_cams: Callable[[], CamResult] | None = field(default=None, repr=False)

    @cached_property
    def cams(self) -> CamResult:
        if self.compute_cams is None:
            raise ValueError("no class maps for this image: nothing to compute them with")
        return self.compute_cams()


@dataclass(frozen=True)
class JobFiles:
    """A finished job's per-image output files, read through `read(kind, image id)` (None when the
    image has no such file: it failed, or the job was cancelled before it)."""

    job_id: str
    manifest: dict
    names: Sequence[str]
    read: Callable[[str, str], bytes | None]

    @property
    def image_ids(self) -> list[str]:
        return sorted(self.manifest["images"])

    @property
    def options(self) -> dict:
        return self.manifest.get("options") or {}

    def files(self, kind: str) -> Iterator[tuple[str, bytes]]:
        """(image id, bytes) of every image that has a `kind` file, in image-id order, read one at a
        time (a merge step holds one image's file at once)."""
        for iid in self.image_ids:
            data = self.read(kind, iid)
            if data is not None:
                yield iid, data
