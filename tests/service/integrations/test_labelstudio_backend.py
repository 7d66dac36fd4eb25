"""The /labelstudio ML-backend routes, driven with payloads shaped like Label Studio's
(`label_studio/ml/api_connector.py`: make_predictions, setup, webhook), against a fake Label
Studio on loopback (that answers as Label Studio 1.23.2 does: 406 to `Accept: image/*`, personal
access tokens only through /api/token/refresh/). Masks are decoded with label_studio_sdk's own
brush decoder."""
from __future__ import annotations

import base64
import io
import json
import time
import zipfile

import numpy as np
import pytest
from label_studio_sdk.converter.brush import decode_rle
from label_studio_sdk.label_interface import LabelInterface
from matplotlib.path import Path as MplPath
from scipy import ndimage
from seam.service.fake_engine import FakeEngine
from seam.service.integrations.ls_settings import LabelStudioSettings

from tests.service.fakes import encode, scene
from tests.service.integrations.helpers import LS_TOKEN
from tests.support import wait_done

CONFIG = """<View>
  <Image name="image" value="$image" zoom="true"/>
  <Choices name="classes" toName="image" choice="multiple">
    <Choice value="Red thing" predicted_values="red"/>
    <Choice value="Blue thing" predicted_values="blue"/>
  </Choices>
  <BrushLabels name="tag" toName="image">
    <Label value="Red thing" predicted_values="red" background="#ff0000"/>
    <Label value="Blue thing" predicted_values="blue"/>
    <Label value="Green"/>
  </BrushLabels>
  <PolygonLabels name="poly" toName="image">
    <Label value="Red thing" predicted_values="red"/>
    <Label value="Blue thing" predicted_values="blue"/>
  </PolygonLabels>
</View>"""
SIZES = [(23, 37), (29, 51), (1, 1)]


def ls_task(task_id: int, image: str, **extra) -> dict:
    """A task as Label Studio's PredictTaskSerializer sends it."""
    t = {"id": task_id, "data": {"image": image}, "meta": {}, "created_at": "2026-01-01T00:00:00Z",
         "updated_at": "2026-01-01T00:00:00Z", "is_labeled": False, "overlap": 1, "inner_id": task_id,
         "total_annotations": 0, "cancelled_annotations": 0, "total_predictions": 0, "comment_count": 0,
         "unresolved_comment_count": 0, "last_comment_updated_at": None, "project": 1, "updated_by": None,
         "file_upload": 1, "comment_authors": [], "annotations": [], "predictions": []}
    for k, v in extra.items():
        if k == "data":
            t["data"].update(v)
        else:
            t[k] = v
    return t


def predict_body(tasks: list[dict], config: str = CONFIG) -> dict:
    return {"tasks": tasks, "model_version": None, "project": "1.1767225600", "label_config": config,
            "params": {"login": None, "password": None, "context": None}}


def ls_settings(fake_ls, **kw) -> LabelStudioSettings:
    base = dict(url=fake_ls.url, api_key=LS_TOKEN, allow_private=True)
    base.update(kw)
    return LabelStudioSettings(**base)


def serve_images(fake_ls, sizes=SIZES) -> list[np.ndarray]:
    imgs = []
    for i, (h, w) in enumerate(sizes):
        rgb = scene(h, w, seed=i)
        fake_ls.files[f"/data/upload/1/img{i}.png"] = encode(rgb)
        imgs.append(rgb)
    return imgs


