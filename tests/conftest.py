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
