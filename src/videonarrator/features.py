"""Frame features: the open_clip vision tower, batched encoding and a cached store.

Frames (1 fps) go through a CLIP ViT; the model downstream feeds the
patch tokens to a Q-Former as ``encoder_hidden_states`` and the pooled
embeddings to frame compression.  Both are computed once here and cached on
disk, so training, ablations and generation share them.

The tower
    :class:`TowerConfig` names an open_clip model (``"vn-tiny-vit"``,
    ``"ViT-B-32"``, ``"ViT-L-14"`` or ``"local-dir:/path"``).  No package ships
    real CLIP weights here, so with ``pretrained=None`` the tower is
    random-init from ``seed`` (deterministic); real weights are a local file
    (``pretrained="/path/open_clip_model.safetensors"``) or a ``local-dir:``
    folder written by :func:`save_tower` or by open_clip itself.  Nothing is
    ever downloaded unless the user explicitly names a hub tag.

What is encoded
    ``pooled``  (N, D_embed) float32: the projected CLS embedding (CLIP space).
    ``tokens``  (N, P, W) float32: the patch tokens after the final LayerNorm,
                *excluding* the CLS token, in raster order, so P = (S / patch)^2
                (64 for the tiny tower, 256 for ViT-L-14 at 224 px).  CLS is
                left out because ``pooled`` already carries it and a fixed
                patch grid lets the model add a per-patch position embedding.

The store (one file per video)
    ``out_dir/<video_id>.safetensors`` holds, for clip i,
    ``clip{i}.tokens`` (F_i, P, W) float16 and ``clip{i}.pooled`` (F_i, D) float32,
    and metadata, one sorted JSON string under the key ``videonarrator`` (so a
    rewrite of the same tensors gives the same bytes): ``format``, ``video_id``,
    ``n_clips``, ``frames`` (JSON list of F_i), ``cache_key`` and ``tower`` (JSON of the TowerConfig).
    The cache key is a sha256 over every frame file's bytes, the clip frame
    counts, the tower's architecture and preprocessing, and a hash of the vision
    tower's weights, so a changed frame, tower or weight file re-encodes exactly
    the videos it affects.  Files are written atomically (io.atomic_path).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from safetensors import SafetensorError, safe_open
from open_clip.factory import parse_model_name
from open_clip.pretrained import is_pretrained_cfg
from open_clip.transform import PreprocessCfg, image_transform_v2
from safetensors.torch import save_file

from .io import atomic_path, atomic_write_text, hub_offline
from .progress import progress_bar
from .schema import Video

FEATURES_FORMAT = "videonarrator-features-v2"
# v1 stored each metadata field as its own safetensors key, and safetensors writes those keys in a
# different order on each write: the same tensors gave other bytes, and DVC retrained everything
# downstream.  v2 stores one sorted JSON string under META_KEY.  v1 files are still read.
READABLE_FORMATS = ("videonarrator-features-v1", FEATURES_FORMAT)
META_KEY = "videonarrator"
TOKEN_DTYPE = torch.float16  # tokens dominate the store; fp16 halves it (values are LayerNorm'd)

# -- the tiny tower ------------------------------------------------------------

TINY_TOWER = "vn-tiny-vit"
# Vision: 64 px, patch 8 (8x8 = 64 patches), width 64, 2 layers, 2 heads (head_width 32).
# Text: the smallest tower open_clip builds (1 layer, width 64, 2 heads); vocab and
# context stay at CLIP's 49408 / 77 so open_clip's standard tokenizer still works with it.
TINY_TOWER_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "patch_size": 8, "width": 64, "layers": 2, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}


def register_model_config(name: str, model_cfg: dict[str, Any]) -> None:
    """Make ``name`` an open_clip model name (idempotent).

    open_clip's public hook is ``add_model_config(json file)``; the file goes to a
    per-user folder in the temp dir, written atomically so parallel workers agree.
    """
    if name in open_clip.list_models():
        if open_clip.get_model_config(name) != model_cfg:
            raise ValueError(f"open_clip model {name!r} is already registered with a different config")
        return
    folder = Path(tempfile.gettempdir()) / f"videonarrator-open_clip-{os.getuid()}"
    path = folder / f"{name}.json"
    atomic_write_text(path, json.dumps(model_cfg, indent=1, sort_keys=True))
    open_clip.add_model_config(path)


def register_tiny_tower() -> str:
    register_model_config(TINY_TOWER, TINY_TOWER_CONFIG)
    return TINY_TOWER


# -- loading and saving a tower -------------------------------------------------

@dataclass
class TowerConfig:
    """Built from params' ``features`` section by :class:`config.Settings` (the one source of its values)."""
    name: str                        # open_clip model name, or "local-dir:/path"
    pretrained: str | None           # None (seeded random init) or a local weights file; a hub tag only if named
    image_size: int | None           # None = the model's own input size
    seed: int                        # init seed when no weights are loaded
    device: str = "cpu"              # where the tower runs ("cuda" for ViT-L-14); not part of the cache key


