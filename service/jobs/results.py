"""A job's output files: the per-image files the chunk task writes and the whole-job files the
results zip adds, both from the output-kinds table (`seam.service.outputs.kinds`)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from seam.service.engine import methods
from seam.service.engine.base import InferenceEngine, SegmentResult
from seam.service.jobs.stream_chunks import streamed_images
from seam.service.outputs import kinds
from seam.service.outputs.sources import ImageResults, JobFiles
from seam.service.storage import Storage

from seam.common.cam import CamResult


def coco_image_ids(manifest: dict) -> dict[str, int]:
    """The COCO `image_id` of each image of a job: its 1-based rank in image-id order. Fixed at
    submission, so a per-image file written by any worker and the merged coco.json agree, whichever
    images failed."""
    return {iid: n for n, iid in enumerate(sorted(manifest["images"]), start=1)}


def image_files(engine: InferenceEngine, rgb: np.ndarray, seg: SegmentResult, labels: list[int] | None,
                output_kinds: Sequence[str], names: Sequence[str], image_id: str, file_name: str,
                coco_id: int = 0) -> dict[str, bytes]:
    """Every requested output of one segmented image, as bytes keyed by output kind."""

    def cams() -> CamResult:
        if seg.cams is None:  # the method did not keep its maps: compute them for the image's classes
            # a method that computes no CAMs (deeplab) shows the refined ones
            refined = methods.get(seg.method).cams != "raw"
            return engine.cam(rgb, labels if labels is not None else seg.classes, refined=refined)
        if hasattr(seg.cams, "at_size"):  # the engine keeps a segmentation's maps at its working size
            return seg.cams.at_size(rgb.shape[:2])
        return seg.cams

    item = ImageResults(rgb=rgb, seg=seg, names=names, image_id=image_id, file_name=file_name, coco_id=coco_id,
                        compute_cams=cams)
    return kinds.write_image(output_kinds, item)


def job_files(storage: Storage, job_id: str, manifest: dict, names: Sequence[str]) -> JobFiles:
    """The per-image files of a job as the merge steps read them."""
    if manifest.get("streamed") and not manifest.get("images"):  # a data set: its images are in chunk files
        manifest = {**manifest, "images": streamed_images(storage, job_id)}

    def read(kind: str, image_id: str) -> bytes | None:
        return storage.read_output(job_id, kind, image_id)  # None: failed image, or swept meanwhile

    return JobFiles(job_id=job_id, manifest=manifest, names=names, read=read)


def result_extras(storage: Storage, job_id: str, manifest: dict, names: Sequence[str],
                  output_kinds: Sequence[str]) -> dict[str, bytes]:
    """The whole-job files of the kinds the job asked for (labelmap.txt, coco.json, the labelling
    tools' files), beside the per-image outputs in its results zip."""
    return kinds.merge_job(output_kinds, job_files(storage, job_id, manifest, names))
