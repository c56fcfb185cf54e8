"""Narrate my own video: any mp4 + a product sheet -> timed narration subtitles.

    videonarrator-narrate my_ad.mp4 product.yaml --out narration/

cuts the video into clips (shot detection, short shots merged, long shots
split), samples one frame per second, encodes the frames with the same vision
tower the model was trained on (``params.yaml`` ``features``), narrates clip
by clip with a trained model (``models/videonarrator``) and writes
``<name>.srt``, ``<name>.vtt`` and ``<name>.json`` (clips, windows, labels,
narrations).  Without a storyline the model predicts each clip's script label
(generated-storyline mode); ``--storyline a,b,c`` gives one label per clip.
``--voice`` also speaks each narration from its clip's start (espeak-ng) into
``<name>.narrated.mp4``, a copy of the video with the voice-over as its audio.

The product sheet is YAML or JSON::

    name: Lumo serum
    knowledge:
      ingredients: [hyaluronic acid, vitamin C]
      efficacy: [deep hydration]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import yaml

from .config import Settings
from .dataset import VisualInputs, compress_clips
from .io import write_json
from .labels import LABELS
from .schema import UNITS_PER_SECOND, Clip, Product, Video, window_around
from .subtitles import cues_from_clips, write_subtitles
from .video import cut_clips, frame_index, read_frames, sample_times, split_long_shots



def load_product_sheet(path: str | Path) -> Product:
    """A product sheet (YAML or JSON): ``name`` and ``knowledge`` {field: [items]}."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"product sheet {path} does not exist")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))  # JSON is valid YAML
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid UTF-8 YAML/JSON ({err})") from None
    if not isinstance(doc, dict) or not str(doc.get("name") or "").strip():
        raise ValueError(f"{path}: the product sheet needs a non-empty 'name' (and 'knowledge': {{field: [items]}})")
    knowledge = doc.get("knowledge") or {}
    if not isinstance(knowledge, dict) or not knowledge:
        raise ValueError(f"{path}: 'knowledge' must map at least one field to a list of items, e.g. "
                         f"knowledge: {{efficacy: [deep hydration]}}; the narrator may only state these facts")
    items = {}
    for field, values in knowledge.items():
        values = [values] if isinstance(values, str) else values
        if not isinstance(values, list) or not all(isinstance(v, (str, int, float)) for v in values) or not values:
            raise ValueError(f"{path}: knowledge field {field!r} must be a non-empty list of items")
        items[str(field)] = [str(v) for v in values]
    return Product(name=str(doc["name"]).strip(), knowledge=items)


def window_for(seconds: float, language: str) -> tuple[int, int]:
    return window_around(max(1, round(UNITS_PER_SECOND[language] * seconds)))


def cut_video(path: str | Path, prepare, max_clip_s: float, frame_size: int = 224):
    """Decode, cut into clips as the pipeline does (``prepare``: a PrepareConfig), split long ones;
    return (clip spans, frames, video info)."""
    frames, info = read_frames(path, size=frame_size)
    spans = split_long_shots(cut_clips(frames, info.fps, prepare.shot_threshold, prepare.min_shot_s), max_clip_s)
    return spans, frames, info


def build_video(video_id: str, product: Product, spans: list[tuple[float, float]], language: str,
                storyline: list[str] | None) -> Video:
    if storyline is not None and len(storyline) != len(spans):
        raise ValueError(f"--storyline has {len(storyline)} labels but the video was cut into {len(spans)} clips "
                         f"({', '.join(f'{a:.1f}-{b:.1f}s' for a, b in spans)}); give one label per clip")
    clips = [Clip(index=i, start=round(a, 3), end=round(b, 3), window=window_for(b - a, language),
                  labels=[storyline[i]] if storyline else [LABELS[0]],   # a placeholder the prompt never shows
                  meta={} if storyline else {"labels_unknown": True})
             for i, (a, b) in enumerate(spans)]
    return Video(id=video_id, product=product, clips=clips, language=language, split="test")


def encode_clips(tower, frames: np.ndarray, spans, fps: float, tau: float) -> VisualInputs:
    """1-fps frames of every clip through the vision tower, then frame compression."""
    from .features import encode_frames

    picks = [[frame_index(t, fps, len(frames)) for t in sample_times(a, b)] for a, b in spans]
    pooled, tokens = encode_frames(tower, frames[[i for p in picks for i in p]])
    sizes = [len(p) for p in picks]
    return compress_clips([{"tokens": t, "pooled": p} for p, t in zip(pooled.split(sizes), tokens.split(sizes))], tau)


