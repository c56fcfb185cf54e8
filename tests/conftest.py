"""Shared pytest fixtures."""
import os
from pathlib import Path

import pytest


@pytest.fixture
def esync_path() -> Path:
    """The real E-SyncVidStory test subset (set by CI to ../shared/data/esyncvidstory/test_subset.json)."""
    value = os.environ.get("VN_ESYNCVIDSTORY")
    if not value:
        pytest.skip("VN_ESYNCVIDSTORY is not set: point it at E-SyncVidStory test_subset.json "
                    "(../shared/data/esyncvidstory/) to run the real-data tests")
    path = Path(value)
    if not path.is_file():
        pytest.fail(f"VN_ESYNCVIDSTORY={value} is not a file")
    return path
