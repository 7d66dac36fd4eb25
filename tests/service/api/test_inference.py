"""/segment, /cam, /cam/refined, /models, /healthz, /readyz, /metrics with the fake engine."""
from __future__ import annotations

import io
import threading

import numpy as np
import pytest
from PIL import Image
from seam.service.outputs.coco import coco_rle_decode

from seam.common.palette import voc_palette
from testkit.processes import wait_until
from tests.service.fakes import (
    FakeEngine,
    GatedEngine,
    assert_error,
    encode,
    jpeg_with_orientation,
    png_bytes,
    png_header_bomb,
    rgb_image,
    truncated_png,
)

API_KEY = "k" * 24


def post_image(client, path="/segment", data: bytes | None = None, headers=None, **fields):
    return client.post(path, files={"image": ("x.png", png_bytes() if data is None else data, "image/png")},
                       data=fields, headers=headers or {})


def expected_label(engine: FakeEngine, a: np.ndarray, **kw) -> np.ndarray:
    return engine.segment(a, **kw).label


# --- happy paths ------------------------------------------------------------------
def test_healthz_and_readyz(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["ready"] is True
    assert r.json()["checks"]["models"]["ok"]


def test_models(client):
    body = client.get("/models").json()
    assert body["classes"] == ["red", "green", "blue"]
    assert body["methods"] == ["pcm", "cam"] and body["default_method"] == "pcm"
    assert body["models"][0]["name"] == "fake"


def test_segment_png_matches_engine(client):
    a = rgb_image(48, 64)
    r = post_image(client, data=encode(a))
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    img = Image.open(io.BytesIO(r.content))
    assert img.mode == "P" and img.size == (64, 48)
    assert np.array_equal(np.asarray(img.getpalette()[:30]), voc_palette()[:10].reshape(-1))
    assert np.array_equal(np.asarray(img), expected_label(FakeEngine(), a))
    assert r.headers["x-seam-method"] == "pcm"
    assert r.headers["x-seam-classes"] == "red,green"


def test_segment_json_rle_and_scores(client):
    a = rgb_image(40, 50)
    r = post_image(client, data=encode(a), format="json", method="cam", threshold="0.4")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["width"], body["height"], body["method"], body["threshold"]) == (50, 40, "cam", 0.4)
    assert set(body["scores"]) == {"red", "green", "blue"}
    label = expected_label(FakeEngine(), a, method="cam", threshold=0.4)
    assert [c["name"] for c in body["classes"]] == ["red", "green"]
    for c in body["classes"]:
        mask = coco_rle_decode(c["rle"])
        assert np.array_equal(mask, label == c["label"])
        assert c["area"] == int(mask.sum())


def test_segment_labels_by_name_and_index(client):
    a = rgb_image()
    by_name = post_image(client, data=encode(a), labels="green")
    by_index = post_image(client, data=encode(a), labels="1")
    assert by_name.status_code == by_index.status_code == 200
    assert by_name.content == by_index.content
    lab = np.asarray(Image.open(io.BytesIO(by_name.content)))
    assert set(np.unique(lab)) <= {0, 2}


def test_segment_exif_orientation_applied(client):
    a = rgb_image(40, 64)
    r = post_image(client, data=jpeg_with_orientation(a, 6))
    assert r.status_code == 200
    assert Image.open(io.BytesIO(r.content)).size == (40, 64)  # rotated: width and height swapped


def test_cam_npz_refined_and_raw(client):
    a = rgb_image()
    raw = post_image(client, "/cam", data=encode(a))
    ref = post_image(client, "/cam/refined", data=encode(a))
    assert raw.status_code == ref.status_code == 200
    zr = np.load(io.BytesIO(raw.content), allow_pickle=False)
    zf = np.load(io.BytesIO(ref.content), allow_pickle=False)
    assert set(zr.files) == {"classes", "cams", "class_names"}
    assert zr["classes"].tolist() == [0, 1] and zr["class_names"].tolist() == ["red", "green"]
    exp = FakeEngine().cam(a, refined=False)
    assert np.allclose(zr["cams"], exp.cams) and zr["cams"].shape == (2, *a.shape[:2])
    assert not np.allclose(zr["cams"], zf["cams"])  # the refined maps differ (blurred)


