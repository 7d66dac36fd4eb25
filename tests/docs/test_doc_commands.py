"""The docs run: every shell block of README.md and docs/*.md is executed as a reader would paste
it, in order per document, against a live `seam serve` with the bundled model (models/seam-demo),
or carries `<!-- docs-test: skip reason="..." -->` saying what else it needs (a GPU, a trained
checkpoint, Docker, another service). An unmarked block that fails fails the test."""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.processes import seam_serve_argv, service_env, start_server, stop_process
from tests.docs.helpers import DOC_FILES, blocks, make_reader_files, run_block, tree_digest
from tests.support import REPO

RESULTS: dict[str, tuple[int, int, float]] = {}  # doc -> (run, skipped, seconds), printed at the end


def test_markers_are_well_formed_and_blocks_found():
    found = {doc.name: blocks(doc) for doc in DOC_FILES}  # raises on a marker without a reason
    assert found["README.md"] and found["service.md"] and found["cvat.md"]
    for doc_blocks in found.values():
        for b in doc_blocks:
            assert b.skip is None or len(b.skip) > 8, f"{b.where}: say why it is not run"


@pytest.fixture(scope="module")
def reader(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reader")
    make_reader_files(root)
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory, reader: Path) -> Iterator[str]:
    """`seam serve` with the bundled model, open (no API keys: the docs' `-H "X-API-Key: $KEY"`
    is then accepted as it is), directory jobs under the reader's folder."""
    tmp = tmp_path_factory.mktemp("docserver")
    env = service_env(SEAM_MODELS_DIR=str(REPO / "models"), SEAM_DATA_DIR=str(tmp / "data"),
                      SEAM_ALLOWED_ROOT=str(reader), SEAM_THREADS="1")
    url, proc = start_server(seam_serve_argv, env, tmp / "serve.log", timeout=120)
    yield url.removeprefix("http://")
    stop_process(proc)


@pytest.mark.slow
@pytest.mark.parametrize("doc", DOC_FILES, ids=[d.name for d in DOC_FILES])
def test_doc_blocks_run(doc: Path, reader: Path, server: str, tmp_path):
    doc_blocks = blocks(doc)
    env = service_env(PATH=f"{reader / '.bin'}:{Path(sys.executable).parent}:{os.environ['PATH']}",
                      KEY="change-me-to-a-long-key-0001")
    state = tmp_path / "shell-state.sh"
    before = tree_digest(REPO / "models", REPO / "docker")
    started, ran = time.monotonic(), 0
    for block in doc_blocks:
        if block.skip is not None:
            continue
        r = run_block(block, reader, env, state, server)
        ran += 1
        assert r.returncode == 0, (f"{block.where} failed ({r.returncode}):\n{block.code}\n--- stdout\n"
                                   f"{r.stdout[-3000:]}\n--- stderr\n{r.stderr[-3000:]}")
    RESULTS[doc.name] = (ran, len(doc_blocks) - ran, time.monotonic() - started)
    assert tree_digest(REPO / "models", REPO / "docker") == before, f"{doc.name}: a block changed tracked files"
    print(f"\n{doc.name}: {ran} blocks run, {len(doc_blocks) - ran} marked skip, "
          f"{RESULTS[doc.name][2]:.1f} s")