def test_predict_brush_masks_decode_with_the_sdk_pixel_for_pixel(make_app, fake_ls) -> None:
    imgs = serve_images(fake_ls)
    client = make_app(ls_settings(fake_ls))
    tasks = [ls_task(i + 1, f"/data/upload/1/img{i}.png") for i in range(len(imgs))]
    r = client.post("/labelstudio/predict", json=predict_body(tasks))
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == len(imgs)
    engine = FakeEngine()
    names = {0: "Red thing", 2: "Blue thing"}
    for rgb, res in zip(imgs, results, strict=True):
        h, w = rgb.shape[:2]
        seg = engine.segment(rgb, None, method="pcm")
        expected = {names[c]: seg.label == c + 1 for c in seg.classes if (seg.label == c + 1).any()}
        got = {}
        for reg in res["result"]:
            assert reg["type"] == "brushlabels" and reg["from_name"] == "tag" and reg["to_name"] == "image"
            assert (reg["original_width"], reg["original_height"]) == (w, h)
            assert reg["value"]["format"] == "rle"
            decoded = decode_rle(reg["value"]["rle"]).reshape(h, w, 4)[:, :, 3]
            assert set(np.unique(decoded)) <= {0, 255}
            got[reg["value"]["brushlabels"][0]] = decoded == 255
        assert got.keys() == expected.keys()
        for k in expected:
            assert np.array_equal(got[k], expected[k]), k
        assert res["model_version"].startswith("seam-wsss:fake:")
    # the two real images have both classes: the comparison above is not vacuous
    assert len(results[0]["result"]) == 2 and len(results[1]["result"]) == 2
    # every image came from the fake Label Studio, with its token
    assert [p for p, _ in fake_ls.requests] == [t["data"]["image"] for t in tasks]
    assert all(h["authorization"] == f"Token {LS_TOKEN}" for _, h in fake_ls.requests)


def test_image_labels_from_a_task_field(make_app, fake_ls) -> None:
    imgs = serve_images(fake_ls, SIZES[:1])
    client = make_app(ls_settings(fake_ls, labels_field="tags"))
    task = ls_task(7, "/data/upload/1/img0.png", data={"tags": ["Blue thing"]})
    r = client.post("/labelstudio/predict", json=predict_body([task]))
    assert r.status_code == 200, r.text
    regs = r.json()["results"][0]["result"]
    assert [g["value"]["brushlabels"] for g in regs] == [["Blue thing"]]
    seg = FakeEngine().segment(imgs[0], [2], method="pcm")
    h, w = imgs[0].shape[:2]
    assert np.array_equal(decode_rle(regs[0]["value"]["rle"]).reshape(h, w, 4)[:, :, 3] == 255, seg.label == 3)
    bad = ls_task(8, "/data/upload/1/img0.png", data={"tags": "unicorn"})
    r = client.post("/labelstudio/predict", json=predict_body([bad]))
    assert r.status_code == 422 and "unicorn" in r.json()["error"]["message"]


def test_image_labels_from_a_choices_annotation(make_app, fake_ls) -> None:
    serve_images(fake_ls, SIZES[:1])
    client = make_app(ls_settings(fake_ls))
    ann = {"id": 3, "was_cancelled": False, "result": [
        {"id": "c1", "type": "choices", "from_name": "classes", "to_name": "image", "origin": "manual",
         "value": {"choices": ["Red thing"]}}]}
    task = ls_task(9, "/data/upload/1/img0.png", annotations=[ann], total_annotations=1)
    r = client.post("/labelstudio/predict", json=predict_body([task]))
    assert r.status_code == 200, r.text
    assert [g["value"]["brushlabels"] for g in r.json()["results"][0]["result"]] == [["Red thing"]]


def test_polygon_option_rasterises_back_to_the_mask(make_app, fake_ls) -> None:
    imgs = serve_images(fake_ls, SIZES[:2])
    client = make_app(ls_settings(fake_ls, region="polygon", min_polygon_area=1))
    tasks = [ls_task(i + 1, f"/data/upload/1/img{i}.png") for i in range(2)]
    r = client.post("/labelstudio/predict", json=predict_body(tasks))
    assert r.status_code == 200, r.text
    for rgb, res in zip(imgs, r.json()["results"], strict=True):
        h, w = rgb.shape[:2]
        seg = FakeEngine().segment(rgb, None, method="pcm")
        yy, xx = np.mgrid[0:h, 0:w]
        centres = np.stack([xx.ravel() + 0.5, yy.ravel() + 0.5], 1)
        raster: dict[str, np.ndarray] = {}
        for reg in res["result"]:
            assert reg["type"] == "polygonlabels" and reg["from_name"] == "poly" and reg["value"]["closed"]
            pts = np.asarray(reg["value"]["points"], float) * [w / 100.0, h / 100.0]
            lab = reg["value"]["polygonlabels"][0]
            inside = MplPath(pts).contains_points(centres).reshape(h, w)
            raster[lab] = raster.get(lab, np.zeros((h, w), bool)) | inside
        for c, name in ((0, "Red thing"), (2, "Blue thing")):
            expected = ndimage.binary_fill_holes(seg.label == c + 1, structure=np.ones((3, 3)))
            assert np.array_equal(raster.get(name, np.zeros((h, w), bool)), expected), name