def test_cam_png_tiles_one_per_class(client):
    r = post_image(client, "/cam", data=png_bytes(30, 20), format="png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size == (2 * 20, 30)
    r = post_image(client, "/cam", data=png_bytes(30, 20), format="png", labels="blue")
    assert Image.open(io.BytesIO(r.content)).size == (20, 30)


def test_cam_json_stats(client):
    r = post_image(client, "/cam/refined", format="json", threshold="0.5")
    assert r.status_code == 200
    body = r.json()
    assert body["refined"] is True and body["threshold"] == 0.5
    c = body["classes"][0]
    assert 0 <= c["min"] <= c["mean"] <= c["max"] <= 1 and 0 <= c["area"] <= 1
    assert Image.open(io.BytesIO(__import__("base64").b64decode(c["overlay_png"]))).size == (64, 48)


# --- hostile and bad input: a clear 4xx, and the server keeps serving --------------
@pytest.mark.parametrize("payload,status,code,contains", [
    (truncated_png(), 422, "invalid_image", "decode"),
    (b"%PDF-1.4 this is not an image at all" * 10, 415, "unsupported_media_type", "not a supported image"),
    (b"", 422, "invalid_image", "empty"),
    (png_header_bomb(50_000, 50_000), 413, "image_too_large", None),
    (png_header_bomb(7_000, 7_000), 413, "image_too_large", "7000x7000"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, 422, "invalid_image", None),
])
@pytest.mark.parametrize("path", ["/segment", "/cam", "/cam/refined"])
def test_bad_images(client, path, payload, status, code, contains):
    assert_error(post_image(client, path, data=payload), status, code, contains)
    assert post_image(client, path).status_code == 200  # still serving


def test_unknown_class_is_named(client):
    err = assert_error(post_image(client, labels="red,zebra"), 422, "unknown_class")
    assert "zebra" in err["message"]
    assert_error(post_image(client, "/cam", labels="99"), 422, "unknown_class", "99")


def test_missing_and_bad_fields(client):
    assert_error(client.post("/segment", data={"labels": "red"}), 422, "validation_error", "image")
    assert_error(post_image(client, format="gif"), 422, "validation_error", "format")
    assert_error(post_image(client, method="magic"), 422, "validation_error", "method")
    assert_error(post_image(client, threshold="1.5"), 422, "validation_error", "threshold")
    assert_error(post_image(client, threshold="abc"), 422, "validation_error", "threshold")
    assert_error(post_image(client, method="deeplab"), 422, "method_unavailable", "deeplab")
    assert_error(client.post("/segment", content=b"garbage", headers={"content-type": "text/plain"}), 422)


def test_upload_limit_streamed(make_client):
    c = make_client(max_upload_mb=0.05)
    big = np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)
    err = assert_error(post_image(c, data=encode(big)), 413, "too_large")
    assert "limit" in err["message"]

    def chunks():  # no Content-Length: the running byte count must stop it
        head = b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.png\"\r\n\r\n"
        yield head
        for _ in range(100):
            yield b"\x00" * 4096
    r = c.post("/segment", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"})
    assert_error(r, 413, "too_large")
    assert post_image(c).status_code == 200


def test_pixel_limit_setting(make_client):
    c = make_client(max_pixels=1000)
    assert_error(post_image(c, data=png_bytes(40, 40)), 413, "image_too_large", "1600")
    assert post_image(c, data=png_bytes(20, 20)).status_code == 200


def test_api_keys(make_client):
    c = make_client(api_keys=[API_KEY, "x" * 20])
    assert_error(post_image(c), 401, "unauthorized", "X-API-Key")
    assert_error(post_image(c, headers={"X-API-Key": "wrong" * 5}), 401, "unauthorized")
    assert_error(c.get("/models", headers={"X-API-Key": "k" * 23}), 401)
    assert post_image(c, headers={"X-API-Key": API_KEY}).status_code == 200
    assert c.get("/models", headers={"X-API-Key": "x" * 20}).status_code == 200
    assert_error(c.get("/jobs"), 401)
    assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200
    assert c.get("/metrics").status_code == 200


def test_metrics_can_require_key(make_client):
    c = make_client(api_keys=[API_KEY], metrics_public=False)
    assert c.get("/metrics").status_code == 401
    assert c.get("/metrics", headers={"X-API-Key": API_KEY}).status_code == 200


def test_cors(make_client):
    c = make_client(cors_origins=["https://app.example"])
    r = c.options("/segment", headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
    assert r.headers.get("access-control-allow-origin") == "https://app.example"
    r = c.options("/segment", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert r.headers.get("access-control-allow-origin") is None


def test_metrics_content(client):
    post_image(client)
    post_image(client, labels="zebra")
    text = client.get("/metrics").text
    assert 'seam_http_request_duration_seconds_count{method="POST",route="/segment",status="200"} 1.0' in text
    assert 'seam_http_errors_total{route="/segment",status="422"} 1.0' in text
    assert 'seam_images_labelled_total{endpoint="segment"} 1.0' in text
    assert 'seam_queue_depth{kind="chunks"}' in text and "seam_ready 1.0" in text
    assert "seam_inference_duration_seconds_bucket" in text


def test_metrics_route_of_requests_answered_before_routing(make_client):
    # 401s (API-key middleware) and 413s (body limit) never reach the router: they were all
    # counted under route="unmatched", the included routers' (/labelstudio, /cvat) included
    c = make_client(api_keys=[API_KEY], max_upload_mb=0.01)
    assert c.post("/labelstudio/predict", json={"tasks": []}).status_code == 401
    assert c.post("/labelstudio/predict", json={"tasks": []}, auth=("x", "not-the-key")).status_code == 401
    assert c.post("/cvat/detect", json={"image": ""}).status_code == 401
    assert c.post("/segment", files={"image": ("a.png", b"x" * 20_000)},
                  headers={"X-API-Key": API_KEY}).status_code == 413
    assert c.get("/nope", headers={"X-API-Key": API_KEY}).status_code == 404
    text = c.get("/metrics", headers={"X-API-Key": API_KEY}).text
    assert 'seam_http_errors_total{route="/labelstudio/predict",status="401"} 2.0' in text
    assert 'seam_http_errors_total{route="/cvat/detect",status="401"} 1.0' in text
    assert 'seam_http_errors_total{route="/segment",status="413"} 1.0' in text
    assert 'seam_http_errors_total{route="unmatched",status="404"} 1.0' in text  # no such route: still bounded


def test_not_found_and_method_errors(client):
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get("/segment"), 405, "method_not_allowed")


def _concurrently(c, n: int, engine: GatedEngine, status: int, count: int) -> list:
    """n requests at once; the engine is released once `count` of them were answered `status`."""
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(post_image(c))) for _ in range(n)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: sum(r.status_code == status for r in results) >= count, 20,
                   what=lambda: f"{count} answers {status}: {[r.status_code for r in results]}")
    finally:
        engine.gate.set()
        for t in threads:
            t.join()
    return results


