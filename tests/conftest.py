import json
import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SEAM_SHARED", REPO.parent / "shared"))
KEYS_JSON = SHARED / "reference" / "official-state-dict-keys.json"

# a module whose tests are all slow says so in one line: `pytestmark = pytest.mark.slow`
_SLOW_MODULE = re.compile(r"^pytestmark = .*\bpytest\.mark\.slow\b", re.MULTILINE)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """The fast loop (exactly -m "not slow") does not even import the modules marked slow as a
    whole: deselecting their tests after collection would still pay for their imports and for
    generating their cases (schemathesis, the export tests: seconds). Any other -m expression
    collects everything and lets pytest select."""
    if " ".join((config.option.markexpr or "").split()) != "not slow":
        return None
    if collection_path.suffix != ".py" or not collection_path.name.startswith("test_"):
        return None
    return True if _SLOW_MODULE.search(collection_path.read_text(errors="replace")) else None


@pytest.fixture(scope="session")
def official_keys() -> dict:
    if not KEYS_JSON.is_file():
        pytest.fail(f"missing {KEYS_JSON}: the shared reference folder must sit beside the checkout")
    return json.loads(KEYS_JSON.read_text())


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    """A real S3-compatible server (SeaweedFS `weed server -s3`, testkit/s3server.py) for the
    whole session: a `testkit.s3server.S3Server` (endpoint, access_key, secret_key, region,
    env(), client(), create_bucket()). Started on first use (~5 s); tests that use it are slow."""
    from testkit.s3server import s3_server as running

    with running(tmp_path_factory.mktemp("s3server")) as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server) -> str:
    """A fresh, empty bucket on the session's S3 server (a unique name per test)."""
    return s3_server.create_bucket()