def test_forbidden_host_is_refused_and_nothing_is_fetched(make_app, fake_ls) -> None:
    serve_images(fake_ls, SIZES[:1])
    client = make_app(ls_settings(fake_ls))
    tasks = [ls_task(1, "/data/upload/1/img0.png"), ls_task(2, "http://evil.example.com/steal.png")]
    r = client.post("/labelstudio/predict", json=predict_body(tasks))
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "forbidden_image_url"
    # host names may be redacted from client messages (seam.service.core.redact); the reason is not
    assert "task 2" in err["message"] and "is not the configured Label Studio" in err["message"]
    assert fake_ls.requests == []  # not even the allowed task's image


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x.png", "gopher://127.0.0.1:70/x",
                                 "//evil.example.com/x.png", "http://user:pw@127.0.0.1/x.png"])
def test_non_http_and_odd_urls_are_refused(make_app, fake_ls, url: str) -> None:
    client = make_app(ls_settings(fake_ls))
    r = client.post("/labelstudio/predict", json=predict_body([ls_task(1, url)]))
    assert r.status_code == 422 and r.json()["error"]["code"] == "forbidden_image_url", r.text
    assert fake_ls.requests == []


def test_same_host_other_port_is_another_origin(make_app, fake_ls, other_server) -> None:
    client = make_app(ls_settings(fake_ls))
    r = client.post("/labelstudio/predict", json=predict_body([ls_task(1, other_server.url + "/data/x.png")]))
    assert r.status_code == 422 and r.json()["error"]["code"] == "forbidden_image_url"
    assert other_server.requests == [] and fake_ls.requests == []


def test_redirect_to_another_host_is_refused(make_app, fake_ls, other_server) -> None:
    fake_ls.redirects["/data/upload/1/moved.png"] = other_server.url + "/data/upload/1/img0.png"
    client = make_app(ls_settings(fake_ls))
    r = client.post("/labelstudio/predict", json=predict_body([ls_task(1, "/data/upload/1/moved.png")]))
    assert r.status_code == 422 and r.json()["error"]["code"] == "forbidden_image_url", r.text
    assert other_server.requests == []


def test_redirect_to_an_extra_host_gets_no_token(make_app, fake_ls, other_server) -> None:
    rgb = scene(17, 19)
    other_server.files["/bucket/a.png"] = encode(rgb)
    fake_ls.redirects["/tasks/5/presign/"] = other_server.url + "/bucket/a.png"
    host = other_server.url.split("//", 1)[1]
    # the other server wants token "other": without it (our Label Studio token is not sent there) it says 401
    client = make_app(ls_settings(fake_ls, extra_hosts=[host]))
    r = client.post("/labelstudio/predict", json=predict_body([ls_task(5, "/tasks/5/presign/")]))
    assert r.status_code == 502 and "401" in r.json()["error"]["message"]
    assert len(other_server.requests) == 1 and "authorization" not in other_server.requests[0][1]


def test_private_address_refused_unless_allowed(make_app, fake_ls) -> None:
    serve_images(fake_ls, SIZES[:1])
    client = make_app(ls_settings(fake_ls, allow_private=False))
    r = client.post("/labelstudio/predict", json=predict_body([ls_task(1, "/data/upload/1/img0.png")]))
    assert r.status_code == 422
    assert "SEAM_LABELSTUDIO_ALLOW_PRIVATE" in r.json()["error"]["message"]
    assert fake_ls.requests == []


def test_upload_limits_apply(make_app, fake_ls) -> None:
    rgb = np.random.default_rng(0).integers(0, 255, (64, 64, 3)).astype(np.uint8)
    fake_ls.files["/data/upload/1/big.png"] = encode(rgb)  # ~12 kB of noise
    client = make_app(ls_settings(fake_ls), max_upload_mb=0.005)
    r = client.post("/labelstudio/predict", json=predict_body([ls_task(1, "/data/upload/1/big.png")]))
    assert r.status_code == 413, r.text
    client = make_app(ls_settings(fake_ls), max_pixels=1000)
    r = client.post("/labelstudio/predict", json=predict_body([ls_task(1, "/data/upload/1/big.png")]))
    assert r.status_code == 413 and "pixels" in r.json()["error"]["message"]
    fake_ls.files["/data/upload/1/text.png"] = b"not an image at all"
    r = client.post("/labelstudio/predict", json=predict_body([ls_task(1, "/data/upload/1/text.png")]))
    assert r.status_code == 415


