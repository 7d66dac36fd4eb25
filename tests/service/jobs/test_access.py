"""Jobs belong to the key that submitted them (an admin key sees all), in the SQLite and Redis stores."""
from __future__ import annotations

import json

from seam.service.core.security import owner_of

from tests.service.fakes import (
    ADMIN,
    KEY_A,
    KEY_B,
    assert_error,
    png_bytes,
    post_job,
    wait,
    zip_bytes,
)


# --- jobs belong to their key --------------------------------------------------------------
def test_jobs_are_owned_by_their_key(app_client, mode):
    c = app_client(mode, api_keys=[KEY_A, KEY_B], admin_api_keys=[ADMIN])
    a = post_job(c, zip_bytes({"a.png": png_bytes(8, 8)}), KEY_A).json()
    b = post_job(c, zip_bytes({"b.png": png_bytes(8, 8)}), KEY_B).json()
    wait(c, a["id"], KEY_A)
    wait(c, b["id"], KEY_B)
    for path in (f"/jobs/{a['id']}", f"/jobs/{a['id']}/results", f"/jobs/{a['id']}/results/png/a"):
        assert c.get(path, headers={"X-API-Key": KEY_A}).status_code == 200, path
        err = assert_error(c.get(path, headers={"X-API-Key": KEY_B}), 404, "not_found")
        assert err["message"] == f"no job {a['id']} (unknown or expired)"  # same answer as an unknown job
        assert c.get(path, headers={"X-API-Key": ADMIN}).status_code == 200, path
    assert_error(c.delete(f"/jobs/{a['id']}", headers={"X-API-Key": KEY_B}), 404)
    listed_b = c.get("/jobs", headers={"X-API-Key": KEY_B}).json()
    assert [j["id"] for j in listed_b["jobs"]] == [b["id"]] and listed_b["total"] == 1
    listed_admin = c.get("/jobs", headers={"X-API-Key": ADMIN}).json()
    assert {j["id"] for j in listed_admin["jobs"]} == {a["id"], b["id"]}
    assert c.delete(f"/jobs/{b['id']}", headers={"X-API-Key": ADMIN}).status_code == 200
    snap = c.app.state.store.snapshot(a["id"])
    assert snap.owner == owner_of(KEY_A) and KEY_A not in json.dumps(snap.__dict__)  # a hash, never the key
