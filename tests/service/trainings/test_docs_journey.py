"""docs/trainings.md's journey, run as written: every shell block of the page, in order, in bash,
against a live `seam serve` (embedded mode: the trainings run in child processes) with a model
repository of its own, from a reader's folder holding `tagged/` (images + labels.csv, no masks).
tests/docs skips these blocks because its server serves the repository's models/."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from seam.modelrepo import versions
from testkit.processes import seam_serve_argv, service_env, start_server, stop_process
from testkit.versions import BG, publish_variant
from tests.docs.helpers import blocks, run_block
from tests.service.trainings.helpers import synth_set, tagged_folder
from tests.support import REPO

pytestmark = pytest.mark.slow
DOC = REPO / "docs" / "trainings.md"


def test_the_documented_journey_runs(tmp_path: Path) -> None:
    reader = tmp_path / "reader"
    reader.mkdir()
    tagged = tagged_folder(synth_set(tmp_path / "synth", n=12), reader / "tagged")
    for p in (tagged / "SegmentationClass").iterdir():  # the journey's user has tags only
        p.unlink()
    (tagged / "SegmentationClass").rmdir()
    bin_dir = reader / ".bin"
    bin_dir.mkdir()
    (bin_dir / "curl").write_text('#!/bin/sh\nexec /usr/bin/curl --fail-with-body "$@"\n')
    (bin_dir / "curl").chmod(0o755)
    repo = tmp_path / "models"
    publish_variant(repo, "demo", BG[1], tmp_path)
    env = service_env(SEAM_MODELS_DIR=str(repo), SEAM_DATA_DIR=str(tmp_path / "data"), SEAM_THREADS="1",
                      SEAM_MODELS_POLL_S="0.2")
    url, proc = start_server(seam_serve_argv, env, tmp_path / "serve.log", timeout=120)
    try:
        shell_env = service_env(PATH=f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}",
                                KEY="change-me-to-a-long-key-0001")
        doc_blocks = blocks(DOC)
        runnable = [b for b in doc_blocks if b.code.strip()]
        assert len(runnable) >= 6
        for b in runnable:
            t0 = time.monotonic()
            r = run_block(b, reader, shell_env, tmp_path / "state.sh", url.removeprefix("http://"), timeout=300)
            assert r.returncode == 0, (f"{b.where} failed ({r.returncode}):\n{b.code}\n--- stdout\n{r.stdout[-3000:]}"
                                       f"\n--- stderr\n{r.stderr[-3000:]}\n--- server\n"
                                       f"{(tmp_path / 'serve.log').read_text()[-3000:]}")
            print(f"{b.where}: {time.monotonic() - t0:.1f} s")
    finally:
        stop_process(proc)
    entry = versions.list_models(repo)["mything"]
    assert sorted(entry.versions) == [1, 2] and entry.promoted == 2
    assert (reader / "mask.png").is_file() and (reader / "pseudo_labels.zip").is_file()