def test_missing_image_and_unusable_configs(make_app, fake_ls) -> None:
    client = make_app(ls_settings(fake_ls))
    r = client.post("/labelstudio/predict", json=predict_body([ls_task(1, "/data/upload/1/none.png")]))
    assert r.status_code == 502 and "404" in r.json()["error"]["message"]
    only_choices = ('<View><Image name="i" value="$image"/><Choices name="c" toName="i">'
                    '<Choice value="red"/></Choices></View>')
    r = client.post("/labelstudio/predict", json=predict_body([ls_task(1, "/x.png")], only_choices))
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_label_config"
    nomatch = ('<View><Image name="i" value="$image"/><BrushLabels name="b" toName="i">'
               '<Label value="Cat"/></BrushLabels></View>')
    r = client.post("/labelstudio/predict", json=predict_body([ls_task(1, "/x.png")], nomatch))
    assert r.status_code == 422 and "predicted_values" in r.json()["error"]["message"]
    bomb = '<!DOCTYPE x [<!ENTITY a "aaaa">]><View/>'
    r = client.post("/labelstudio/predict", json=predict_body([ls_task(1, "/x.png")], bomb))
    assert r.status_code == 422
    assert fake_ls.requests[:1] == fake_ls.requests and len(fake_ls.requests) == 1  # only the 404 one


def test_not_configured_is_503(make_app) -> None:
    client = make_app(LabelStudioSettings(url=None))
    r = client.post("/labelstudio/predict", json=predict_body([ls_task(1, "/data/upload/1/a.png")]))
    assert r.status_code == 503 and "SEAM_LABELSTUDIO_URL" in r.json()["error"]["message"]


def test_setup_webhook_health_metrics(make_app, fake_ls) -> None:
    client = make_app(ls_settings(fake_ls))
    r = client.post("/labelstudio/setup", json={"project": "1.1767225600", "schema": CONFIG,
                                                "hostname": "http://localhost:8080", "access_token": "x",
                                                "model_version": None})
    assert r.status_code == 200 and r.json()["model_version"].startswith("seam-wsss:")
    r = client.post("/labelstudio/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 1,
                                                  "label_config": CONFIG}, "annotation": {"id": 1}})
    assert r.status_code == 201 and r.json()["status"] == "ok"
    r = client.post("/labelstudio/webhook", json={"action": "PROJECT_UPDATED", "project": {"id": 1}})
    assert r.status_code == 200 and r.json() == {"status": "Unknown event"}
    for path in ("/labelstudio/health", "/labelstudio/"):
        r = client.get(path)
        assert r.status_code == 200 and r.json()["status"] == "UP"
    assert client.get("/labelstudio/metrics").json() == {}


def test_basic_auth_password_is_an_api_key(make_app, fake_ls) -> None:
    serve_images(fake_ls, SIZES[:1])
    key = "s" * 24
    client = make_app(ls_settings(fake_ls), api_keys=[key])
    body = predict_body([ls_task(1, "/data/upload/1/img0.png")])
    assert client.post("/labelstudio/predict", json=body).status_code == 401
    bad = base64.b64encode(b"seam:" + b"x" * 24).decode()
    assert client.post("/labelstudio/predict", json=body, headers={"Authorization": f"Basic {bad}"}).status_code == 401
    assert client.get("/labelstudio/health").status_code == 401
    good = base64.b64encode(f"seam:{key}".encode()).decode()
    r = client.post("/labelstudio/predict", json=body, headers={"Authorization": f"Basic {good}"})
    assert r.status_code == 200, r.text
    assert client.get("/labelstudio/health", headers={"Authorization": f"Basic {good}"}).status_code == 200
    # the translation is limited to /labelstudio: Basic auth is no key for the rest of the API
    assert client.get("/models", headers={"Authorization": f"Basic {good}"}).status_code == 401


