"""Shared pytest fixtures."""
import os
from pathlib import Path

import pytest

from helpers import DEFAULTS


def shared_file(var: str, hint: str) -> Path:
    """The file the environment variable ``var`` names (CI points it into ../shared/data);
    skip with ``hint`` when unset, fail when it names no file."""
    value = os.environ.get(var)
    if not value:
        pytest.skip(f"{var} is not set: {hint}")
    path = Path(value)
    if not path.is_file():
        pytest.fail(f"{var}={value} is not a file")
    return path


@pytest.fixture
def esync_path() -> Path:
    """The real E-SyncVidStory test subset (set by CI to ../shared/data/esyncvidstory/test_subset.json)."""
    return shared_file("VN_ESYNCVIDSTORY", "point it at E-SyncVidStory test_subset.json "
                       "(../shared/data/esyncvidstory/) to run the real-data tests")


@pytest.fixture
def esync400_path() -> Path:
    """The first 400 official test records (set by CI to ../shared/data/esyncvidstory/test_first400.json)."""
    return shared_file("VN_ESYNCVIDSTORY_400", "point it at E-SyncVidStory test_first400.json "
                       "(../shared/data/esyncvidstory/) to check the loader on 400 official records")


@pytest.fixture
def real_video() -> Path:
    """A real video with real shots (set by CI to ../shared/data/videos/bigbuckbunny.mp4)."""
    return shared_file("VN_VIDEO", "point it at a real mp4 such as ../shared/data/videos/bigbuckbunny.mp4")


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory):
    """Six tiny synthetic ad videos (mp4 + annotations), generated once per test session."""
    from videonarrator.data.synthetic import SyntheticConfig, generate

    root = tmp_path_factory.mktemp("synthetic")
    cfg = SyntheticConfig(n_videos=6, seed=3, min_clips=3, max_clips=4, min_clip_s=2, max_clip_s=3)
    videos = generate(cfg, root, progress=False)
    return root, videos, cfg


@pytest.fixture(scope="session")
def tiny_prepared(tiny_synthetic, tmp_path_factory):
    """The tiny synthetic videos prepared into clips with 1-fps frames."""
    from videonarrator.prepare import prepare_dataset

    raw, annotated, _ = tiny_synthetic
    out = tmp_path_factory.mktemp("prepared") / "processed"
    videos, metrics = prepare_dataset(annotated, raw, out, DEFAULTS.prepare(), progress=False)
    return out, videos, metrics


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from threads, and on a busy 2-core machine two threads ran
    such tests 10x slower (threads waiting on each other)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
