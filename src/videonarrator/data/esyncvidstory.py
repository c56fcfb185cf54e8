"""E-SyncVidStory annotations (Yang et al., ACL 2024) <-> the internal schema.

The official split files (``data/split/test.json`` of alibaba/alimama-video-narrator)
are a JSON list of records ``{"inputs", "id", "frames", "images", "p_info"}``,
written by the release's ``data_process/get_training_data.py`` (``inputs``,
``frames``) and ``data/split/split.py`` (``images``, ``p_info``; ``json.dump`` with
``ensure_ascii=False``, no indent):

- ``inputs``: the prompt text the reference code builds with one format string::

      商品信息：\n名称：<name>\n<p_info>\n\n广告视频：\n<clip block>\n<clip block>...

  and each clip block is five lines (``i`` 1-based, ``N`` clips)::

      镜头i/N：
      场景：<vid_start><vid_end>
      字数要求：lo-hi个字          # len(narration) ± 3, punctuation included; lo may be negative
      剧本类型：a+b                # the annotated label string, copied verbatim (labels.py)
      i.<narration>

  ``i`` is the clip's index among all annotated clips of the video and ``N``
  their count: clips without a narration, or whose frames had no features, are
  skipped without renumbering, so numbers may jump and ``N`` may exceed the
  number of blocks.
- ``images``: per clip with a narration, its 1-fps frame files ``<id>_<sec>.jpg``
  (``%03d`` of the 1-based second); the count is the clip's duration in whole
  seconds, at least one.  Seconds may jump or repeat between clips; we follow
  the dataset's durations and place clips back to back.  ``images`` keeps the
  clips whose features were missing, so it can hold more lists than ``inputs``
  has blocks (see :func:`_align_images`).
- ``frames``: per clip block, one feature file ``<id>_<i-1>.pkl`` of the reference model.
- ``p_info``: the knowledge lines ``field：item、item、...``.

The loader parses exactly this layout and :func:`to_official` writes it back so
that ``to_official(parse_record(r)) == r``; every loaded record is checked to
round-trip, so nothing is silently dropped.  Parse errors raise
:class:`~videonarrator.schema.SchemaError` naming the file, the record, the video
id, the clip and the line of ``inputs``.

The ``.pkl`` feature files are never opened: unpickling a downloaded file can
run arbitrary code, and those features are tied to the reference model anyway.
Visual input comes from the user's own frame images (:func:`resolve_frames`).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..io import atomic_write_text
from ..labels import format_labels, parse_labels
from ..schema import Clip, Product, SchemaError, Video, validate_video

# Exact pieces of the reference format string.
HEAD = "商品信息：\n名称："
VIDEO_SEP = "\n\n广告视频：\n"
SCENE_LINE = "场景：<vid_start><vid_end>"
FIELD_SEP = "："     # full-width colon between a knowledge field and its items
ITEM_SEP = "、"      # enumeration comma between items
RECORD_KEYS = ("inputs", "id", "frames", "images", "p_info")

# ASCII digits only: the reference writes them with str.format of ints (``\\d`` would also take ２３).
_CLIP_HEADER = re.compile(r"镜头([0-9]+)/([0-9]+)：")
# lo can be negative: the reference writes len(narration)-3 even for narrations under 3 characters.
_WINDOW = re.compile(r"字数要求：(-?[0-9]+)-([0-9]+)个字")
_LABEL_PREFIX = "剧本类型："
_FULL_WIDTH_DIGITS = re.compile(r"[０-９]")


# -- knowledge ----------------------------------------------------------------

def parse_knowledge(text: str, where: str) -> dict[str, list[str]]:
    """``field：a、b\\nfield2：c`` -> ``{field: [a, b], field2: [c]}`` (source order kept).

    Items may themselves contain ``：`` (e.g. ``3：3：1科学配比``): only the first one
    separates the field.
    """
    knowledge: dict[str, list[str]] = {}
    if text == "":
        return knowledge
    for n, line in enumerate(text.split("\n"), 1):
        field, sep, items = line.partition(FIELD_SEP)
        if not sep or not field:
            raise SchemaError(f"{where}: knowledge line {n} {line!r} is not 'field：item、item'")
        if field in knowledge:
            raise SchemaError(f"{where}: knowledge field {field!r} appears twice (line {n})")
        knowledge[field] = items.split(ITEM_SEP) if items else []
    return knowledge


def format_knowledge(knowledge: dict[str, list[str]]) -> str:
    return "\n".join(f"{field}{FIELD_SEP}{ITEM_SEP.join(items)}" for field, items in knowledge.items())


# -- one record ---------------------------------------------------------------

def _check_types(record: Any, where: str) -> None:
    if not isinstance(record, dict):
        raise SchemaError(f"{where}: a record must be a JSON object, got {type(record).__name__}")
    missing = [k for k in RECORD_KEYS if k not in record]
    if missing and "shot_loc" in record:  # data/split/get_cut_data.py writes one training sample per clip
        raise SchemaError(f"{where}: a per-clip training sample (keys {list(record)}, written by the release's "
                          "get_cut_data.py), not a video record; give the split file it was cut from (test.json)")
    if missing:
        raise SchemaError(f"{where}: missing field(s) {missing}; an E-SyncVidStory record has {list(RECORD_KEYS)}")
    for key in ("id", "inputs", "p_info"):
        if not isinstance(record[key], str):
            raise SchemaError(f"{where}: {key!r} must be a string, got {type(record[key]).__name__}")
    if not record["id"]:
        raise SchemaError(f"{where}: empty 'id'")
    frames = record["frames"]
    if not isinstance(frames, list) or not all(isinstance(f, str) for f in frames):
        raise SchemaError(f"{where}: 'frames' must be a list of feature file names (strings)")
    images = record["images"]
    if not isinstance(images, list) or not all(
            isinstance(c, list) and all(isinstance(x, str) for x in c) for c in images):
        raise SchemaError(f"{where}: 'images' must be a list (one per clip) of lists of frame file names")


def _split_inputs(inputs: str, where: str) -> tuple[str, str, str, int]:
    """``inputs`` -> (product name, knowledge block, clip blocks text, line number where they start)."""
    if not inputs.startswith(HEAD):
        raise SchemaError(f"{where}: 'inputs' must start with {HEAD!r}, got {inputs[:20]!r}")
    head, sep, body = inputs.partition(VIDEO_SEP)
    if not sep:
        raise SchemaError(f"{where}: 'inputs' has no {VIDEO_SEP.strip()!r} section")
    name, _, knowledge = head[len(HEAD):].partition("\n")
    return name, knowledge, body, (head + sep).count("\n") + 1


def _bad_window(line: str) -> str:
    """What to fix in a window line that does not read as ``字数要求：lo-hi个字``."""
    if _FULL_WIDTH_DIGITS.search(line):
        return "it has full-width digits; write the numbers with ASCII digits 0-9"
    if " " in line or "\u3000" in line:
        return "it has spaces; write it without spaces"
    return "write it as '字数要求：lo-hi个字' with whole numbers lo <= hi"


def _parse_clip_blocks(body: str, where: str, first_line: int) -> list[dict[str, Any]]:
    """Clip blocks text -> per block {number, total, window, labels_text, narration, line}.

    The reference numbers a block with the clip's index among *all* the video's
    annotated clips (``镜头{fi+1}/{len(frames)}``) and skips clips without a
    narration or without features, so numbers may jump and ``N`` may exceed the
    blocks written; they only have to increase and agree with each other.
    """
    lines = body.split("\n")
    starts = []
    for k, line in enumerate(lines):
        if _CLIP_HEADER.fullmatch(line):
            starts.append(k)
        elif line.startswith("镜头") and line.endswith("："):  # a narration line starts with "i."
            raise SchemaError(f"{where} clip {len(starts) + 1} line {first_line + k}: {line!r} looks like a clip "
                              "header but is not '镜头i/N：' with ASCII digits; fix the header")
    if not starts or starts[0] != 0:
        raise SchemaError(f"{where} line {first_line}: the clip section must start with a '镜头i/N：' line, "
                          f"got {lines[0][:30]!r}")
    blocks = []
    for b, (s, e) in enumerate(zip(starts, starts[1:] + [len(lines)]), 1):
        block = lines[s:e]
        ln = first_line + s  # line number (1-based) of the block's header in 'inputs'
        cw = f"{where} clip {b}"
        if len(block) < 5:
            raise SchemaError(f"{cw} line {ln}: expected 5 lines (镜头/场景/字数要求/剧本类型/narration), "
                              f"got {len(block)}: {block}")
        i, n = (int(x) for x in _CLIP_HEADER.fullmatch(block[0]).groups())
        previous = blocks[-1]["number"] if blocks else 0
        if not previous < i <= n or n < len(starts) or (blocks and n != blocks[0]["total"]):
            raise SchemaError(f"{cw} line {ln}: header says 镜头{i}/{n} but it is clip {b} of {len(starts)} "
                              f"after clip number {previous}; numbers must increase, stay <= N, and N must be "
                              "the same in every header and >= the number of clips")
        if block[1] != SCENE_LINE:
            raise SchemaError(f"{cw} line {ln + 1}: second line must be {SCENE_LINE!r}, got {block[1]!r}")
        m = _WINDOW.fullmatch(block[2])
        if not m:
            raise SchemaError(f"{cw} line {ln + 2}: word window line {block[2]!r} is not '字数要求：lo-hi个字': "
                              f"{_bad_window(block[2])}")
        lo, hi = int(m.group(1)), int(m.group(2))
        if lo > hi:
            raise SchemaError(f"{cw} line {ln + 2}: word window {lo}-{hi} has lo > hi")
        if not block[3].startswith(_LABEL_PREFIX):
            raise SchemaError(f"{cw} line {ln + 3}: fourth line must start with {_LABEL_PREFIX!r}, got {block[3]!r}")
        # A narration is the rest of the block (the reference never puts a newline
        # in one, but keeping extra lines makes the round trip exact if it does).
        narration = "\n".join(block[4:])
        prefix = f"{i}."
        if not narration.startswith(prefix):
            raise SchemaError(f"{cw} line {ln + 4}: narration must start with the clip number {prefix!r}, "
                              f"got {narration[:20]!r}")
        blocks.append({"number": i, "total": n, "window": (lo, hi), "labels_text": block[3][len(_LABEL_PREFIX):],
                       "narration": narration[len(prefix):], "line": ln})
    return blocks


def _align_images(blocks: list[dict[str, Any]], images: list[list[str]], where: str) -> list[int]:
    """Index into ``images`` of each clip block.

    The reference builds ``images`` from every clip with a narration, but drops
    from ``inputs``/``frames`` also the clips whose frames had no features (frames
    past the end of the video: the last clips), so ``images`` can hold more lists
    than there are blocks.  When ``images`` covers every clip number 1..N it is
    indexed by number.  Otherwise the record does not say which lists lack a
    block; we take them to be the trailing ones (frames past the end of the
    video are what has no features) and give the blocks the lists in order.
    Either way the lists without a block are kept, so the record writes back
    unchanged.
    """
    total = blocks[0]["total"]
    if len(images) < len(blocks):
        raise SchemaError(f"{where}: {len(blocks)} clip blocks in 'inputs' but only {len(images)} frame lists in "
                          "'images'; every clip needs its list of 1-fps frames")
    if len(images) == total:
        return [blk["number"] - 1 for blk in blocks]
    return list(range(len(blocks)))


def parse_record(record: Any, split: str = "test", where: str = "") -> Video:
    """One official record -> :class:`Video` (``language="zh"``); raise SchemaError naming it.

    Where the record differs from what :func:`to_official` would write for the
    parsed video (clip numbers that jump, frame lists without a clip, a label
    line's own spelling, a negative window bound), the original is kept in
    ``meta`` so that ``to_official(parse_record(r)) == r`` always.
    """
    rid = record.get("id") if isinstance(record, dict) else None
    where = f"{where}: " if where else ""
    where += f"video {rid!r}" if isinstance(rid, str) and rid else "a record"
    _check_types(record, where)
    name, knowledge_text, body, first_line = _split_inputs(record["inputs"], where)
    if not name:
        raise SchemaError(f"{where} line 2: empty product name in the '名称：' line")
    knowledge = parse_knowledge(record["p_info"], f"{where} p_info")

    blocks = _parse_clip_blocks(body, where, first_line)
    images, features = record["images"], record["frames"]
    if len(features) != len(blocks):
        raise SchemaError(f"{where}: clip count mismatch: {len(blocks)} clip blocks in 'inputs', "
                          f"{len(images)} frame lists in 'images', {len(features)} feature files in 'frames'")
    picked = _align_images(blocks, images, where)
    clips, t = [], 0.0
    for k, (blk, j, feature) in enumerate(zip(blocks, picked, features)):
        cw = f"{where} clip {k + 1} line {blk['line'] + 3}"
        frames = images[j]
        if not frames:
            raise SchemaError(f"{where} clip {k + 1}: no frames in 'images' (zero-length clip)")
        try:
            labels = parse_labels(blk["labels_text"], language="zh", where=cw)
        except ValueError as err:
            raise SchemaError(f"{err}; write the label line as names from labels.py joined by '+'") from None
        lo, hi = blk["window"]
        clip_meta: dict[str, Any] = {"feature_file": feature}
        if lo < 0:
            clip_meta["window_lo"] = lo  # the schema wants lo >= 0; keep the raw value to write it back
        if blk["number"] != k + 1:
            clip_meta["number"] = blk["number"]  # the release's own numbering (clips without narration skipped)
        if blk["labels_text"] != format_labels(labels, "zh"):
            clip_meta["labels_text"] = blk["labels_text"]  # the annotator's spelling, written back as it was
        clips.append(Clip(index=k, start=t, end=t + len(frames), window=(max(lo, 0), hi), labels=labels,
                          narration=blk["narration"], frames=list(frames), meta=clip_meta))
        t += len(frames)

    meta: dict[str, Any] = {"source": "esyncvidstory", "keys": list(record)}
    if knowledge_text != record["p_info"]:
        meta["inputs_knowledge"] = knowledge_text  # keep the prompt's own copy verbatim
    if blocks[0]["total"] != len(blocks):
        meta["clips_total"] = blocks[0]["total"]
    unused = sorted(set(range(len(images))) - set(picked))
    if unused:
        meta["images_without_clip"] = [[j, images[j]] for j in unused]
    extra = {k: v for k, v in record.items() if k not in RECORD_KEYS}
    if extra:
        meta["extra"] = extra
    video = Video(id=record["id"], product=Product(name=name, knowledge=knowledge), clips=clips,
                  language="zh", split=split, meta=meta)
    try:
        validate_video(video)
    except SchemaError as err:
        raise SchemaError(f"{where}: {err}") from None
    back = to_official(video)
    if back != record:  # guard: a parse that cannot be written back would lose data silently
        bad = [k for k in record if back.get(k) != record[k]]
        raise SchemaError(f"{where}: record does not round-trip in field(s) {bad}; the format differs from "
                          "the reference layout (see videonarrator.data.esyncvidstory docstring)")
    return video


def _window_lo(clip: Clip) -> int:
    return clip.meta["window_lo"] if clip.window[0] == 0 and "window_lo" in clip.meta else clip.window[0]


def _labels_text(clip: Clip) -> str:
    """The label line's text: the original spelling while it still names the clip's labels."""
    raw = clip.meta.get("labels_text")
    if raw is not None and parse_labels(raw, "zh") == clip.labels:
        return raw
    return format_labels(clip.labels, "zh")


def to_official(video: Video) -> dict[str, Any]:
    """:class:`Video` -> official record; the inverse of :func:`parse_record`.

    Works for any zh video of the schema: missing feature file names default to
    ``<id>_<i>.pkl`` as in the reference code, clip numbers to 1..n.
    """
    p_info = format_knowledge(video.product.knowledge)
    n = video.meta.get("clips_total", len(video.clips))
    numbers = [c.meta.get("number", k + 1) for k, c in enumerate(video.clips)]
    blocks = [
        f"镜头{i}/{n}：\n{SCENE_LINE}\n字数要求：{_window_lo(c)}-{c.window[1]}个字\n"
        f"{_LABEL_PREFIX}{_labels_text(c)}\n{i}.{c.narration}"
        for i, c in zip(numbers, video.clips)
    ]
    images = [list(c.frames) for c in video.clips]
    for j, frames in video.meta.get("images_without_clip", ()):
        images.insert(j, list(frames))
    knowledge_text = video.meta.get("inputs_knowledge", p_info)
    fields = {
        "inputs": f"{HEAD}{video.product.name}\n{knowledge_text}{VIDEO_SEP}" + "\n".join(blocks),
        "id": video.id,
        "frames": [c.meta.get("feature_file", f"{video.id}_{i - 1}.pkl") for i, c in zip(numbers, video.clips)],
        "images": images,
        "p_info": p_info,
        **video.meta.get("extra", {}),
    }
    order = [k for k in video.meta.get("keys", ()) if k in fields]
    return {k: fields[k] for k in order} | fields  # source key order first (json dump bytes match)


# -- files ----------------------------------------------------------------------

def _read_records(path: str | Path) -> tuple[Path, list[Any]]:
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"E-SyncVidStory path {path} is a directory; give the split file inside it, "
                                "such as data/split/test.json or test_subset.json")
    if not path.is_file():
        raise FileNotFoundError(f"E-SyncVidStory file {path} does not exist; point to a split file such as "
                                "test_subset.json or data/split/test.json")
    try:
        # utf-8-sig: a byte-order mark (Windows editors write one) is read and dropped
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as err:
        raise SchemaError(f"{path}: not UTF-8 text ({err}); re-save the file as UTF-8") from None
    except json.JSONDecodeError as err:
        raise SchemaError(f"{path}: invalid JSON ({err}); fix the file at that line and column") from None
    if not isinstance(doc, list):
        raise SchemaError(f"{path}: expected a JSON list of video records, got {type(doc).__name__}")
    if not doc:
        raise SchemaError(f"{path}: the list of video records is empty; point to a split file with records "
                          "(such as test_subset.json or data/split/test.json)")
    return path, doc


def _parse_file(path: str | Path, split: str, frames_root: str | Path | None, stop: bool
                ) -> tuple[list[Video], list[tuple[str, str]]]:
    path, records = _read_records(path)
    root = _check_root(frames_root)
    videos, skipped, seen = [], [], set()
    for n, record in enumerate(records):
        rid = record.get("id") if isinstance(record, dict) else None
        rid = rid if isinstance(rid, str) and rid else f"#{n}"
        try:
            if rid in seen:
                raise SchemaError(f"{path}: video {rid!r}: duplicate id (record #{n})")
            video = parse_record(record, split=split, where=f"{path} record #{n}")
            if root is not None:
                resolve_frames(video, root)  # raises when only some frames exist
        except (SchemaError, FileNotFoundError) as err:
            if stop and isinstance(err, SchemaError):
                raise SchemaError(f"{err}; fix the record, or load the file with load_esyncvidstory_report "
                                  "to skip bad records") from None
            if stop:
                raise
            skipped.append((rid, str(err)))
            continue
        seen.add(rid)
        videos.append(video)
    return videos, skipped


def load_esyncvidstory(path: str | Path, split: str = "test", frames_root: str | Path | None = None) -> list[Video]:
    """Read an official split file into videos; the first bad record raises SchemaError.

    With ``frames_root``, each video's frames are checked (:func:`resolve_frames`):
    a video with only some frames present raises FileNotFoundError; one with none
    has no visual input (:func:`has_frames`).  Use :func:`load_esyncvidstory_report`
    to skip bad records instead of stopping.
    """
    return _parse_file(path, split, frames_root, stop=True)[0]


def load_esyncvidstory_report(path: str | Path, split: str = "test", frames_root: str | Path | None = None
                              ) -> tuple[list[Video], list[tuple[str, str]]]:
    """Like :func:`load_esyncvidstory` but skip bad records: return (videos, [(id, reason), ...]).

    File-level problems (missing file, not UTF-8, bad JSON, bad ``frames_root``)
    still raise.  A record without a usable id is reported as ``"#<index>"``.
    """
    return _parse_file(path, split, frames_root, stop=False)


def save_esyncvidstory(videos: list[Video], path: str | Path, indent: int | None = None) -> None:
    """Write videos as an official split file, atomically.

    The default is the release's own layout (``split.py``: ``json.dump(records, f,
    ensure_ascii=False)``, no indent), so a loaded release file is written back
    byte for byte; ``indent`` gives a readable file instead.
    """
    records = [to_official(validate_video(v)) for v in videos]
    atomic_write_text(path, json.dumps(records, ensure_ascii=False, indent=indent))


# -- the user's own frames -------------------------------------------------------

def _check_root(frames_root: str | Path | None) -> Path | None:
    if frames_root is None:
        return None
    root = Path(frames_root)
    if not root.is_dir():
        raise FileNotFoundError(f"frames_root {root} is not a folder; give the folder holding the 1-fps frame images")
    return root


def _frame_path(root: Path, video_id: str, name: str) -> Path | None:
    # Two layouts: all frames in one folder (as the reference code reads them), or one folder per video.
    for p in (root / name, root / video_id / name):
        if p.is_file():
            return p
    return None


def resolve_frames(video: Video, frames_root: str | Path) -> list[list[Path]]:
    """Per clip, the frame image paths under ``frames_root`` (``root/name`` or ``root/<id>/name``).

    All found: the paths.  None found: one empty list per clip (no visual input).
    Some but not all: FileNotFoundError naming the video and the first missing file.
    """
    root = _check_root(frames_root)
    found = [[_frame_path(root, video.id, name) for name in clip.frames] for clip in video.clips]
    flat = [p for clip in found for p in clip]
    n_found = sum(p is not None for p in flat)
    if n_found == 0:
        return [[] for _ in video.clips]
    if n_found < len(flat):
        k, name = next((k, name) for k, (clip, c) in enumerate(zip(found, video.clips))
                       for p, name in zip(clip, c.frames) if p is None)
        raise FileNotFoundError(f"frame file {name!r} of video {video.id!r} clip {k + 1} is missing under "
                                f"{root} ({n_found} of {len(flat)} frames found); add it or remove the video's frames")
    return found  # type: ignore[return-value]  # no None left


def has_frames(video: Video, frames_root: str | Path) -> bool:
    """True when all of the video's frames exist under ``frames_root`` (partial sets raise)."""
    return any(resolve_frames(video, frames_root))