# --- what the real Label Studio 1.23 does (tests/service/integrations/test_labelstudio_real.py runs it) ------
def test_image_requests_accept_what_label_studio_serves(make_app, fake_ls) -> None:
    """Label Studio's /data/upload answers 406 to `Accept: image/*` alone (the fake does too)."""
    serve_images(fake_ls, SIZES[:1])
    client = make_app(ls_settings(fake_ls))
    r = client.post("/labelstudio/predict", json=predict_body([ls_task(1, "/data/upload/1/img0.png")]))
    assert r.status_code == 200, r.text
    assert "*/*" in fake_ls.requests[0][1]["accept"]


def test_personal_access_token_is_exchanged_cached_and_renewed(make_app, fake_ls, monkeypatch) -> None:
    from seam.service.integrations import fetch

    serve_images(fake_ls, SIZES[:1])
    client = make_app(ls_settings(fake_ls, api_key=fake_ls.pat))
    body = predict_body([ls_task(1, "/data/upload/1/img0.png")])
    for _ in range(2):
        r = client.post("/labelstudio/predict", json=body)
        assert r.status_code == 200, r.text
    assert fake_ls.exchanges == 1  # the access token is reused while valid
    sent = {h["authorization"] for _, h in fake_ls.requests}
    assert len(sent) == 1 and sent != {f"Bearer {fake_ls.pat}"} and next(iter(sent))[7:] in fake_ls.issued
    # near its expiry (5 minutes in Label Studio) it is exchanged again before use
    later = time.time() + fake_ls.access_ttl
    monkeypatch.setattr(fetch.ACCESS_TOKENS, "_clock", lambda: later)
    assert client.post("/labelstudio/predict", json=body).status_code == 200
    assert fake_ls.exchanges == 2
    monkeypatch.undo()
    # revoked (Label Studio answers 401): one fresh exchange and the fetch is retried
    fake_ls.issued.clear()
    r = client.post("/labelstudio/predict", json=body)
    assert r.status_code == 200, r.text
    assert fake_ls.exchanges == 3


def test_a_refused_personal_access_token_names_the_task_and_the_exchange(make_app, fake_ls) -> None:
    from tests.service.integrations.helpers import fake_jwt

    serve_images(fake_ls, SIZES[:1])
    client = make_app(ls_settings(fake_ls, api_key=fake_jwt("refresh", time.time() + 3600, "other")))
    r = client.post("/labelstudio/predict", json=predict_body([ls_task(4, "/data/upload/1/img0.png")]))
    assert r.status_code == 502
    msg = r.json()["error"]["message"]
    assert "task 4" in msg and "/api/token/refresh/" in msg and "401" in msg
    assert fake_ls.requests == []  # no image request went out without a token


@pytest.mark.parametrize("kind", ["redirect_to_data", "nul_byte", "bad_ipv6", "redirect_to_bad_ipv6"])
def test_url_errors_are_422_naming_the_task(make_app, fake_ls, kind: str) -> None:
    serve_images(fake_ls, SIZES[:1])
    fake_ls.redirects["/data/upload/1/to-data.png"] = "data:image/png;base64,iVBORw0KGgo="
    fake_ls.redirects["/data/upload/1/to-odd.png"] = "http://[::1/x.png"
    url = {"redirect_to_data": "/data/upload/1/to-data.png", "nul_byte": "/data/upload/1/a\x00b.png",
           "bad_ipv6": "http://[::1/x.png", "redirect_to_bad_ipv6": "/data/upload/1/to-odd.png"}[kind]
    client = make_app(ls_settings(fake_ls))
    r = client.post("/labelstudio/predict", json=predict_body([ls_task(7, url)]))
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "forbidden_image_url" and "task 7" in r.json()["error"]["message"]


