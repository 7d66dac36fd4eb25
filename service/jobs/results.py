"""The extra files of a finished job's results zip, beside the per-image outputs."""
from __future__ import annotations

import json
from collections.abc import Sequence

from seam.service.encoding import merge_coco
from seam.service.integrations import exports
from seam.service.storage import Storage


def coco_image_ids(manifest: dict) -> dict[str, int]:
    """The COCO `image_id` of each image of a job: its 1-based rank in image-id order. Fixed at
    submission, so a per-image file written by any worker and the merged coco.json agree, whichever
    images failed."""
    return {iid: n for n, iid in enumerate(sorted(manifest["images"]), start=1)}


def coco_docs(storage: Storage, job_id: str, manifest: dict) -> list[dict]:
    """The per-image COCO documents, in image-id order; images without one (failed) are left out."""
    docs = []
    for iid in sorted(manifest["images"]):
        try:
            docs.append(json.loads(storage.output_path(job_id, "coco", iid).read_bytes()))
        except (OSError, ValueError):
            continue
    return docs


def result_extras(storage: Storage, job_id: str, manifest: dict, names: Sequence[str],
                  kinds: Sequence[str]) -> dict[str, bytes]:
    """labelmap.txt with png outputs, coco.json with coco, the labelling tools' files with theirs."""
    extra: dict[str, bytes] = {}
    if "png" in kinds:
        extra["labelmap.txt"] = exports.cvat_labelmap(names)
    if "coco" in kinds:
        extra["coco.json"] = merge_coco(coco_docs(storage, job_id, manifest), f"seam job {job_id}", names)
    if "labelstudio" in kinds or "cvat" in kinds:
        extra.update(exports.job_extras(storage, job_id, manifest, names, list(kinds)))
    return extra
