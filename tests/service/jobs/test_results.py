"""Job results keep the class names of their submission."""
from __future__ import annotations

import io
import zipfile

from tests.service.fakes import (
    FakeEngine,
    png_bytes,
    zip_bytes,
)
from tests.support import wait_done


# --- jobs keep their class names -------------------------------------------------------------
def test_job_results_use_the_classes_of_submission(client):
    archive = zip_bytes({"a.png": png_bytes(seed=1), "b.png": png_bytes(seed=2)})
    job = client.post("/jobs", files={"archive": ("a.zip", archive)}, data={"outputs": "png,coco"}).json()
    wait_done(client, job["id"], 20)
    manifest = client.app.state.storage.read_manifest(job["id"])
    assert manifest["classes"] == ["red", "green", "blue"] and manifest["models"][0]["name"] == "fake"
    client.app.state.holder.set(FakeEngine(classes=("cat", "dog", "cow")), warm=False)  # another model now
    zf = zipfile.ZipFile(io.BytesIO(client.get(f"/jobs/{job['id']}/results").content))
    assert "red:" in zf.read("labelmap.txt").decode() and "cat" not in zf.read("labelmap.txt").decode()
    import json

    cats = [c["name"] for c in json.loads(zf.read("coco.json"))["categories"]]
    assert cats == ["red", "green", "blue"]
