"""Model versions on the page, against a real server (onnx engine) over a versioned repository
(the bundled demo model published as demo:1, promoted, and demo:2): the model picker lists GET
/models' repository and every request names the chosen version (`model`), which the answers
confirm (`X-Seam-Model`); the Train view uploads an archive to POST /trainings, shows its
progress while polling, and promotes the version it published (forcing when the server refuses,
as a person would after reading why), after which the picker shows it promoted."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from testkit.processes import service_env, start_server, stop_process, uvicorn_argv
from testkit.versions import BG, publish_variant
from tests.browser.helpers import wait_js
from tests.service.fakes import encode
from tests.service.trainings.helpers import RECIPE, synth_set, tagged_folder, zip_folder
from tests.support import shapes_photo

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # Chromium, the demo model, a training: a minute


@pytest.fixture(scope="module")
def repo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("web-models")
    repo = tmp / "models"
    assert publish_variant(repo, "demo", BG[1], tmp) == 1  # a name's first version is promoted
    assert publish_variant(repo, "demo", BG[2], tmp) == 2
    env = service_env(SEAM_ENGINE="onnx", SEAM_DATA_DIR=str(tmp / "data"), SEAM_MODELS_DIR=str(repo),
                      SEAM_MODELS_POLL_S="0.2", SEAM_THREADS="1", PYTHONUNBUFFERED="1")
    url, proc = start_server(uvicorn_argv, env, tmp / "uvicorn.log", timeout=120)
    yield url
    stop_process(proc)


def _options(page, selector: str) -> list[str]:
    return page.locator(f"{selector} option").evaluate_all("els => els.map(e => e.value)")


def test_every_request_names_the_chosen_version(repo_server, page, tmp_path):
    page.goto(repo_server + "/")
    page.wait_for_selector("#model-picker:not([hidden])")
    assert _options(page, "#model-select") == ["", "demo", "demo:1", "demo:2"]
    assert "server default (demo:1)" in page.locator("#model-select option").first.inner_text()
    answered: list[tuple[str, str | None]] = []
    page.on("response", lambda r: answered.append((r.url, r.headers.get("x-seam-model")))
            if r.request.method == "POST" else None)

    def cams_by(version: str) -> None:
        """The image's CAMs computed again; both answers say which version computed them.
        (Playwright gives no multipart body with a file, so the answers are what is checked.)"""
        wait_js(page, "seamPage.maskSource() !== null")
        for _ in range(200):
            got = [h for u, h in answered if u.endswith(("/cam", "/cam/refined"))]
            if len(got) >= 2:
                break
            page.wait_for_timeout(50)
        assert got == [version, version], answered
        answered.clear()

    path = tmp_path / "shapes.png"
    path.write_bytes(encode(shapes_photo(96, 128)))
    page.set_input_files("#image-input", str(path))
    cams_by("demo:1")  # the server's default
    # another version: the shown image is computed again, by that version
    page.select_option("#model-select", "demo:2")
    cams_by("demo:2")
    assert page.locator("#model-description").inner_text().startswith("demo:2")
    # the name alone: its promoted version
    page.select_option("#model-select", "demo")
    cams_by("demo:1")
    # the server's mask (the PNG download) names the chosen version too
    page.select_option("#model-select", "demo:2")
    cams_by("demo:2")
    with page.expect_download():
        page.click("#download-png")
    assert [h for u, h in answered if u.endswith("/segment")] == ["demo:2"], answered


def test_train_view_trains_then_promotes(repo_server, page, tmp_path):
    archive = tmp_path / "data.zip"
    archive.write_bytes(zip_folder(tagged_folder(synth_set(tmp_path / "synth", n=16), tmp_path / "tagged")))
    page.goto(repo_server + "/#train")
    page.wait_for_selector("#train-base option[value='demo:1']", state="attached")
    page.set_input_files("#train-archive", str(archive))
    page.fill("#train-name", "demo")
    page.select_option("#train-backbone", RECIPE["backbone"])
    # enough steps (40 epochs of 3, a few seconds) that the page's 1 s polls see the stage running:
    # on a fast machine 6 epochs of this tiny set ended between two polls
    page.fill("#train-epochs", "40")
    page.fill("#train-batch", str(RECIPE["batch_size"]))
    page.fill("#train-crop", str(RECIPE["crop"]))
    page.click("#train-submit")
    row = page.locator("#trainings-body tr").first
    row.wait_for()

    # progress while polling: the training's stage, epoch and step show before it ends
    seen: set[str] = set()
    for _ in range(6000):  # at most ~5 minutes on a busy 2-core machine
        state = row.get_attribute("data-state")
        seen.add(row.locator("[data-field=progress]").inner_text())
        if state in ("succeeded", "failed", "cancelled"):
            break
        page.wait_for_timeout(50)
    assert state == "succeeded", (state, row.inner_text())
    assert any("step" in s and "epoch" in s for s in seen), seen
    assert "demo:3" in row.inner_text() and "(promoted)" not in row.inner_text()
    assert "held-out mIoU" in row.locator("[data-field=evaluation]").inner_text()
    page.wait_for_selector("#model-select option[value='demo:3']", state="attached")  # the picker lists it

    # promote; when the server refuses (e.g. worse on the held-out images), its reason shows and
    # the page offers to promote anyway
    page.click("#trainings-body button[data-action=promote]")
    page.wait_for_selector("#trainings-body button[data-action=force], #trainings-body tr:has-text('(promoted)')")
    if page.locator("#trainings-body button[data-action=force]").count():
        assert page.locator("#trainings-body .refusal").inner_text()
        page.click("#trainings-body button[data-action=force]")
    page.wait_for_selector("#trainings-body tr:has-text('demo:3 (promoted)')")
    page.wait_for_selector("#model-select option[value=demo]:has-text('promoted: 3')", state="attached")
