"""A fit goes through the trainings' own submission (seam.service.trainings.submit.submit_spec):
the same SEAM_MAX_ACTIVE_TRAININGS check and wording as POST /trainings, and a trainer queue that
refuses the training is a 503, as for POST /trainings."""
from __future__ import annotations

import pytest

from tests.service.corrections.helpers import CONFIG, KEY_A, block, brush, event, wait_for

H, W = 24, 40
HDR = {"X-API-Key": KEY_A}


def corrected_project(client, project) -> None:
    r = client.post("/labelstudio/setup", headers=HDR, json={"project": "1.1767225600", "schema": CONFIG})
    assert r.status_code == 200, r.text
    wait_for(lambda: client.get("/corrections/labelstudio/1", headers=HDR).status_code == 200)
    project.add_task(1, H, W, seed=1)
    ann = project.annotate(1, [brush(block(H, W, 2, 10, 3, 20), "Blue thing")])
    assert client.post("/labelstudio/webhook", headers=HDR, json=event("ANNOTATION_CREATED", ann)).status_code == 201
    wait_for(lambda: client.get("/corrections/labelstudio/1", headers=HDR).json()["last_event"])


def trainings_on_disk(client) -> list:
    return list(client.app.state.trainings.unfinished())


def test_a_fit_meets_the_trainings_limit(client, project) -> None:
    client.app.state.submit_training = None  # the app's training service, not the recording stand-in
    corrected_project(client, project)
    client.app.state.settings.max_active_trainings = 0  # below the setting's floor: full without a training
    r = client.post("/corrections/labelstudio/1/fit", headers=HDR, json={"base_model": "fake:1"})
    assert r.status_code == 503, r.text
    err = r.json()["error"]
    assert err["code"] == "queue_full" and "(limit 0)" in err["message"]
    assert r.headers["retry-after"] == "60"
    assert trainings_on_disk(client) == []


def test_a_fit_the_trainers_cannot_queue_is_a_503(client, project, monkeypatch: pytest.MonkeyPatch) -> None:
    client.app.state.submit_training = None
    corrected_project(client, project)

    def broker_down(tid: str) -> None:
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(client.app.state.trainers, "submit", broker_down)
    r = client.post("/corrections/labelstudio/1/fit", headers=HDR, json={"base_model": "fake:1"})
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "unavailable" and "broker unreachable" in r.json()["error"]["message"]
    assert len(trainings_on_disk(client)) == 1  # queued on disk, as POST /trainings leaves it
