"""Timed subtitles: narrations as SRT or WebVTT cues aligned to the clips.

One cue per clip, spanning the clip's [start, end).  Times are rounded to whole
milliseconds by one monotone rule (:func:`round_ms`), so cues that do not
overlap as floats never overlap in the file either.

Cue text is cleaned the same way for both formats (:func:`clean_text`): all
whitespace, newlines included, collapses to single spaces (a blank line would
end the cue in both formats) and control characters are dropped.  Then it is
wrapped for reading (:func:`wrap_text`): one line when it fits in 42
characters, otherwise two balanced lines; text longer than 84 characters stays
on two (longer) lines rather than losing words, so split long narrations with
``cues_from_clips(..., max_chars_per_cue=84)``.

Format-specific text rules:

- WebVTT escapes ``&``, ``<`` and ``>`` as ``&amp;``, ``&lt;``, ``&gt;``: the
  text shows exactly as given, and ``-->`` (forbidden in a cue) never appears.
- SRT has no escapes: each ``-->`` is rewritten as ``->`` (FFmpeg and other
  players would read a line holding ``-->`` as the next cue's timing).  ``<``
  stays as is; players may read ``<i>``-style tags in SRT as formatting.

:func:`parse_srt` and :func:`parse_webvtt` are strict validators: they raise
``ValueError`` naming the cue and line for any violation, including
overlapping cues (legal in WebVTT, but never written here).
"""
from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .io import atomic_write_text

LINE_CHARS = 42        # a common subtitle guideline: at most ~42 characters a line
MAX_LINES = 2
MAX_SECONDS = 100 * 3600  # HH has two digits


@dataclass(frozen=True)
class Cue:
    start: float  # seconds
    end: float    # seconds; end > start
    text: str


# -- cues from clips -----------------------------------------------------------

# Split after . ! ? followed by whitespace (not inside "3.5"), or after a
# Chinese full stop / exclamation / question mark / semicolon.
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])(?=\s)|(?<=[。！？；])")


def _split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_SPLIT.split(text) if s.strip()]


def _pack(sentences: list[str], max_chars: int) -> list[str]:
    """Greedily join consecutive sentences into chunks of at most ``max_chars``.

    A single sentence longer than ``max_chars`` stays whole (never cut mid-sentence).
    """
    chunks: list[str] = []
    for s in sentences:
        if chunks:
            # CJK sentences join without a space, others with one
            sep = "" if chunks[-1][-1] in "。！？；" else " "
            if len(chunks[-1]) + len(sep) + len(s) <= max_chars:
                chunks[-1] = chunks[-1] + sep + s
                continue
        chunks.append(s)
    return chunks


def cues_from_clips(clips: Sequence, narrations: Sequence[str],
                    max_chars_per_cue: int | None = None) -> list[Cue]:
    """One cue per clip with the clip's [start, end) timing and its narration.

    ``clips`` are :class:`videonarrator.schema.Clip` records (anything with
    ``start``/``end`` seconds).  A clip whose narration is empty gets no cue.
    With ``max_chars_per_cue``, a longer narration is split at sentence
    boundaries into consecutive cues inside the clip, each lasting in
    proportion to its character count; a sentence is never cut, so one longer
    sentence makes a longer cue.  Default None: one cue per clip.
    """
    if len(clips) != len(narrations):
        raise ValueError(f"{len(clips)} clips but {len(narrations)} narrations; give one narration per clip")
    if max_chars_per_cue is not None and max_chars_per_cue < 1:
        raise ValueError(f"max_chars_per_cue must be a positive number of characters, got {max_chars_per_cue}")
    cues: list[Cue] = []
    for i, (clip, text) in enumerate(zip(clips, narrations)):
        start, end = float(clip.start), float(clip.end)
        if not end > start:
            raise ValueError(f"clip {i}: end {end} is not after start {start}")
        text = clean_text(text)
        if not text:
            continue
        chunks = [text]
        if max_chars_per_cue is not None and len(text) > max_chars_per_cue:
            chunks = _pack(_split_sentences(text), max_chars_per_cue)
        total = sum(len(c) for c in chunks)
        t, done = start, 0
        for k, chunk in enumerate(chunks):
            done += len(chunk)
            t_end = end if k == len(chunks) - 1 else start + (end - start) * done / total
            cues.append(Cue(t, t_end, chunk))
            t = t_end
    return cues


# -- text --------------------------------------------------------------------

def clean_text(text: str) -> str:
    """Collapse all whitespace (newlines included) to single spaces; drop control characters.

    A blank line ends a cue in SRT and WebVTT, so a cue's own line breaks
    cannot be kept as given; :func:`wrap_text` makes new ones.
    """
    text = " ".join(text.split())
    # Cc: C0/C1 controls (NUL would cut the text short in C parsers); Cs: lone
    # surrogates, which UTF-8 cannot encode.
    return "".join(ch for ch in text if unicodedata.category(ch) not in ("Cc", "Cs")).strip()


