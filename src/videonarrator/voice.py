"""Narrations you can hear: espeak-ng speech, a voice-over track, a narrated copy of the video.

The paper's point is narration *synchronized* with the video; the word or
character window is only a proxy for speaking time.  This module speaks each
clip's narration with the local engine espeak-ng (no download, English and
Mandarin voices), which gives

- :func:`spoken_fit`: the share of narrations whose speech fits inside its
  clip and the mean overrun in seconds (an evaluation metric), and
- :func:`write_narrated_video`: one audio track with each utterance starting
  at its clip's start, muxed beside the original video stream, whose packets
  are copied unchanged (``<name>.narrated.mp4``).

Speaking time is the audible part of espeak-ng's output at the narration rate
the word windows assume (:data:`RATE_WPM`): leading and trailing silence are
dropped and long pauses shortened, so a clip's utterance starts at the clip's
start (within 10 ms) and its length is what a listener hears.
"""
from __future__ import annotations

import shutil
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from .io import atomic_path

SAMPLE_RATE = 22050                 # espeak-ng's native output rate
VOICES = {"en": "en", "zh": "cmn"}  # narration language -> espeak-ng voice
# espeak-ng rate (its -s "words per minute") per language, set so that on average it speaks at the
# narration rate the word windows assume (narrate.UNITS_PER_SECOND: 2.5 English words, 6 Chinese
# characters a second). Measured: English 140 -> 2.52 words/s (61 synthetic references; its default
# 175 -> 3.17); Mandarin 375 -> about 6 characters/s (150 real E-SyncVidStory references; 300 ->
# 5.05, 400 -> 6.34; its default 175 says 3.0, half a real ad narrator's pace).
RATE_WPM = {"en": 140, "zh": 375}
MAX_SPEEDUP = 2.0                   # the voice-over says a long narration at most this much faster
SILENCE = 0.01                      # |amplitude| below this counts as silence when trimming
MAX_PAUSE_S = 0.25                  # longer pauses inside a narration (espeak-ng: up to 0.48 s
                                    # after a sentence end at the English rate) are shortened to this
GAP_S = 0.4                         # quiet before the next clip, longer than any pause inside a
                                    # narration: a listener (and an energy detector) hears the boundary
FADE_S = 0.02                       # fade-out where an utterance still too long is cut


def check_language(language: str) -> None:
    if language not in VOICES:
        raise ValueError(f"no espeak-ng voice for language {language!r}; languages: {', '.join(sorted(VOICES))}")


def espeak_path() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise FileNotFoundError("espeak-ng is not installed, so narrations cannot be spoken; install it with "
                                "`apt-get install -y espeak-ng` (scripts/vn repro and test do this when run as root)")
    return exe


@lru_cache(maxsize=8192)  # the evaluation speaks the same reference text once per system and mode
def _speak_cached(text: str, voice: str, wpm: int) -> np.ndarray:
    # Text on stdin, not argv: a narration starting with "-" is not read as an option.
    proc = subprocess.run([espeak_path(), "-v", voice, "-s", str(wpm), "--stdout"], input=text.encode("utf-8"),
                          capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"espeak-ng -v {voice} failed on {text[:60]!r}: {proc.stderr.decode(errors='replace')}")
    wav = proc.stdout
    # --stdout writes a streaming WAV header (its sizes are placeholders): the samples follow the "data" tag.
    at = wav.find(b"data")
    if wav[:4] != b"RIFF" or at < 0:
        raise RuntimeError(f"espeak-ng -v {voice} wrote no WAV data for {text[:60]!r}")
    samples = np.frombuffer(wav[at + 8:], dtype="<i2").astype(np.float32) / 32768.0
    out = _tighten(samples)
    out.setflags(write=False)  # cached: callers must not change it
    return out


