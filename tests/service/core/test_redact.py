"""Redaction replaces paths, never words: the model repository `models` (the default, relative)
must not turn the word "models" of a message into "<models>"."""
from __future__ import annotations

from pathlib import Path

from seam.service.core.redact import redact

from tests.service.fakes import (
    FakeEngine,
    assert_error,
    png_bytes,
)

ROOTS = [("models", "<models>"), ("/srv/app/models", "<models>"), ("/srv/seam", "<data>")]


def test_relative_root_is_replaced_as_a_path_only():
    assert redact("method 'rw' is not available with the loaded models; available: cam", ROOTS) == \
        "method 'rw' is not available with the loaded models; available: cam"
    assert redact("no model.onnx in models/seam-demo", ROOTS) == "no model.onnx in <models>/seam-demo"
    assert redact("see mymodels/x and models_old/y", ROOTS) == "see mymodels/x and models_old/y"


def test_absolute_root_is_replaced_at_path_boundaries_only():
    assert redact("open /srv/app/models/seam-demo/model.onnx", ROOTS) == "open <models>/seam-demo/model.onnx"
    assert redact("'/srv/seam' is full", ROOTS) == "'<data>' is full"
    # a longer sibling path is not the root: it falls to the generic absolute-path rule
    assert redact("open /srv/seam2/x", ROOTS) == "open <path>"


def test_unavailable_method_message_keeps_the_word_models(make_client):
    client = make_client(engine=FakeEngine(), models_dir=Path("models"))
    r = client.post("/segment", files={"image": ("a.png", png_bytes(), "image/png")}, data={"method": "deeplab"})
    err = assert_error(r, 422, "method_unavailable")
    assert "loaded models" in err["message"] and "<models>" not in err["message"], err


def test_redact():
    roots = [("/srv/seam/data", "<data>")]
    assert redact("Error 111 connecting to 10.0.0.5:6379. Connection refused.") == \
        "Error 111 connecting to <host> Connection refused."
    assert redact("open /srv/seam/data/jobs/x/labels.json", roots) == "open <data>/jobs/x/labels.json"
    assert redact("at <Foo object at 0x7f3a2b4c5d60>") == "at <Foo object at 0x…>"
    assert redact("redis://:secret@broker:6379/0 down") == "<url> down"
    assert redact("file /home/u/a.png and multipart/form-data") == "file <path> and multipart/form-data"
    assert redact("labels of 'img:3' unknown class 'cat'") == "labels of 'img:3' unknown class 'cat'"
