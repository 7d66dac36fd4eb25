import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SEAM_SHARED", REPO.parent / "shared"))
KEYS_JSON = SHARED / "reference" / "official-state-dict-keys.json"


@pytest.fixture(scope="session")
def official_keys() -> dict:
    if not KEYS_JSON.is_file():
        pytest.fail(f"missing {KEYS_JSON}: the shared reference folder must sit beside the checkout")
    return json.loads(KEYS_JSON.read_text())