def _check_sources(cfg: TowerConfig) -> None:
    """Fail before open_clip does anything slow (or reaches for the network)."""
    schema, ident = parse_model_name(cfg.name)
    if schema and cfg.pretrained is not None:
        raise ValueError(f"tower {cfg.name!r} carries its own weights; set pretrained to null "
                         f"(got pretrained={cfg.pretrained!r})")
    if schema == "local-dir":
        folder = Path(ident)
        if not (folder / "open_clip_config.json").is_file():
            raise FileNotFoundError(
                f"tower {cfg.name!r}: {folder / 'open_clip_config.json'} does not exist; "
                f"write the folder with features.save_tower or point to an open_clip model folder")
        return
    if schema == "hf-hub":
        if hub_offline():
            raise RuntimeError(f"tower {cfg.name!r} is a hub model but HF_HUB_OFFLINE=1; "
                               f"download it once into a folder and use 'local-dir:<folder>'")
        return
    if cfg.name == TINY_TOWER:
        register_tiny_tower()
    if open_clip.get_model_config(cfg.name) is None:
        raise ValueError(f"tower {cfg.name!r} is not an open_clip model name "
                         f"(e.g. {TINY_TOWER!r}, 'ViT-B-32', 'ViT-L-14', or 'local-dir:/path')")
    if cfg.pretrained is None:
        return
    if Path(cfg.pretrained).is_file():
        return
    if is_pretrained_cfg(cfg.name, cfg.pretrained) and not _looks_like_path(cfg.pretrained):
        if hub_offline():
            raise RuntimeError(
                f"tower {cfg.name!r}: pretrained={cfg.pretrained!r} is a hub tag (a download) but "
                f"HF_HUB_OFFLINE=1; pass the path of a local weights file instead")
        return
    raise FileNotFoundError(
        f"tower {cfg.name!r}: pretrained weights file {cfg.pretrained} does not exist "
        f"(set pretrained to an existing .safetensors/.bin/.pt file, or to null for a random-init tower)")


def _looks_like_path(s: str) -> bool:
    return os.sep in s or "/" in s or Path(s).suffix in (".safetensors", ".bin", ".pt", ".pth", ".npz")


def load_tower(cfg: TowerConfig) -> tuple[torch.nn.Module, Any]:
    """Build the open_clip model in eval mode with ``visual.output_tokens = True``.

    Returns (model, preprocess): ``preprocess`` is open_clip's PIL -> tensor eval
    transform, for callers with single PIL images; :func:`encode_frames` does the
    same resize/normalise on whole batches with torch ops.
    """
    _check_sources(cfg)
    # Random init draws from torch's global RNG: seed it without disturbing the caller's stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = open_clip.create_model(cfg.name, pretrained=cfg.pretrained,
                                       force_image_size=cfg.image_size, device=cfg.device)
    model.eval()
    model.visual.output_tokens = True
    model_cfg = open_clip.get_model_config(cfg.name)
    if cfg.image_size is not None:
        model_cfg["vision_cfg"]["image_size"] = cfg.image_size
    model.vn_model_cfg = model_cfg  # the architecture, for save_tower and the cache key
    preprocess = image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)
    return model, preprocess


