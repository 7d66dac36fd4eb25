"""The whole-job files of a job with output_url (jobs.stream_chunks.merge_beside), on a folder
blob store: merged over the images of the job's chunk files that have outputs, with their
folders in the file names, for a job of at most `merge_max_images` images; none for a bigger one."""
from __future__ import annotations

import json
import time

from seam.service.blobs.files import FileBlobStore
from seam.service.jobs.stream_chunks import OutputPrefix, merge_beside, streamed_images
from seam.service.storage import Storage

from tests.service.fakes import jid

NAMES = ["red", "green"]


def _job(tmp_path, merge_max_images: int) -> tuple[Storage, OutputPrefix, str]:
    storage, sink, j = Storage(tmp_path / "data"), OutputPrefix(FileBlobStore(tmp_path / "out")), jid()
    lines = [{"n": n, "id": f"{d}/im", "uri": f"s3://b/{d}/im.jpg", "labels": None} for n, d in ((1, "a"), (2, "b"))]
    lines.append({"n": 3, "id": "failed", "uri": "s3://b/failed.png", "labels": None})
    storage.put_chunk(j, 0, lines[:2])
    storage.put_chunk(j, 1, lines[2:])
    storage.write_manifest(j, {"id": j, "created_at": time.time(), "options": {"outputs": ["coco"]}, "images": {},
                               "labels": {}, "classes": NAMES, "streamed": True, "output_url": "s3://b/out/",
                               "merge_max_images": merge_max_images})
    for n, iid in ((1, "a/im"), (2, "b/im")):  # what the chunks wrote; "failed" has no output
        doc = {"image": {"id": n, "file_name": f"{iid}.jpg", "width": 4, "height": 3},
               "annotations": [{"id": 1, "image_id": n, "category_id": c + 1} for c in range(n)]}
        sink.write_output(j, "coco", iid, json.dumps(doc).encode())
    return storage, sink, j


def test_streamed_images_keep_the_ids_folders(tmp_path) -> None:
    storage, _, j = _job(tmp_path, 3)
    assert streamed_images(storage, j) == {"a/im": "a/im.jpg", "b/im": "b/im.jpg", "failed": "failed.png"}


def test_merged_beside_the_outputs_up_to_the_bound(tmp_path) -> None:
    storage, sink, j = _job(tmp_path, 3)
    assert merge_beside(storage, sink, j, total=3) == ["coco.json"]
    coco = json.loads(sink.store.get("coco.json"))
    assert [(im["id"], im["file_name"]) for im in coco["images"]] == [(1, "a/im.jpg"), (2, "b/im.jpg")]
    assert [(a["id"], a["image_id"]) for a in coco["annotations"]] == [(1, 1), (2, 2), (3, 2)]  # ids renumbered
    assert [c["name"] for c in coco["categories"]] == NAMES


def test_a_bigger_job_has_its_per_image_files_only(tmp_path) -> None:
    storage, sink, j = _job(tmp_path, 2)
    assert merge_beside(storage, sink, j, total=3) == []
    assert not (tmp_path / "out" / "coco.json").exists()
