import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import open_clip
import open_clip.factory
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from helpers import DEFAULTS
from videonarrator import features
from videonarrator.features import (TINY_TOWER, TINY_TOWER_CONFIG, encode_frames,
                                    extract_features, features_path, load_frames, load_tower,
                                    load_video_features, prune_features, register_tiny_tower, save_tower)
from videonarrator.schema import Clip, Product, Video, save_dataset


@pytest.fixture(scope="module")
def tower():
    model, preprocess = load_tower(DEFAULTS.tower(seed=0))
    return model


def random_frames(n, h=64, w=64, seed=0):
    g = np.random.default_rng(seed)
    return torch.from_numpy(g.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8))


# -- the tower -------------------------------------------------------------------

def test_tiny_tower_registration_is_idempotent():
    register_tiny_tower()
    n_paths = len(open_clip.factory._MODEL_CONFIG_PATHS)
    n_models = len(open_clip.list_models())
    assert register_tiny_tower() == TINY_TOWER
    assert len(open_clip.factory._MODEL_CONFIG_PATHS) == n_paths
    assert len(open_clip.list_models()) == n_models
    assert open_clip.get_model_config(TINY_TOWER) == TINY_TOWER_CONFIG


def test_load_tower_is_seeded_eval_and_leaves_global_rng_alone(tower):
    assert not tower.training and tower.visual.output_tokens
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    same, _ = load_tower(DEFAULTS.tower(seed=0))
    assert torch.equal(torch.rand(3), expected)  # the caller's RNG stream is untouched
    other, _ = load_tower(DEFAULTS.tower(seed=1))
    w = "visual.conv1.weight"
    assert torch.equal(same.state_dict()[w], tower.state_dict()[w])
    assert not torch.equal(other.state_dict()[w], tower.state_dict()[w])


def test_encode_shapes_and_inputs(tower):
    pooled, tokens = encode_frames(tower, random_frames(5, 80, 96))  # resized + centre-cropped to 64
    assert pooled.shape == (5, 64) and pooled.dtype == torch.float32
    assert tokens.shape == (5, 64, 64) and tokens.dtype == torch.float32  # 8x8 patches, no CLS, width 64
    frames = random_frames(3, seed=1)
    p_np, t_np = encode_frames(tower, frames.numpy())
    p_pil, t_pil = encode_frames(tower, [Image.fromarray(f.numpy()) for f in frames])
    p_t, t_t = encode_frames(tower, frames)
    assert torch.equal(p_np, p_t) and torch.equal(t_pil, t_t) and torch.equal(p_pil, p_t)
    with pytest.raises(ValueError, match="uint8"):
        encode_frames(tower, frames.float())


def test_batched_equals_one_by_one(tower):
    frames = random_frames(7, seed=2)
    pooled, tokens = encode_frames(tower, frames, batch_size=3)
    for i in range(7):
        p, t = encode_frames(tower, frames[i:i + 1], batch_size=1)
        torch.testing.assert_close(p[0], pooled[i], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(t[0], tokens[i], atol=1e-5, rtol=1e-5)


def test_save_load_local_dir_round_trip_is_exact(tmp_path):
    cfg = DEFAULTS.tower(image_size=48, seed=3)  # a non-default size must survive the round trip
    model, _ = load_tower(cfg)
    save_tower(model, cfg, tmp_path / "tower")
    assert {p.name for p in (tmp_path / "tower").iterdir()} == {"open_clip_config.json",
                                                                 "open_clip_model.safetensors"}
    again, _ = load_tower(DEFAULTS.tower(name=f"local-dir:{tmp_path / 'tower'}", seed=99))
    frames = random_frames(4, seed=3)
    p0, t0 = encode_frames(model, frames)
    p1, t1 = encode_frames(again, frames)
    assert t0.shape == (4, 36, 64)  # 48 px / patch 8 = 6x6
    assert torch.equal(p0, p1) and torch.equal(t0, t1)
    assert features.tower_fingerprint(model) == features.tower_fingerprint(again)


def test_pretrained_file_is_loaded(tmp_path, tower):
    weights = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in tower.state_dict().items()}, str(weights))
    loaded, _ = load_tower(DEFAULTS.tower(pretrained=str(weights), seed=7))  # seed is irrelevant with weights
    frames = random_frames(2, seed=4)
    assert torch.equal(encode_frames(loaded, frames)[0], encode_frames(tower, frames)[0])