def _tighten(samples: np.ndarray, frame: int = SAMPLE_RATE // 100) -> np.ndarray:
    """Drop leading and trailing silence and shorten pauses to :data:`MAX_PAUSE_S` (10 ms frames)."""
    n = len(samples) // frame
    loud = np.abs(samples[:n * frame]).reshape(n, frame).max(axis=1) > SILENCE
    if not loud.any():
        return samples[:0]
    keep, quiet, max_quiet = np.zeros(n, bool), 0, round(MAX_PAUSE_S * 100)
    for i in range(np.flatnonzero(loud)[0], np.flatnonzero(loud)[-1] + 1):
        quiet = 0 if loud[i] else quiet + 1
        keep[i] = quiet <= max_quiet
    return samples[:n * frame].reshape(n, frame)[keep].reshape(-1)


def speak(text: str, language: str = "en", speed: float = 1.0) -> np.ndarray:
    """The audible speech of ``text`` as float32 mono samples at :data:`SAMPLE_RATE` (silence trimmed),
    said at ``speed`` times the language's narration rate."""
    check_language(language)
    text = " ".join(text.split())
    if not text:
        return np.zeros(0, np.float32)
    return _speak_cached(text, VOICES[language], round(RATE_WPM[language] * speed))


def speech_seconds(text: str, language: str = "en") -> float:
    """How long ``text`` takes to say at the language's narration rate."""
    return len(speak(text, language)) / SAMPLE_RATE


def spoken_fit(narrations: Sequence[str], clip_seconds: Sequence[float], language: str) -> dict[str, float]:
    """Spoken synchronization: does each narration, said at the narration rate, fit inside its clip?

    ``spoken_fit`` is the share of narrations whose speech is no longer than
    the clip; ``spoken_overrun_s`` the mean over all narrations of how many
    seconds the speech runs past the clip's end (0 for one that fits).
    Each narration is spoken once per process (cached by text and voice):
    espeak-ng takes about 15 ms a narration here.
    """
    if len(narrations) != len(clip_seconds):
        raise ValueError(f"{len(narrations)} narrations but {len(clip_seconds)} clip durations; give one per clip")
    if not narrations:
        return {"spoken_fit": float("nan"), "spoken_overrun_s": float("nan")}
    check_language(language)
    over = np.array([max(0.0, speech_seconds(t, language) - float(d)) for t, d in zip(narrations, clip_seconds)])
    return {"spoken_fit": float(np.mean(over == 0)), "spoken_overrun_s": float(over.mean())}


def voice_track(clips: Sequence, narrations: Sequence[str], language: str,
                total_s: float) -> tuple[np.ndarray, list[dict]]:
    """One mono track of ``total_s`` seconds with each narration spoken from its clip's start.

    ``clips`` have ``start``/``end`` seconds.  An utterance longer than its
    clip (less :data:`GAP_S`) is said faster, up to :data:`MAX_SPEEDUP`; one
    still too long is cut with a short fade, so every utterance stays inside
    its clip, as its subtitle cue does.  Returns the track and, per clip, the
    speech's start, natural length, the speed-up used and whether it was cut.
    """
    if len(clips) != len(narrations):
        raise ValueError(f"{len(clips)} clips but {len(narrations)} narrations; give one narration per clip")
    check_language(language)
    track = np.zeros(int(round(total_s * SAMPLE_RATE)), np.float32)
    info = []
    for clip, text in zip(clips, narrations):
        start = int(round(float(clip.start) * SAMPLE_RATE))
        room = max(0, min(int(round((float(clip.end) - GAP_S) * SAMPLE_RATE)), len(track)) - start)
        speech, speed = speak(text, language), 1.0
        natural = len(speech) / SAMPLE_RATE
        if len(speech) > room and room > 0:
            # speech shortens about in proportion to the rate; what still sticks out is cut below
            speed = min(MAX_SPEEDUP, round(len(speech) / room, 2))
            speech = speak(text, language, speed)
        cut = len(speech) > room
        if cut:
            speech = speech[:room].copy()
            fade = min(len(speech), int(FADE_S * SAMPLE_RATE))
            speech[len(speech) - fade:] *= np.linspace(1, 0, fade, dtype=np.float32)
        track[start:start + len(speech)] = speech
        info.append({"speech_start": round(start / SAMPLE_RATE, 3), "speech_s": round(natural, 3),
                     "speech_speed": speed, "speech_cut": bool(cut)})
    return track, info


def write_narrated_video(video_path: str | Path, track: np.ndarray, out_path: str | Path,
                         codec: str = "aac") -> Path:
    """A copy of the video with ``track`` (mono, :data:`SAMPLE_RATE`) as its first, default audio stream.

    The video stream's packets are copied unchanged (no re-encoding, so no
    quality loss and the same frames at the same times); the video's own
    audio, if any, follows as a second, non-default stream, also copied.
    ``codec`` is ``aac`` (plays everywhere) or ``libopus``; written atomically.
    """
    import av

    video_path, out_path = Path(video_path), Path(out_path)
    if not video_path.is_file():
        raise FileNotFoundError(f"video {video_path} does not exist")
    with av.open(str(video_path)) as inp:
        if not inp.streams.video:
            raise ValueError(f"{video_path} has no video stream to narrate")
        with atomic_path(out_path) as tmp, av.open(str(tmp), "w", format="mp4") as out:
            v_in = inp.streams.video[0]
            v_out = out.add_stream_from_template(v_in)
            voice = out.add_stream(codec, rate=SAMPLE_RATE, layout="mono")
            voice.disposition = av.stream.Disposition.default
            copied = {v_in: v_out}
            if inp.streams.audio:  # keep the film's own sound, not played by default
                a_in = inp.streams.audio[0]
                copied[a_in] = out.add_stream_from_template(a_in)
                copied[a_in].disposition = av.stream.Disposition(0)
            for packet in _voice_packets(voice, track):
                out.mux(packet)
            for packet in inp.demux(*copied):
                if packet.dts is None:  # the demuxer's end-of-stream marker
                    continue
                packet.stream = copied[packet.stream]
                out.mux(packet)
    return out_path


def read_voice(path: str | Path) -> np.ndarray:
    """The voice-over of a narrated video (its first audio stream) as mono float32 samples from time 0."""
    import av

    with av.open(str(path)) as c:
        if not c.streams.audio:
            raise ValueError(f"{path} has no audio stream; write it with `videonarrator-narrate ... --voice`")
        stream = c.streams.audio[0]
        if stream.sample_rate != SAMPLE_RATE:
            raise ValueError(f"{path}: audio at {stream.sample_rate} Hz, not the voice-over's {SAMPLE_RATE} Hz")
        frames = [f for f in c.decode(stream)]
    lead = np.zeros(max(0, round((frames[0].time or 0) * SAMPLE_RATE)) if frames else 0, np.float32)
    return np.concatenate([lead] + [f.to_ndarray().reshape(-1).astype(np.float32) for f in frames])


def _voice_packets(stream, track: np.ndarray):
    import av

    step = 1024  # AAC's frame size; the encoder regroups other sizes itself
    for at in range(0, len(track), step):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(track[None, at:at + step]), format="flt",
                                           layout="mono")
        frame.sample_rate, frame.pts = SAMPLE_RATE, at
        yield from stream.encode(frame)
    yield from stream.encode(None)