def narrate_file(video_path: str | Path, sheet: str | Path, out_dir: str | Path, settings: Settings,
                 model_dir: str | Path = "models/videonarrator", storyline: list[str] | None = None,
                 language: str = "en", max_clip_s: float = 8.0, progress: bool = True,
                 voice: bool = False) -> dict[str, Path]:
    """The whole path for one video; returns the written files {"srt", "vtt", "json"} (and "mp4" with ``voice``).

    ``settings`` (params.yaml) give the clip cutting, the vision tower, tau and decoding.
    """
    from .features import load_tower
    from .generate import narrate_videos

    video_path, out_dir, model_dir = Path(video_path), Path(out_dir), Path(model_dir)
    product = load_product_sheet(sheet)
    llm_path = Path(settings["llm"]["path"])
    for what, path in (("trained model", model_dir / "config.json"), ("base LLM", llm_path)):
        if not path.exists():  # check before the long work starts
            raise FileNotFoundError(f"{what} {path} does not exist; run `dvc repro train` first (or pass --model)")
    if voice:
        from . import voice as speech

        speech.check_language(language)  # both fail before the long work, not after it
        speech.espeak_path()
    spans, frames, info = cut_video(video_path, settings.prepare(), max_clip_s)
    video = build_video(video_path.stem, product, spans, language, storyline)
    model = settings.narrator(model_dir)
    visual = None
    if model.visual is not None:
        tower, _ = load_tower(settings.tower())
        visual = encode_clips(tower, frames, spans, info.fps, settings.tau())
    gen = settings.generation(mode="given" if storyline else "generated", batch_size=1)
    outputs = narrate_videos(model, [video], {video.id: visual}, gen, progress=progress)[video.id]

    texts = [o.text for o in outputs]
    cues = cues_from_clips(video.clips, texts)
    stem = out_dir / video.id
    written = {"srt": write_subtitles(cues, stem.with_suffix(".srt")),
               "vtt": write_subtitles(cues, stem.with_suffix(".vtt"))}
    clips = [{"index": c.index, "start": c.start, "end": c.end, "window": list(c.window),
              "labels": o.labels if not storyline else c.labels, "narration": o.text,
              "length": o.length, "in_window": o.in_window,
              "frames_kept": len(visual.kept[c.index]) if visual else 0}
             for c, o in zip(video.clips, outputs)]
    if voice:
        track, spoken = speech.voice_track(video.clips, texts, language, info.duration)
        written["mp4"] = speech.write_narrated_video(video_path, track, stem.with_suffix(".narrated.mp4"))
        for clip, s in zip(clips, spoken):
            clip.update(s)
    write_json(stem.with_suffix(".json"), {"video": str(video_path), "product": product.name,
                                           "mode": gen.mode, "clips": clips})
    written["json"] = stem.with_suffix(".json")
    return written


def main(argv: list[str] | None = None) -> int:
    from .params import ParamsError

    parser = argparse.ArgumentParser(description="Narrate a video clip by clip; write SRT, WebVTT and JSON.")
    parser.add_argument("video", help="an mp4 (or any file PyAV decodes)")
    parser.add_argument("sheet", help="product sheet, YAML or JSON: name + knowledge {field: [items]}")
    parser.add_argument("--out", default="narration", help="output folder (default: narration/)")
    parser.add_argument("--model", default="models/videonarrator", help="a trained narrator folder")
    parser.add_argument("--params", default="params.yaml",
                        help="the params the model was trained with (clip cutting, tower, tau, decoding)")
    parser.add_argument("--storyline", default=None, help="comma-separated labels, one per clip (else predicted)")
    parser.add_argument("--language", default="en", choices=sorted(UNITS_PER_SECOND))
    parser.add_argument("--max-clip-s", type=float, default=8.0, help="longer shots are split into clips this long")
    parser.add_argument("--voice", action="store_true",
                        help="also speak the narrations (espeak-ng) into <name>.narrated.mp4")
    args = parser.parse_args(argv)
    storyline = [s.strip() for s in args.storyline.split(",")] if args.storyline else None
    for label in storyline or []:
        if label not in LABELS:
            print(f"error: unknown label {label!r} in --storyline; labels: {', '.join(LABELS)}", file=sys.stderr)
            return 2
    try:
        written = narrate_file(args.video, args.sheet, args.out, Settings.load(args.params), args.model, storyline,
                               args.language, args.max_clip_s, voice=args.voice)
    except (FileNotFoundError, ValueError, ParamsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for kind, path in written.items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