def test_backpressure_429_with_retry_after(make_client):
    engine = GatedEngine()
    c = make_client(engine=engine, max_inflight=1, max_waiting=1, wait_timeout_s=5, warmup=False)
    # one in flight (held by the engine), one waiting for it, the other 3 refused at once
    results = _concurrently(c, 5, engine, 429, 3)
    codes = sorted(r.status_code for r in results)
    assert codes.count(200) >= 2 and 429 in codes, codes
    rejected = [r for r in results if r.status_code == 429]
    assert all(r.headers.get("retry-after") for r in rejected)
    assert rejected[0].json()["error"]["code"] == "too_many_requests"
    assert post_image(c).status_code == 200


def test_wait_timeout_503(make_client):
    engine = GatedEngine()
    c = make_client(engine=engine, max_inflight=1, max_waiting=5, wait_timeout_s=0.2, warmup=False)
    # one in flight (held by the engine); the 2 others give up waiting after 0.2 s
    results = _concurrently(c, 3, engine, 503, 2)
    codes = sorted(r.status_code for r in results)
    assert 200 in codes and 503 in codes, codes
    assert all(r.headers.get("retry-after") for r in results if r.status_code == 503)


def test_not_ready_without_models(make_settings):
    """The real engine over an empty model repository: liveness fine, readiness 503,
    inference 503 with a message; never a 500."""
    from fastapi.testclient import TestClient
    from seam.service.main import create_app

    app = create_app(make_settings(engine="onnx"))
    with TestClient(app, raise_server_exceptions=False) as c:
        app.state.holder.wait(30)
        assert c.get("/healthz").status_code == 200
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["ready"] is False and r.headers["retry-after"]
        assert r.json()["error"]["code"] == "not_ready"
        assert_error(post_image(c), 503, "not_ready")
        assert_error(c.get("/models"), 503, "not_ready")
