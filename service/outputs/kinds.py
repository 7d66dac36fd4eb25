"""The output kinds of a job: ONE table, the single source for every place that knows them.

An entry gives a kind its file extension, media type, the writer of its per-image file, the
merge step that adds whole-job files to the results zip, and the text the API documents and the
web page shows. Everything else reads this table: the request schema (`JobOptions.outputs`, its
OpenAPI enum and help), the storage layout (`outputs/<kind>/<image id><extension>`), the chunk
task that writes the files, the results zip, the media type of a downloaded file, and
`GET /outputs` (what the web page offers). Adding a kind is one `register(OutputKind(...))`
(docs/architecture.md, "Add an output kind").
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from seam.service.outputs.bodies import cams_npz
from seam.service.outputs.coco import coco_image_doc, merge_coco
from seam.service.outputs.labelling import (
    cvat_labelmap,
    cvat_mask_png,
    job_cvat_zip,
    job_labelstudio_tasks,
    ls_image_doc,
)
from seam.service.outputs.sources import ImageResults, JobFiles

from seam.common.encoders import encode_png_label, encode_png_rgb, mask_overlay

Writer = Callable[[ImageResults], bytes]
Merger = Callable[[JobFiles], dict[str, bytes]]


@dataclass(frozen=True)
class OutputKind:
    """One output kind. `merged`: the names of the files `merge` adds (the API documents them);
    `requires`: job options this kind cannot do without, each with the reason the 422 gives;
    `preselected`: the web page ticks it by default."""

    name: str
    extension: str
    media_type: str
    label: str
    description: str
    write: Writer
    merge: Merger | None = None
    merged: tuple[str, ...] = ()
    requires: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    preselected: bool = False

    def public(self) -> dict:
        """What `GET /outputs` answers for this kind."""
        return {"kind": self.name, "extension": self.extension, "media_type": self.media_type, "label": self.label,
                "description": self.description, "merged": list(self.merged), "requires": sorted(self.requires),
                "preselected": self.preselected}


OUTPUT_KINDS: dict[str, OutputKind] = {}
# Early clients asked for the CAM archive as "npy"; it always was an .npz.
ALIASES: dict[str, str] = {"npy": "npz"}


def register(kind: OutputKind) -> OutputKind:
    """Add `kind` to the table (its position is where it comes in listings and in the zip)."""
    if not kind.name.isidentifier() or kind.name in OUTPUT_KINDS or kind.name in ALIASES:
        raise ValueError(f"output kind name {kind.name!r} is not a new identifier")
    if not kind.extension.startswith(".") or "/" in kind.extension:
        raise ValueError(f"extension {kind.extension!r} of output kind {kind.name!r} must be like '.png'")
    OUTPUT_KINDS[kind.name] = kind
    return kind


def kind_names() -> list[str]:
    return list(OUTPUT_KINDS)


def canonical(name: str) -> str:
    return ALIASES.get(name, name)


def check_name(name: str) -> str:
    """`name` when it is a known kind; else ValueError naming the known ones (a 422 in requests)."""
    if name not in OUTPUT_KINDS:
        raise ValueError(f"unknown output kind {name!r}; known: {', '.join(OUTPUT_KINDS)}")
    return name


def get(name: str) -> OutputKind:
    return OUTPUT_KINDS[check_name(name)]


def help_text() -> str:
    """The kinds and what each is, as the API documents the `outputs` option."""
    return "; ".join(f"{k.name}: {k.description}" for k in OUTPUT_KINDS.values())


def results_zip_text() -> str:
    """The members of a job's results zip, as GET /jobs/{id}/results documents them."""
    merged = [n for k in OUTPUT_KINDS.values() for n in k.merged]
    return f"zip: <kind>/<image id>.<ext>, job.json, errors.json, {', '.join(merged)}"


def write_image(kinds: Iterable[str], item: ImageResults) -> dict[str, bytes]:
    """Every requested output of one segmented image, as bytes keyed by output kind."""
    return {k: get(k).write(item) for k in kinds}


def merge_job(kinds: Iterable[str], job: JobFiles) -> dict[str, bytes]:
    """The whole-job files of the requested kinds (table order), beside the per-image ones."""
    wanted = set(kinds)
    out: dict[str, bytes] = {}
    for k in OUTPUT_KINDS.values():
        if k.name in wanted and k.merge is not None:
            out.update(k.merge(job))
    return out


# --- the built-in kinds ---------------------------------------------------------------------------
def _json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _json_files(job: JobFiles, kind: str) -> Iterator[dict]:
    """The parsed per-image JSON files of `kind`; an unreadable one is left out like a missing one."""
    for _, data in job.files(kind):
        try:
            yield json.loads(data)
        except ValueError:
            continue


def _merge_coco(job: JobFiles) -> dict[str, bytes]:
    return {"coco.json": merge_coco(_json_files(job, "coco"), f"seam job {job.job_id}", job.names)}


def _merge_labelstudio(job: JobFiles) -> dict[str, bytes]:
    prefix = job.options.get("image_url_prefix")
    return {"labelstudio_tasks.json": job_labelstudio_tasks(job, prefix)} if prefix else {}


def _builtin() -> Sequence[OutputKind]:
    return (
        OutputKind("png", ".png", "image/png", "Mask PNG",
                   "VOC-palette label PNG (value = class index + 1, 0 = background), colours named in labelmap.txt",
                   lambda it: encode_png_label(it.seg.label),
                   merge=lambda job: {"labelmap.txt": cvat_labelmap(job.names)}, merged=("labelmap.txt",),
                   preselected=True),
        OutputKind("npz", ".npz", "application/octet-stream", "CAMs (npz)",
                   "class activation maps, float32 (old name npy accepted)",
                   lambda it: cams_npz(it.cams, it.names)),
        OutputKind("coco", ".json", "application/json", "COCO RLE JSON",
                   "COCO RLE annotations per image, merged into coco.json",
                   lambda it: _json(coco_image_doc(it.seg, it.names, it.image_id, it.file_name, it.coco_id)),
                   merge=_merge_coco, merged=("coco.json",), preselected=True),
        OutputKind("overlay", ".png", "image/png", "Overlay PNG (gallery)",
                   "the mask's colours and outlines over the image",
                   lambda it: encode_png_rgb(mask_overlay(it.rgb, it.seg.label)), preselected=True),
        OutputKind("labelstudio", ".json", "application/json", "Label Studio tasks",
                   "Label Studio tasks with predictions, merged into labelstudio_tasks.json (docs/labelstudio.md)",
                   lambda it: ls_image_doc(it.seg.label, it.names, it.seg.scores, it.file_name,
                                           method=it.seg.method),
                   merge=_merge_labelstudio, merged=("labelstudio_tasks.json",),
                   requires=MappingProxyType({"image_url_prefix": "how Label Studio reaches the images"})),
        OutputKind("cvat", ".png", "image/png", "CVAT masks (zip)",
                   "CVAT Segmentation mask 1.1 PNG, merged into cvat_segmentation_mask.zip (docs/cvat.md)",
                   lambda it: cvat_mask_png(it.seg.label, len(it.names)),
                   merge=lambda job: {"cvat_segmentation_mask.zip": job_cvat_zip(job)},
                   merged=("cvat_segmentation_mask.zip",)),
    )


for _kind in _builtin():
    register(_kind)