def test_tower_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="no/such/weights.safetensors"):
        load_tower(DEFAULTS.tower(pretrained=str(tmp_path / "no/such/weights.safetensors")))
    with pytest.raises(FileNotFoundError, match="open_clip_config.json"):
        load_tower(DEFAULTS.tower(name=f"local-dir:{tmp_path}"))
    with pytest.raises(ValueError, match="not an open_clip model name"):
        load_tower(DEFAULTS.tower(name="no-such-model"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE"):
        load_tower(DEFAULTS.tower(name="ViT-B-32", pretrained="openai"))
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE"):
        load_tower(DEFAULTS.tower(name="hf-hub:org/model"))


# -- frames ------------------------------------------------------------------------

def test_load_frames(tmp_path):
    arr = random_frames(1, 40, 50)[0].numpy()
    Image.fromarray(arr).save(tmp_path / "a.png")
    Image.fromarray(arr).save(tmp_path / "b.jpg", quality=95)
    out = load_frames([tmp_path / "a.png", tmp_path / "b.jpg"], 32)
    assert out.shape == (2, 32, 32, 3) and out.dtype == torch.uint8
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_frames([tmp_path / "a.png", tmp_path / "missing.png"], 32)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.png"):
        load_frames([tmp_path / "bad.png"], 32)


# -- the features store -------------------------------------------------------------

def write_frame(path: Path, seed: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(random_frames(1, 72, 64, seed=seed)[0].numpy()).save(path)
    return path.name


def make_video(root: Path, vid: str, frames_per_clip: list[int], seed: int) -> Video:
    clips, t = [], 0.0
    for i, n in enumerate(frames_per_clip):
        names = [f"{vid}/c{i}_{k}.png" for k in range(n)]
        for k, name in enumerate(names):
            write_frame(root / name, seed * 100 + i * 10 + k)
        clips.append(Clip(index=i, start=t, end=t + n, window=(1, 5), labels=["product_trial"], frames=names))
        t += n
    return Video(id=vid, product=Product(name="kettle"), clips=clips)


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "frames"
    return root, [make_video(root, "vidA", [3, 2], seed=1), make_video(root, "vidB", [4], seed=2)]


def test_extract_cache_and_reencode(tmp_path, dataset, tower):
    root, videos = dataset
    out = tmp_path / "feats"
    cfg = DEFAULTS.tower(seed=0)
    # batch 4 over 9 frames: batches span clip and video boundaries
    s = extract_features(videos, root, out, cfg, batch_size=4, progress=False)
    assert (s["videos"], s["encoded"], s["skipped"], s["frames"]) == (2, 2, 0, 9)
    assert s["frames_per_s"] > 0
    assert sorted(p.name for p in out.iterdir()) == ["vidA.safetensors", "vidB.safetensors"]

    feats = load_video_features(out, videos[0])
    assert [f["tokens"].shape for f in feats] == [(3, 64, 64), (2, 64, 64)]
    assert [f["pooled"].shape for f in feats] == [(3, 64), (2, 64)]
    # stored features equal a direct encoding of the same frames (tokens were stored in fp16)
    frames = load_frames([root / p for p in videos[0].clips[1].frames], 64)
    pooled, tokens = encode_frames(tower, frames)
    torch.testing.assert_close(feats[1]["pooled"], pooled, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(feats[1]["tokens"], tokens.half().float())
    with safe_open(str(features_path(out, "vidA")), framework="pt") as f:
        assert list(f.metadata()) == ["videonarrator"]          # one key: byte-stable (see below)
        meta = json.loads(f.metadata()["videonarrator"])
    assert meta["video_id"] == "vidA" and json.loads(meta["frames"]) == [3, 2] and len(meta["cache_key"]) == 64

    # second run: everything cached, files untouched
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    s = extract_features(videos, root, out, cfg, batch_size=4, progress=False)
    assert (s["encoded"], s["skipped"], s["frames"], s["frames_per_s"]) == (0, 2, 0, None)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before

    # new bytes in one of vidB's frames: only vidB is re-encoded
    write_frame(root / videos[1].clips[0].frames[2], seed=999)
    s = extract_features(videos, root, out, cfg, batch_size=4, progress=False)
    assert (s["encoded"], s["skipped"], s["frames"]) == (1, 1, 4)
    assert features_path(out, "vidA").stat().st_mtime_ns == before["vidA.safetensors"]
    assert features_path(out, "vidB").stat().st_mtime_ns != before["vidB.safetensors"]

    # another tower (other weights) invalidates every video
    s = extract_features(videos, root, out, DEFAULTS.tower(seed=1), batch_size=4, progress=False)
    assert (s["encoded"], s["skipped"]) == (2, 0)


def test_encoder_threads_give_decoders_their_cores_only_for_a_cheap_tower():
    from videonarrator.features import encoder_threads
    # default tiny tower on 2 cores: 64 frames decode in 32 ms of CPU, encode in 19 ms with 2 threads
    assert encoder_threads(0.032, 0.019, threads=2, workers=1, cores=2) == 1
    assert encoder_threads(0.032, 0.010, threads=8, workers=2, cores=8) == 6
    # ViT-B-32: decoding 70 ms against 5.4 s of encoding keeps every thread
    assert encoder_threads(0.070, 5.4, threads=2, workers=1, cores=2) == 2
    # the boundary: decode CPU at exactly a tenth of the encoder's CPU splits
    assert encoder_threads(1.0, 5.0, threads=2, workers=1, cores=2) == 1
    assert encoder_threads(0.99, 5.0, threads=2, workers=1, cores=2) == 2
    # no core to give (as many decoders as cores): unchanged
    assert encoder_threads(1.0, 0.1, threads=2, workers=2, cores=2) == 2


def test_thread_count_does_not_change_the_features(tower):
    """extract_features picks its torch threads from timings; the features must not depend on it."""
    frames, before = random_frames(8), torch.get_num_threads()
    try:
        outs = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            outs.append(encode_frames(tower, frames))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


def test_extract_features_restores_torch_threads(tmp_path, dataset, monkeypatch):
    root, videos = dataset
    before = torch.get_num_threads()
    monkeypatch.setattr(features, "available_cores", lambda: before + 1)
    monkeypatch.setattr(features, "encoder_threads", lambda *a: 1)   # as if decoding were costly
    s = extract_features(videos, root, tmp_path / "feats", DEFAULTS.tower(), batch_size=2, progress=False)
    assert (s["encode_threads"], s["decode_workers"]) == (1, 1)
    assert torch.get_num_threads() == before
    # and after a failure mid-run
    monkeypatch.setattr(features, "save_file", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        extract_features(videos, root, tmp_path / "feats2", DEFAULTS.tower(), batch_size=2, progress=False)
    assert torch.get_num_threads() == before


def test_interrupted_run_leaves_valid_files_and_resumes(tmp_path, dataset, monkeypatch):
    root, videos = dataset
    out = tmp_path / "feats"
    real_save, calls = features.save_file, []

    def crash_on_second_video(tensors, path, metadata=None):
        calls.append(path)
        real_save(tensors, path, metadata=metadata)  # the temp file is complete ...
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")  # ... but the run dies before the rename

    monkeypatch.setattr(features, "save_file", crash_on_second_video)
    with pytest.raises(KeyboardInterrupt):
        extract_features(videos, root, out, DEFAULTS.tower(), batch_size=2, progress=False)
    assert [p.name for p in out.iterdir()] == ["vidA.safetensors"]  # no vidB, no temp leftovers
    assert [f["tokens"].shape[0] for f in load_video_features(out, videos[0])] == [3, 2]

    monkeypatch.setattr(features, "save_file", real_save)
    s = extract_features(videos, root, out, DEFAULTS.tower(), batch_size=2, progress=False)
    assert (s["encoded"], s["skipped"], s["frames"]) == (1, 1, 4)
    assert sorted(p.name for p in out.iterdir()) == ["vidA.safetensors", "vidB.safetensors"]


def test_missing_frame_is_named(tmp_path, dataset):
    root, videos = dataset
    gone = root / videos[1].clips[0].frames[1]
    gone.unlink()
    with pytest.raises(FileNotFoundError, match=rf"vidB.*{gone.name}"):
        extract_features(videos, root, tmp_path / "feats", DEFAULTS.tower(), progress=False)


def test_load_video_features_errors(tmp_path, dataset):
    root, videos = dataset
    out = tmp_path / "feats"
    with pytest.raises(FileNotFoundError, match="vidA.*rerun the features stage"):
        load_video_features(out, videos[0])
    extract_features(videos[:1], root, out, DEFAULTS.tower(), progress=False)
    grown = make_video(root, "vidA", [3, 2, 1], seed=1)  # the dataset changed after extraction
    with pytest.raises(ValueError, match="vidA.*stale.*rerun the features stage"):
        load_video_features(out, grown)
    half = load_video_features(out, videos[0], dtype=None)
    assert half[0]["tokens"].dtype == torch.float16 and half[0]["pooled"].dtype == torch.float32


KILLED_CHILD = """
import sys, time
from pathlib import Path
from videonarrator import features
from videonarrator.schema import load_dataset

frames, out = Path(sys.argv[1]), Path(sys.argv[2])
videos, _ = load_dataset(frames / "dataset.json")
real_save, calls = features.save_file, []

def save_then_hang(tensors, path, metadata=None):
    calls.append(path)
    real_save(tensors, path, metadata=metadata)
    if len(calls) == 2:  # the second video: leave half a file in its temporary folder, wait to be killed
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: len(data) // 2])
        (frames / "kill-me").write_text(str(path))
        time.sleep(600)

features.save_file = save_then_hang
features.extract_features(videos, frames, out, features.TowerConfig(name=features.TINY_TOWER, pretrained=None,
                                                               image_size=None, seed=0), batch_size=2, progress=False)
"""


@pytest.mark.slow
def test_killed_extraction_resumes_without_reencoding(tmp_path):
    """SIGKILL in the middle of writing the second of four videos (in a real subprocess), then rerun:
    the finished video's file is not touched (same inode and mtime), the half-written temporary file
    is never read as features, only the three others are encoded, and prune_features removes the
    temporary folder the killed run left (it would otherwise sit in the DVC output)."""
    root, out = tmp_path / "frames", tmp_path / "feats"
    videos = [make_video(root, f"vid{k}", [3, 2], seed=k + 1) for k in range(4)]
    save_dataset(videos, root / "dataset.json")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    child = subprocess.Popen([sys.executable, "-c", KILLED_CHILD, str(root), str(out)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (root / "kill-me").exists():
            assert child.poll() is None, f"the child ended before it was killed:\n{child.stdout.read()}"
            assert time.monotonic() < deadline, "the child never reached the second video"
            time.sleep(0.1)
        partial = Path((root / "kill-me").read_text())
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL

    # what the kill left: the first video finished, the second's half file in a temporary folder
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["vid0.safetensors"]
    assert partial.is_file() and partial.parent.parent == out and partial.parent.name.endswith(".tmp")
    with pytest.raises(FileNotFoundError, match="vid1"):
        load_video_features(out, videos[1])                    # the half file is not features
    first = features_path(out, "vid0").stat()

    s = extract_features(videos, root, out, DEFAULTS.tower(), batch_size=2, progress=False)
    assert (s["encoded"], s["skipped"], s["frames"]) == (3, 1, 15)
    again = features_path(out, "vid0").stat()
    assert (again.st_ino, again.st_mtime_ns, again.st_size) == (first.st_ino, first.st_mtime_ns, first.st_size)
    for v in videos:
        assert [f["tokens"].shape[0] for f in load_video_features(out, v)] == [3, 2]
    # the features store matches an uninterrupted run, file for file: the kept file bit for bit; the
    # re-encoded ones to float rounding, since frames batch across videos and a frame's batch differs
    # between the runs (vid3's last frame is alone in the resumed run's last batch; on an Intel Xeon
    # that moved one pooled value by 5e-7, on an AMD EPYC nothing)
    clean = tmp_path / "clean"
    extract_features(videos, root, clean, DEFAULTS.tower(), batch_size=2, progress=False)
    for v in videos:
        a, b = load_video_features(out, v), load_video_features(clean, v)
        for x, y in zip(a, b):
            for k in ("tokens", "pooled"):
                if v.id == "vid0":
                    assert torch.equal(x[k], y[k])
                else:
                    torch.testing.assert_close(x[k], y[k], rtol=0, atol=1e-5)

    assert prune_features(out, [v.id for v in videos]) == 1    # the killed run's temporary folder
    assert sorted(p.name for p in out.iterdir()) == [f"vid{k}.safetensors" for k in range(4)]


def test_feature_files_are_byte_stable_and_v1_files_still_load(dataset, tmp_path):
    """Encoding the same frames twice writes the same bytes (DVC sees no change downstream);
    a file in the v1 layout (one metadata key per field) still loads."""
    from safetensors.torch import load_file, save_file

    root, videos = dataset
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        extract_features(videos, root, out, DEFAULTS.tower(seed=1), batch_size=4, progress=False)
    for v in videos:
        assert features_path(first, v.id).read_bytes() == features_path(second, v.id).read_bytes(), v.id
    path = features_path(first, videos[0].id)
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["videonarrator"])
    tensors = load_file(path)
    save_file(tensors, str(path), metadata={**meta, "format": "videonarrator-features-v1"})
    v1 = load_video_features(first, videos[0])
    v2 = load_video_features(second, videos[0])
    assert all(torch.equal(a["tokens"], b["tokens"]) for a, b in zip(v1, v2))
