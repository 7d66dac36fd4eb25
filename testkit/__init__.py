"""Synthetic checkpoints, photos, servers and fakes shared by tests/ and bench/.

Not installed and not product code: seam/, service/ and training/ never import it, and it
imports nothing from tests/ (tests/test_layers.py checks both), so a benchmark can use what
the tests build without importing a test module.
"""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
