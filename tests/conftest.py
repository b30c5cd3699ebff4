"""Shared test fixtures: where the real data lives."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real corpora and results in ../shared/data; tests that need them skip without it."""
    if not SHARED_DATA.exists():
        pytest.skip(f"needs the shared data folder {SHARED_DATA} (absent in a bare clone)")
    return SHARED_DATA
