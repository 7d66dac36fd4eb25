"""`seam models list|publish|promote|rollback` and `seam export --version-of` on a repository in a
temporary folder."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from seam.cli import app
from seam.modelrepo import versions
from testkit.versions import demo_variant

ENV = {"COLUMNS": "120", "NO_COLOR": "1"}


def _run(*args: str):
    return CliRunner().invoke(app, list(args), env=ENV)


def test_publish_list_promote_rollback(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    a, b = demo_variant(tmp_path / "a", 0.1), demo_variant(tmp_path / "b", 0.5)
    assert _run("models", "publish", str(a), "--name", "shapes", "--models-dir", str(repo)).exit_code == 0
    r = _run("models", "publish", str(b), "--name", "shapes", "--models-dir", str(repo))
    assert r.exit_code == 0 and "shapes:2" in r.output
    listed = json.loads(_run("models", "list", "--json", "--models-dir", str(repo)).output)
    assert listed[0]["name"] == "shapes" and listed[0]["promoted"] == 1
    assert [v["version"] for v in listed[0]["versions"]] == [1, 2]
    assert _run("models", "promote", "shapes:2", "--models-dir", str(repo)).exit_code == 0
    assert versions.resolve(repo, "shapes").version == 2
    r = _run("models", "rollback", "shapes", "--models-dir", str(repo))
    assert r.exit_code == 0 and versions.resolve(repo, "shapes").version == 1
    r = _run("models", "rollback", "shapes", "--models-dir", str(repo))
    assert r.exit_code == 1 and "no earlier promoted version" in r.output
    r = _run("models", "promote", "shapes:9", "--models-dir", str(repo))
    assert r.exit_code == 1 and "no version 9" in r.output
    text = _run("models", "list", "--models-dir", str(repo)).output
    assert "* 1" in text and "disc" in text


@pytest.mark.slow
def test_export_publishes_a_version(tmp_path: Path) -> None:
    from testkit.checkpoints import CLASSES, make_checkpoint

    ckpt = tmp_path / "seam.pth"
    make_checkpoint(ckpt, sidecar={"class_names": CLASSES, "backbone": "resnet38_small"})
    repo = tmp_path / "models"
    r = _run("export", "--checkpoint", str(ckpt), "--version-of", "mine", "--models-dir", str(repo))
    assert r.exit_code == 0 and "mine:1" in r.output, r.output
    assert str(repo / "mine" / "1") in r.output.replace("\n", ""), r.output  # not the deleted scratch dir
    entry = versions.list_models(repo)["mine"]
    assert list(entry.versions) == [1] and entry.promoted == 1
    assert all(versions.verify_version(v) for v in entry.versions.values())
    assert [p.name for p in repo.iterdir()] == ["mine"]  # no export scratch left behind
