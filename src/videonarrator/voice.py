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

Speaking time is the audible part of espeak-ng's output at its default rate:
leading and trailing silence are trimmed, so a clip's utterance starts exactly
at the clip's start and its length is what a listener hears.
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
DEFAULT_WPM = 175                   # espeak-ng's default speaking rate
MAX_WPM = 350                       # 2x: faster speech is hard to follow
SILENCE = 0.01                      # |amplitude| below this counts as silence when trimming
# Quiet left before the next clip's utterance: longer than any pause espeak-ng makes inside a
# narration at its default rate (at most 0.33 s measured, after a sentence end), so a listener,
# and an energy detector, hear where one clip's narration ends and the next begins.
GAP_S = 0.4
FADE_S = 0.02                       # fade-out where an utterance still too long is cut


def voice_for(language: str) -> str:
    if language not in VOICES:
        raise ValueError(f"no espeak-ng voice for language {language!r}; languages: {', '.join(sorted(VOICES))}")
    return VOICES[language]


def espeak_path() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise FileNotFoundError("espeak-ng is not installed, so narrations cannot be spoken; install it with "
                                "`apt-get install -y espeak-ng` (scripts/vn test does this when run as root)")
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
    loud = np.flatnonzero(np.abs(samples) > SILENCE)
    out = samples[loud[0]:loud[-1] + 1] if loud.size else samples[:0]
    out.setflags(write=False)  # cached: callers must not change it
    return out


def speak(text: str, voice: str = "en", wpm: int = DEFAULT_WPM) -> np.ndarray:
    """The audible speech of ``text`` as float32 mono samples at :data:`SAMPLE_RATE` (silence trimmed)."""
    text = " ".join(text.split())
    if not text:
        return np.zeros(0, np.float32)
    return _speak_cached(text, voice, int(wpm))


def speech_seconds(text: str, voice: str = "en") -> float:
    """How long ``text`` takes to say at espeak-ng's default rate."""
    return len(speak(text, voice)) / SAMPLE_RATE


def spoken_fit(narrations: Sequence[str], clip_seconds: Sequence[float], language: str) -> dict[str, float]:
    """Spoken synchronization: does each narration, said at the default rate, fit inside its clip?

    ``spoken_fit`` is the share of narrations whose speech is no longer than
    the clip; ``spoken_overrun_s`` the mean over all narrations of how many
    seconds the speech runs past the clip's end (0 for one that fits);
    ``spoken_n`` the count behind both.
    """
    if len(narrations) != len(clip_seconds):
        raise ValueError(f"{len(narrations)} narrations but {len(clip_seconds)} clip durations; give one per clip")
    if not narrations:
        return {"spoken_fit": float("nan"), "spoken_overrun_s": float("nan"), "spoken_n": 0}
    voice = voice_for(language)
    over = np.array([max(0.0, speech_seconds(t, voice) - float(d)) for t, d in zip(narrations, clip_seconds)])
    return {"spoken_fit": float(np.mean(over == 0)), "spoken_overrun_s": float(over.mean()),
            "spoken_n": len(narrations)}


def voice_track(clips: Sequence, narrations: Sequence[str], language: str,
                total_s: float) -> tuple[np.ndarray, list[dict]]:
    """One mono track of ``total_s`` seconds with each narration spoken from its clip's start.

    ``clips`` have ``start``/``end`` seconds.  An utterance longer than its
    clip (less :data:`GAP_S`) is said faster, up to :data:`MAX_WPM`; one still
    too long is cut with a short fade, so every utterance stays inside its
    clip, as its subtitle cue does.  Returns the track and, per clip, the
    speech's start, natural length, the rate used and whether it was cut.
    """
    if len(clips) != len(narrations):
        raise ValueError(f"{len(clips)} clips but {len(narrations)} narrations; give one narration per clip")
    voice = voice_for(language)
    track = np.zeros(int(round(total_s * SAMPLE_RATE)), np.float32)
    info = []
    for clip, text in zip(clips, narrations):
        start = int(round(float(clip.start) * SAMPLE_RATE))
        room = max(0, min(int(round((float(clip.end) - GAP_S) * SAMPLE_RATE)), len(track)) - start)
        speech, wpm = speak(text, voice), DEFAULT_WPM
        natural = len(speech) / SAMPLE_RATE
        if len(speech) > room and room > 0:
            wpm = min(MAX_WPM, int(np.ceil(DEFAULT_WPM * len(speech) / room)))
            speech = speak(text, voice, wpm)
        cut = len(speech) > room
        if cut:
            speech = speech[:room].copy()
            fade = min(len(speech), int(FADE_S * SAMPLE_RATE))
            speech[len(speech) - fade:] *= np.linspace(1, 0, fade, dtype=np.float32)
        track[start:start + len(speech)] = speech
        info.append({"speech_start": round(start / SAMPLE_RATE, 3), "speech_s": round(natural, 3),
                     "speech_wpm": wpm, "speech_cut": bool(cut)})
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