def test_url_errors_keep_the_connection_alive(tmp_path) -> None:
    """The 4xx answer keeps the HTTP/1.1 connection: the next request on the same socket is served."""
    import socket

    from seam.service.core.config import Settings
    from seam.service.main import create_app

    from tests.service.integrations.helpers import FakeLabelStudio
    from tests.support import serve_in_thread

    fake = FakeLabelStudio()
    fake.files["/data/upload/1/img0.png"] = encode(scene(20, 30))
    app = create_app(Settings(data_dir=tmp_path / "d", engine="fake", warmup=False, models_dir=tmp_path / "m"),
                     engine=FakeEngine())
    app.state.labelstudio_settings = ls_settings(fake)
    try:
        with serve_in_thread(app) as url, socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as s:
            s.settimeout(20)
            reader = s.makefile("rb")

            def ask(image: str) -> tuple[int, bytes]:
                body = json.dumps(predict_body([ls_task(3, image)])).encode()
                s.sendall(b"POST /labelstudio/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n" % len(body) + body)
                status = int(reader.readline().split()[1])
                headers = {}
                while (line := reader.readline().strip()):
                    k, _, v = line.decode().partition(":")
                    headers[k.lower()] = v.strip()
                assert headers.get("connection", "").lower() != "close"
                return status, reader.read(int(headers["content-length"]))

            status, text = ask("/data/upload/1/a\x00b.png")
            assert status == 422 and b"task 3" in text
            status, text = ask("/data/upload/1/img0.png")  # same socket
            assert status == 200, text
    finally:
        fake.close()


@pytest.mark.parametrize("missing", ["url", "api_key"])
def test_health_and_setup_are_down_while_images_cannot_be_fetched(make_app, fake_ls, missing: str) -> None:
    client = make_app(ls_settings(fake_ls, **{missing: None}))
    r = client.get("/labelstudio/health")
    assert r.status_code == 503 and r.json()["status"] == "DOWN"
    assert f"SEAM_LABELSTUDIO_{missing.upper()}" in r.json()["error"]
    r = client.post("/labelstudio/setup", json={"project": "1.1", "schema": CONFIG})
    assert r.status_code == 503 and f"SEAM_LABELSTUDIO_{missing.upper()}" in r.json()["error"]["message"]
    r = client.post("/labelstudio/predict", json=predict_body([ls_task(1, "/data/upload/1/img0.png")]))
    assert r.status_code == 503


def test_job_export_regions_carry_the_configs_label_values(make_app) -> None:
    client = make_app(None)
    buf = io.BytesIO()
    imgs = {"a": scene(23, 37, 0), "b": scene(29, 51, 1)}
    with zipfile.ZipFile(buf, "w") as zf:
        for iid, rgb in imgs.items():
            zf.writestr(f"{iid}.png", encode(rgb))
    r = client.post("/jobs", files={"archive": ("x.zip", buf.getvalue(), "application/zip")},
                    data={"outputs": "labelstudio", "image_url_prefix": "/data/local-files/?d=p/"})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert wait_done(client, job_id, 30)["state"] == "succeeded"
    by_get = client.get(f"/jobs/{job_id}/export/labelstudio", params={"label_config": CONFIG})
    by_post = client.post(f"/jobs/{job_id}/export/labelstudio", json={"label_config": CONFIG})
    assert by_get.status_code == 200 and by_get.json() == by_post.json(), by_post.text
    li = LabelInterface(CONFIG)
    method = FakeEngine().methods()[0]
    labels_seen = set()
    for task in by_get.json():
        iid = task["data"]["image"].rsplit("/", 1)[1].split(".")[0]
        seg = FakeEngine().segment(imgs[iid], None, method=method)
        h, w = imgs[iid].shape[:2]
        pred = task["predictions"][0]
        assert pred["model_version"] == f"seam-wsss:fake:{method}"
        assert li.validate_prediction(pred, return_errors=True) == []
        for reg in pred["result"]:
            assert reg["from_name"] == "tag" and reg["type"] == "brushlabels"
            label = reg["value"]["brushlabels"][0]
            c = {"Red thing": 0, "Blue thing": 2}[label]
            labels_seen.add(label)
            assert np.array_equal(decode_rle(reg["value"]["rle"]).reshape(h, w, 4)[:, :, 3] == 255, seg.label == c + 1)
    assert labels_seen == {"Red thing", "Blue thing"}
    # the config's polygon tag, asked for by region
    r = client.post(f"/jobs/{job_id}/export/labelstudio", json={"label_config": CONFIG, "region": "polygon"})
    assert {g["from_name"] for t in r.json() for g in t["predictions"][0]["result"]} == {"poly"}
    nomatch = ('<View><Image name="i" value="$image"/><BrushLabels name="b" toName="i"><Label value="Cat"/>'
               '</BrushLabels></View>')
    r = client.post(f"/jobs/{job_id}/export/labelstudio", json={"label_config": nomatch})
    assert r.status_code == 422 and r.json()["error"]["code"] == "no_matching_labels"
