"""The output-kinds table is the single source: a toy kind registered in it (and nowhere else)
reaches the request schema and its OpenAPI, job submission, the per-image files and the merged
file of the results zip, one file's download with its media type, and GET /outputs (what the web
page lists)."""
from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator

import pytest
from seam.service.outputs import kinds
from seam.service.outputs.kinds import OutputKind
from seam.service.outputs.sources import ImageResults, JobFiles

from tests.service.fakes import assert_error, encode, rgb_image, zip_bytes
from tests.support import wait_done

SIZES = "sizes"


def _write_sizes(item: ImageResults) -> bytes:
    h, w = item.seg.label.shape
    return f"{item.image_id},{w},{h},{item.seg.method}\n".encode()


def _merge_sizes(job: JobFiles) -> dict[str, bytes]:
    return {"sizes.csv": b"image,width,height,method\n" + b"".join(data for _, data in job.files(SIZES))}


@pytest.fixture
def toy_kind() -> Iterator[OutputKind]:
    """Registers the toy kind for one test; the table is restored after it."""
    saved = dict(kinds.OUTPUT_KINDS)
    try:
        yield kinds.register(OutputKind(SIZES, ".txt", "text/plain", "Image sizes", "one CSV line per image",
                                        write=_write_sizes, merge=_merge_sizes, merged=("sizes.csv",)))
    finally:
        kinds.OUTPUT_KINDS.clear()
        kinds.OUTPUT_KINDS.update(saved)


def _submit(client, outputs: str):
    imgs = {f"im{i}": rgb_image(20 + i, 30 + 2 * i, seed=i) for i in range(3)}
    archive = zip_bytes({f"{iid}.png": encode(a) for iid, a in imgs.items()})
    return client.post("/jobs", files={"archive": ("a.zip", archive, "application/zip")},
                       data={"outputs": outputs, "method": "cam"}), imgs


def test_a_registered_kind_reaches_the_schema_and_the_outputs_list(toy_kind, client):
    schema = client.get("/openapi.json").json()
    comps = schema["components"]["schemas"]
    assert SIZES in comps["DirectoryJobRequest"]["properties"]["outputs"]["items"]["enum"]
    assert "sizes: one CSV line per image" in comps["DirectoryJobRequest"]["properties"]["outputs"]["description"]
    assert SIZES in comps["JobUploadForm"]["properties"]["outputs"]["description"]
    one_file = schema["paths"]["/jobs/{job_id}/results/{kind}/{name}"]["get"]
    (kind_param,) = [p for p in one_file["parameters"] if p["name"] == "kind"]
    assert SIZES in kind_param["schema"]["enum"]
    assert "text/plain" in one_file["responses"]["200"]["content"]
    assert "sizes.csv" in schema["paths"]["/jobs/{job_id}/results"]["get"]["responses"]["200"]["description"]

    listed = client.get("/outputs").json()
    assert [k["kind"] for k in listed] == kinds.kind_names() and listed[-1]["kind"] == SIZES
    assert listed[-1] == {"kind": SIZES, "extension": ".txt", "media_type": "text/plain", "label": "Image sizes",
                          "description": "one CSV line per image", "merged": ["sizes.csv"], "requires": [],
                          "preselected": False}


def test_a_registered_kind_is_written_merged_and_served(toy_kind, client):
    r, imgs = _submit(client, f"png,{SIZES}")
    assert r.status_code == 202, r.text
    job = wait_done(client, r.json()["id"])
    assert (job["state"], job["done"], job["outputs"]) == ("succeeded", 3, ["png", SIZES])
    zf = zipfile.ZipFile(io.BytesIO(client.get(f"/jobs/{job['id']}/results").content))
    for iid, a in imgs.items():
        assert zf.read(f"{SIZES}/{iid}.txt") == f"{iid},{a.shape[1]},{a.shape[0]},cam\n".encode()
    merged = zf.read("sizes.csv").decode().splitlines()
    assert merged[0] == "image,width,height,method" and sorted(merged[1:]) == [
        f"{iid},{a.shape[1]},{a.shape[0]},cam" for iid, a in sorted(imgs.items())]
    one = client.get(f"/jobs/{job['id']}/results/{SIZES}/im1")
    assert one.status_code == 200 and one.headers["content-type"].startswith("text/plain")
    assert one.content == zf.read(f"{SIZES}/im1.txt")


def test_an_unregistered_kind_is_refused(client):
    """Without the fixture the toy kind is unknown: the tests above do not pass by accident."""
    assert SIZES not in kinds.OUTPUT_KINDS
    r, _ = _submit(client, f"png,{SIZES}")
    assert_error(r, 422, "validation_error", f"unknown output kind '{SIZES}'")
    assert SIZES not in [k["kind"] for k in client.get("/outputs").json()]


def test_a_kind_that_needs_an_option_says_so(client):
    r, _ = _submit(client, "labelstudio")
    assert_error(r, 422, "validation_error", "the labelstudio output needs image_url_prefix")


@pytest.mark.parametrize("name, ext", [("png", ".png"), ("npy", ".npz"), ("bad name", ".txt"), ("ok", "txt")])
def test_register_refuses_taken_names_and_bad_extensions(name, ext):
    with pytest.raises(ValueError):
        kinds.register(OutputKind(name, ext, "text/plain", "x", "x", write=_write_sizes))
    assert name not in kinds.OUTPUT_KINDS or name == "png"