def wrap_text(text: str, width: int = LINE_CHARS) -> list[str]:
    """Cleaned text as at most two lines: one when it fits ``width``, else two balanced ones.

    Lines break at the space that best balances them; text without spaces
    (Chinese) breaks in the middle.  Longer text than two lines of ``width``
    makes two longer lines: nothing is dropped.
    """
    if len(text) <= width:
        return [text] if text else []
    best = None
    for i, ch in enumerate(text):
        if ch == " ":
            cost = max(i, len(text) - i - 1)
            if best is None or cost < best[0]:
                best = (cost, i)
    mid = (len(text) + 1) // 2
    # a break at a space, unless it leaves a line much longer than a mid-text cut would
    if best is not None and best[0] <= max(width, mid + width // 4):
        i = best[1]
        return [text[:i], text[i + 1:]]
    return [text[:mid], text[mid:]]


def _srt_text(text: str) -> str:
    while "-->" in text:  # loop: "--->" becomes "-->" after one pass
        text = text.replace("-->", "->")
    return text


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_VTT_ENTITIES = {"amp": "&", "lt": "<", "gt": ">", "nbsp": "\u00a0", "lrm": "\u200e", "rlm": "\u200f"}


def _vtt_unescape(text: str) -> str:
    return re.sub(r"&(amp|lt|gt|nbsp|lrm|rlm);", lambda m: _VTT_ENTITIES[m.group(1)], text)


# -- writing -----------------------------------------------------------------

def round_ms(t: float) -> int:
    """Seconds to whole milliseconds, rounding halves up (monotone: order is kept)."""
    return math.floor(t * 1000 + 0.5)


def _timestamp(ms: int, sep: str) -> str:
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _checked(cues: Sequence[Cue], srt: bool) -> list[tuple[int, int, list[str]]]:
    """(start_ms, end_ms, text lines) per cue; ValueError naming the cue (1-based) on a bad one."""
    out: list[tuple[int, int, list[str]]] = []
    prev_end = 0
    for n, cue in enumerate(cues, start=1):
        for name, t in (("start", cue.start), ("end", cue.end)):
            if not (math.isfinite(t) and 0 <= round_ms(t) < MAX_SECONDS * 1000):
                raise ValueError(f"cue {n}: {name} time {t!r} s must be finite, >= 0 and under 100 hours")
        start, end = round_ms(cue.start), round_ms(cue.end)
        if end <= start:
            raise ValueError(f"cue {n}: end {cue.end!r} s is not after start {cue.start!r} s "
                             "(at millisecond precision); drop the cue or lengthen it")
        if start < prev_end:
            raise ValueError(f"cue {n} starts at {cue.start!r} s, before cue {n - 1} ends "
                             f"({prev_end / 1000} s): cues must be in time order and not overlap")
        text = clean_text(cue.text)
        if not text:
            raise ValueError(f"cue {n} ({cue.start!r}-{cue.end!r} s) has no text once blank lines and "
                             "control characters are removed; drop the cue")
        lines = wrap_text(_srt_text(text) if srt else text)
        out.append((start, end, lines if srt else [_vtt_escape(x) for x in lines]))
        prev_end = end
    return out


def to_srt(cues: Sequence[Cue]) -> str:
    """SubRip: ``index``, ``HH:MM:SS,mmm --> HH:MM:SS,mmm``, text lines, a blank line."""
    blocks = [f"{n}\n{_timestamp(s, ',')} --> {_timestamp(e, ',')}\n" + "\n".join(lines) + "\n"
              for n, (s, e, lines) in enumerate(_checked(cues, srt=True), start=1)]
    return "\n".join(blocks)


def to_webvtt(cues: Sequence[Cue]) -> str:
    """WebVTT: a ``WEBVTT`` header, then cues ``HH:MM:SS.mmm --> HH:MM:SS.mmm`` + text, blank-line separated."""
    blocks = [f"{_timestamp(s, '.')} --> {_timestamp(e, '.')}\n" + "\n".join(lines) + "\n"
              for s, e, lines in _checked(cues, srt=False)]
    return "\n".join(["WEBVTT\n"] + blocks)


def write_subtitles(cues: Sequence[Cue], path: str | Path) -> Path:
    """Write cues as SRT (``.srt``) or WebVTT (``.vtt``), chosen by suffix; atomic.

    An empty cue list is refused: players reject a cue-less SRT file.
    """
    path = Path(path)
    if not cues:
        raise ValueError(f"no cues to write to {path}: every narration is empty")
    suffix = path.suffix.lower()
    if suffix == ".srt":
        text = to_srt(cues)
    elif suffix == ".vtt":
        text = to_webvtt(cues)
    else:
        raise ValueError(f"cannot write subtitles to {path}: unknown suffix {path.suffix!r}; use .srt or .vtt")
    atomic_write_text(path, text)
    return path


# -- strict parsing ------------------------------------------------------------

_SRT_TIME = r"(\d{2,}):([0-5]\d):([0-5]\d),(\d{3})"
_VTT_TIME = r"(?:(\d{2,}):)?([0-5]\d):([0-5]\d)\.(\d{3})"
_SRT_TIMING = re.compile(rf"{_SRT_TIME} --> {_SRT_TIME}")
# WebVTT: hours optional; cue settings may follow the end time
_VTT_TIMING = re.compile(rf"{_VTT_TIME}[ \t]+-->[ \t]+{_VTT_TIME}(?:[ \t]+\S.*)?")


def _ms(h: str | None, m: str, s: str, ms: str) -> int:
    return ((int(h or 0) * 60 + int(m)) * 60 + int(s)) * 1000 + int(ms)


def _lines(text: str) -> list[str]:
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    return text.split("\n")


def _add_cue(cues: list[Cue], start: int, end: int, text_lines: list[str], where: str) -> None:
    if end <= start:
        raise ValueError(f"{where}: end time is not after start time")
    if cues and start < round_ms(cues[-1].end):
        raise ValueError(f"{where}: starts before the previous cue ends ({cues[-1].end} s): cues overlap")
    if not text_lines:
        raise ValueError(f"{where}: no text")
    cues.append(Cue(start / 1000, end / 1000, "\n".join(text_lines)))


def parse_srt(text: str) -> list[Cue]:
    """Parse and validate SubRip text; ValueError names the cue number and line."""
    lines = _lines(text)
    cues: list[Cue] = []
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        n = len(cues) + 1
        where = f"SRT cue {n} (line {i + 1})"
        if _SRT_TIMING.fullmatch(lines[i]):
            raise ValueError(f"{where}: missing index line before the timing line")
        if not lines[i].isdigit():
            raise ValueError(f"{where}: expected the index {n}, found {lines[i]!r}")
        if int(lines[i]) != n:
            raise ValueError(f"{where}: index {lines[i]} out of sequence; expected {n}")
        if i + 1 >= len(lines) or not lines[i + 1].strip():
            raise ValueError(f"SRT cue {n} (line {i + 2}): missing timing line after the index")
        if not (m := _SRT_TIMING.fullmatch(lines[i + 1])):
            raise ValueError(f"SRT cue {n} (line {i + 2}): bad timing line {lines[i + 1]!r}; "
                             "expected 'HH:MM:SS,mmm --> HH:MM:SS,mmm'")
        j = i + 2
        while j < len(lines) and lines[j].strip():
            j += 1
        g = m.groups()
        _add_cue(cues, _ms(*g[:4]), _ms(*g[4:]), lines[i + 2:j], f"SRT cue {n} (line {i + 2})")
        i = j
    return cues


def parse_webvtt(text: str) -> list[Cue]:
    """Parse and validate WebVTT text (cue text unescaped); ValueError names the cue and line."""
    lines = _lines(text)
    if not (lines[0] == "WEBVTT" or lines[0].startswith(("WEBVTT ", "WEBVTT\t"))):
        raise ValueError(f"WebVTT line 1: missing 'WEBVTT' header (found {lines[0][:40]!r})")
    cues: list[Cue] = []
    i = 1
    while i < len(lines) and lines[i].strip():  # header block
        i += 1
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        j = i
        while j < len(lines) and lines[j].strip():
            j += 1
        block, i0, i = lines[i:j], i, j
        if block[0].startswith(("NOTE", "STYLE", "REGION")) and "-->" not in block[0]:
            continue  # comment / style / region blocks carry no cue
        n = len(cues) + 1
        k = 0 if "-->" in block[0] else 1  # an optional cue identifier line comes first
        if k >= len(block) or not (m := _VTT_TIMING.fullmatch(block[k])):
            got = block[k] if k < len(block) else "end of block"
            raise ValueError(f"WebVTT cue {n} (line {i0 + k + 1}): bad timing line {got!r}; "
                             "expected 'HH:MM:SS.mmm --> HH:MM:SS.mmm'")
        if any("-->" in x for x in block[k + 1:]):
            raise ValueError(f"WebVTT cue {n} (line {i0 + k + 2}): cue text contains '-->'")
        g = m.groups()
        _add_cue(cues, _ms(*g[:4]), _ms(*g[4:]), [_vtt_unescape(x) for x in block[k + 1:]],
                 f"WebVTT cue {n} (line {i0 + k + 1})")
    return cues


def read_subtitles(path: str | Path) -> list[Cue]:
    """Read and validate an ``.srt`` or ``.vtt`` file (by suffix)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"subtitle file {path} does not exist")
    parse = {".srt": parse_srt, ".vtt": parse_webvtt}.get(path.suffix.lower())
    if parse is None:
        raise ValueError(f"cannot read subtitles from {path}: unknown suffix {path.suffix!r}; use .srt or .vtt")
    try:
        return parse(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