def save_tower(model: torch.nn.Module, cfg: TowerConfig, out_dir: str | Path) -> Path:
    """Write ``model`` in open_clip's ``local-dir:`` layout (config json + safetensors).

    ``load_tower(replace(cfg, name=f"local-dir:{out_dir}", pretrained=None))`` then gives the same model.
    """
    out_dir = Path(out_dir)
    model_cfg = getattr(model, "vn_model_cfg", None)
    if model_cfg is None:
        _check_sources(cfg)
        model_cfg = open_clip.get_model_config(cfg.name)
        if cfg.image_size is not None:
            model_cfg["vision_cfg"]["image_size"] = cfg.image_size
    pp = model.visual.preprocess_cfg
    doc = {
        "model_cfg": model_cfg,
        "preprocess_cfg": {"mean": list(pp["mean"]), "std": list(pp["std"]),
                           "interpolation": pp["interpolation"], "resize_mode": pp["resize_mode"]},
        "videonarrator": {"source": asdict(cfg)},  # provenance only; open_clip ignores it
    }
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        (tmp / "open_clip_config.json").write_text(json.dumps(doc, indent=2), encoding="utf-8")
        save_file(state, str(tmp / "open_clip_model.safetensors"))
    return out_dir


def tower_fingerprint(model: torch.nn.Module) -> str:
    """sha256 over what determines the features: architecture, preprocessing, vision weights."""
    h = hashlib.sha256()
    pp = model.visual.preprocess_cfg
    arch = {"vision_cfg": getattr(model, "vn_model_cfg", {}).get("vision_cfg"),
            "embed_dim": getattr(model, "vn_model_cfg", {}).get("embed_dim"),
            "preprocess": {k: list(v) if isinstance(v, tuple) else v for k, v in pp.items()}}
    h.update(json.dumps(arch, sort_keys=True).encode())
    for key, t in sorted(model.visual.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# -- encoding ------------------------------------------------------------------

def _image_size(model: torch.nn.Module) -> int:
    size = model.visual.preprocess_cfg["size"]
    size = size if isinstance(size, int) else size[0]
    return int(size)


def _as_uint8_batch(frames: Any, size: int) -> torch.Tensor:
    """frames -> uint8 tensor (N, H, W, 3)."""
    if isinstance(frames, (list, tuple)) and not frames:
        return torch.zeros(0, size, size, 3, dtype=torch.uint8)
    if isinstance(frames, (list, tuple)) and all(isinstance(f, Image.Image) for f in frames):
        # PIL images may differ in size: fit each to size x size (the same shortest-side
        # resize + centre crop as the batched path) so they stack.
        return torch.from_numpy(np.stack([_fit(im, size) for im in frames]))
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(frames)
    if not isinstance(frames, torch.Tensor) or frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError("frames must be a uint8 tensor/array of shape (N, H, W, 3) or a list of PIL images; "
                         f"got {type(frames).__name__} {getattr(frames, 'dtype', '')} {tuple(getattr(frames, 'shape', ()))}")
    return frames


def preprocess_batch(frames_u8: torch.Tensor, size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> normalised float (N, 3, size, size), all in torch.

    Same recipe as open_clip's eval transform: bicubic resize of the shortest side to
    ``size`` (antialiased), centre crop, scale to [0, 1], normalise.  Frames that are
    already size x size are not resampled (load_frames delivers them that way).
    """
    x = frames_u8.permute(0, 3, 1, 2).float()  # (N, 3, H, W) in [0, 255]
    h, w = x.shape[-2:]
    if (h, w) != (size, size):
        scale = size / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
        top, left = (nh - size) // 2, (nw - size) // 2
        x = x[:, :, top:top + size, left:left + size].clamp(0, 255)
    x = x / 255.0
    m = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s


@torch.inference_mode()
def encode_frames(model: torch.nn.Module, frames: Any, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode frames with the vision tower.

    frames: uint8 (N, H, W, 3) tensor/array or a list of PIL images.
    Returns pooled (N, D_embed) float32 and tokens (N, P, W) float32 (patch tokens, no CLS), on CPU.
    """
    size = _image_size(model)
    frames = _as_uint8_batch(frames, size)
    visual = model.visual
    param = next(visual.parameters())
    pp = visual.preprocess_cfg
    pooled, tokens = [], []
    for i in range(0, frames.shape[0], batch_size):
        x = preprocess_batch(frames[i:i + batch_size], size, pp["mean"], pp["std"])  # (B, 3, S, S)
        p, t = visual(x.to(device=param.device, dtype=param.dtype))               # (B, D), (B, P, W)
        pooled.append(p.float().cpu())
        tokens.append(t.float().cpu())
    if not pooled:  # N == 0: empty outputs with the right trailing shapes
        patches, width = tower_shape(model)
        d = visual.proj.shape[1] if visual.proj is not None else width
        return torch.zeros(0, d), torch.zeros(0, patches, width)
    return torch.cat(pooled), torch.cat(tokens)


# -- loading frames ------------------------------------------------------------

def _fit(im: Image.Image, size: int) -> np.ndarray:
    """PIL image -> uint8 (size, size, 3): shortest side to size (bicubic), centre crop."""
    im = im.convert("RGB")
    if im.size != (size, size):
        im = ImageOps.fit(im, (size, size), method=Image.Resampling.BICUBIC)
    return np.asarray(im, dtype=np.uint8)


def _decode_frame(path: Path, size: int) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return _fit(im, size)
    except FileNotFoundError:
        raise FileNotFoundError(f"frame file {path} does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise ValueError(f"frame file {path} is not a readable image ({type(err).__name__}: {err})") from None


def load_frames(paths: Sequence[str | Path], image_size: int, workers: int = 2) -> torch.Tensor:
    """Decode JPEG/PNG files in a thread pool -> uint8 tensor (N, S, S, 3)."""
    if not paths:
        return torch.zeros(0, image_size, image_size, 3, dtype=torch.uint8)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        arrays = list(pool.map(lambda p: _decode_frame(Path(p), image_size), paths))
    return torch.from_numpy(np.stack(arrays))


# -- the features store --------------------------------------------------------

def features_path(out_dir: str | Path, video_id: str) -> Path:
    return Path(out_dir) / f"{video_id}.safetensors"


def prune_features(out_dir: str | Path, keep_ids: Iterable[str]) -> int:
    """Delete feature files of videos no longer in the dataset, and the temporary
    folders a killed run left behind (``.<id>.safetensors.*.tmp``, see
    :func:`io.atomic_path`; never read as features, but they would sit in the
    DVC output); return how many."""
    import shutil

    keep = {features_path(out_dir, i).name for i in keep_ids}
    stale = [p for p in Path(out_dir).glob("*.safetensors") if p.name not in keep]
    for p in stale:
        p.unlink()
    leftovers = [p for p in Path(out_dir).glob(".*.safetensors.*.tmp") if p.is_dir()]
    for p in leftovers:
        shutil.rmtree(p)
    return len(stale) + len(leftovers)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _frame_paths(video: Video, frames_root: Path) -> list[list[Path]]:
    out = []
    for clip in video.clips:
        if not clip.frames:
            raise ValueError(f"video {video.id!r} clip {clip.index} lists no frames; "
                             f"every clip needs at least one frame file for the features stage")
        out.append([frames_root / f for f in clip.frames])
    return out


def _video_key(video: Video, paths: list[list[Path]], tower_fp: str, pool: ThreadPoolExecutor) -> str:
    flat = [p for clip in paths for p in clip]
    missing = [p for p in flat if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"video {video.id!r}: frame file {missing[0]} does not exist"
                                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                                + "; regenerate or extract the frames first")
    h = hashlib.sha256()
    h.update(f"{FEATURES_FORMAT}|{TOKEN_DTYPE}|{tower_fp}|{[len(c) for c in paths]}".encode())
    for digest in pool.map(_file_sha256, flat):
        h.update(digest.encode())
    return h.hexdigest()


def _read_metadata(path: Path) -> dict[str, str] | None:
    """A feature file's metadata (v2: the JSON under META_KEY; v1: the flat keys); None if unreadable."""
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
        return json.loads(raw[META_KEY]) if META_KEY in raw else raw
    except (SafetensorError, OSError, ValueError):
        return None


def _write_video(path: Path, video: Video, key: str, tower_cfg: TowerConfig,
                 pooled: torch.Tensor, tokens: torch.Tensor, counts: list[int]) -> None:
    """pooled (sum F_i, D), tokens (sum F_i, P, W) of one video -> one safetensors file."""
    tensors: dict[str, torch.Tensor] = {}
    for i, (p, t) in enumerate(zip(pooled.split(counts), tokens.split(counts))):
        tensors[f"clip{i}.pooled"] = p.float().contiguous()
        tensors[f"clip{i}.tokens"] = t.to(TOKEN_DTYPE).contiguous()
    meta = {"format": FEATURES_FORMAT, "video_id": video.id, "n_clips": str(len(counts)),
            "frames": json.dumps(counts), "cache_key": key, "tower": json.dumps(asdict(tower_cfg))}
    with atomic_path(path) as tmp:   # one key: the same tensors and metadata give the same bytes
        save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(meta, sort_keys=True)})


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def encoder_threads(decode_s: float, encode_s: float, threads: int, workers: int, cores: int) -> int:
    """Torch threads for encoding, from one batch's timings (decode CPU seconds summed over the
    frames; encode wall seconds with ``threads`` threads).

    Decoding runs in ``workers`` threads beside the encoder.  When it costs at least a tenth of
    the encoder's CPU time (a small tower: the default's decode and encode are both ~0.5 ms a
    frame), the encoder leaves the decoders their cores: torch's threads wait for each other, so
    one descheduled by a decoder stalls them all (measured on 2 cores: 1,710 frames/s with one
    thread beside one decoder, 1,199 with two).  A big tower keeps every thread: its decoding is
    ~1 % of the work (ViT-B-32 with one thread instead of two: x1.6 slower).
    The features do not depend on the choice: one and two threads give bitwise equal tensors
    (tested), so a timing-based choice keeps the encoded values identical.
    """
    if cores > workers and 10 * decode_s >= encode_s * threads:
        return max(1, cores - workers)
    return threads


def extract_features(videos: Iterable[Video], frames_root: str | Path, out_dir: str | Path,
                     tower_cfg: TowerConfig, batch_size: int = 64, progress: bool = True,
                     workers: int | None = None) -> dict[str, Any]:
    """Encode every video's frames into ``out_dir/<video_id>.safetensors`` (see module doc).

    Videos whose file exists with the same cache key are skipped.  Frames are
    batched across clips and videos; the next batch is decoded in a thread pool
    (``workers`` threads; default: a quarter of the cores, at least one) while
    the current one is encoded, with the torch threads set by
    :func:`encoder_threads` after the second batch and restored at the end.
    Each finished video is written atomically, so an interrupted run leaves
    only valid files and a rerun resumes.
    """
    t0 = time.perf_counter()
    frames_root, out_dir = Path(frames_root), Path(out_dir)
    videos = list(videos)
    ids = [v.id for v in videos]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"video id {dup!r} appears twice; features are stored per video id")
    model, _ = load_tower(tower_cfg)
    size = _image_size(model)
    tower_fp = tower_fingerprint(model)

    cores = available_cores()
    workers = max(1, cores // 4 if workers is None else workers)
    threads = torch.get_num_threads()
    with ThreadPoolExecutor(workers) as pool:
        # 1) which videos need encoding (hash frame bytes; no decoding)
        todo: list[tuple[Video, list[list[Path]], str]] = []
        for video in videos:
            paths = _frame_paths(video, frames_root)
            key = _video_key(video, paths, tower_fp, pool)
            meta = _read_metadata(features_path(out_dir, video.id))
            if meta is None or meta.get("cache_key") != key:
                todo.append((video, paths, key))

        # 2) one flat frame stream over all videos to encode: (video number, path)
        stream = [(n, p) for n, (_, paths, _) in enumerate(todo) for clip in paths for p in clip]
        batches = [stream[i:i + batch_size] for i in range(0, len(stream), batch_size)]

        def submit(batch: list[tuple[int, Path]]) -> list[Future]:
            return [pool.submit(_timed_decode, p, size) for _, p in batch]

        bar = progress_bar(total=len(stream), desc="features", unit="frame", disable=not progress)
        done_pooled: list[torch.Tensor] = []   # per-frame outputs of the video being filled
        done_tokens: list[torch.Tensor] = []
        current, filled = 0, 0
        pending = submit(batches[0]) if batches else []
        try:
            for b, batch in enumerate(batches):
                decoded = [f.result() for f in pending]
                frames = torch.from_numpy(np.stack([a for a, _ in decoded]))   # (B, S, S, 3)
                pending = submit(batches[b + 1]) if b + 1 < len(batches) else []  # decode ahead
                t = time.perf_counter()
                pooled, tokens = encode_frames(model, frames, batch_size=batch_size)
                if b == 1:   # the first batch pays one-off costs; decide on the second
                    torch.set_num_threads(encoder_threads(sum(s for _, s in decoded), time.perf_counter() - t,
                                                          threads, workers, cores))
                done_pooled.append(pooled)
                done_tokens.append(tokens)
                filled += len(batch)
                bar.update(len(batch))
                # write every video whose frames are now all encoded
                while current < len(todo):
                    video, paths, key = todo[current]
                    counts = [len(c) for c in paths]
                    n = sum(counts)
                    if filled < n:
                        break
                    all_p, all_t = torch.cat(done_pooled), torch.cat(done_tokens)
                    _write_video(features_path(out_dir, video.id), video, key, tower_cfg,
                                 all_p[:n], all_t[:n], counts)
                    done_pooled, done_tokens = [all_p[n:]], [all_t[n:]]
                    filled -= n
                    current += 1
        finally:
            encode_threads = torch.get_num_threads()
            torch.set_num_threads(threads)
        bar.close()

    seconds = time.perf_counter() - t0
    return {"videos": len(videos), "encoded": len(todo), "skipped": len(videos) - len(todo),
            "frames": len(stream), "seconds": round(seconds, 3), "decode_workers": workers,
            "encode_threads": encode_threads,
            # None when nothing was encoded (all cached): a rate of 0 would read as "stalled"
            "frames_per_s": round(len(stream) / seconds, 2) if stream and seconds > 0 else None}


def _timed_decode(path: Path, size: int) -> tuple[np.ndarray, float]:
    t = time.thread_time()
    return _decode_frame(path, size), time.thread_time() - t


def tower_shape(model: torch.nn.Module) -> tuple[int, int]:
    """(P, W): patch tokens per frame and their width that ``model``'s :func:`encode_frames` returns."""
    visual = model.visual
    return int(visual.grid_size[0] * visual.grid_size[1]), int(visual.ln_post.normalized_shape[0])


def stored_shape(out_dir: str | Path, video: Video) -> tuple[int, int]:
    """(P, W): patch tokens per frame and their width in ``video``'s feature file.

    The model's Q-Former takes exactly this shape, and no params key holds it
    (it follows from the tower and its image size), so a model config reads it here.
    """
    path = features_path(out_dir, video.id)
    if not path.is_file():
        raise FileNotFoundError(f"video {video.id!r}: features file {path} does not exist; "
                                f"rerun the features stage (dvc repro features)")
    with safe_open(str(path), framework="pt") as f:
        shape = f.get_slice("clip0.tokens").get_shape()
    return int(shape[1]), int(shape[2])


def load_video_features(out_dir: str | Path, video: Video,
                        dtype: torch.dtype | None = torch.float32) -> list[dict[str, torch.Tensor]]:
    """Per clip {"tokens": (F, P, W), "pooled": (F, D)} for ``video`` (tokens cast to ``dtype``; None keeps fp16)."""
    path = features_path(out_dir, video.id)
    fix = "rerun the features stage (dvc repro features)"
    if not path.is_file():
        raise FileNotFoundError(f"video {video.id!r}: features file {path} does not exist; {fix}")
    meta = _read_metadata(path)
    if meta is None or meta.get("format") not in READABLE_FORMATS:
        raise ValueError(f"video {video.id!r}: {path} is not a {FEATURES_FORMAT} file; {fix}")
    counts = json.loads(meta["frames"])
    expected = [len(c.frames) for c in video.clips]
    if counts != expected:
        raise ValueError(f"video {video.id!r}: features file {path} is stale: it holds {len(counts)} clips "
                         f"with {counts} frames, the dataset has {len(expected)} clips with {expected}; {fix}")
    out = []
    with safe_open(str(path), framework="pt") as f:
        for i in range(len(counts)):
            tokens = f.get_tensor(f"clip{i}.tokens")
            out.append({"tokens": tokens.to(dtype) if dtype is not None else tokens,
                        "pooled": f.get_tensor(f"clip{i}.pooled")})
    return out
