"""Narrations you can hear: espeak-ng speech, spoken_fit, the voice-over muxed into a copy of the video."""
import shutil
from types import SimpleNamespace

import av
import numpy as np
import pytest

from videonarrator import voice

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                reason="espeak-ng is not installed (apt-get install -y espeak-ng; scripts/vn test "
                                       "does it as root): nothing to speak with")


def decoded_voice(path):
    """The voice-over as decoded by FFmpeg, checked to start at time 0 (AAC priming handled by the muxer)."""
    with av.open(str(path)) as c:
        assert next(c.decode(c.streams.audio[0])).pts == 0
    return voice.read_voice(path)


def utterance_starts(samples, min_silence_s=0.33, frame_s=0.01, level=0.02):
    """Onsets (s) of loud stretches that follow at least ``min_silence_s`` of quiet (or the start).

    0.33 s: longer than a pause inside a narration (voice.MAX_PAUSE_S), shorter than voice.GAP_S."""
    n = int(frame_s * voice.SAMPLE_RATE)
    loud = np.abs(samples[:len(samples) // n * n]).reshape(-1, n).max(axis=1) > level
    starts, quiet = [], min_silence_s
    for i, is_loud in enumerate(loud):
        if is_loud and quiet >= min_silence_s:
            starts.append(i * frame_s)
        quiet = 0.0 if is_loud else quiet + frame_s
    return starts


def quiet_before(samples, t):
    """No speech in the 0.3 s before time ``t``, up to 0.05 s before it (AAC spreads a next onset back
    by up to one 1024-sample frame, 46 ms)."""
    a, b = (int((t - d) * voice.SAMPLE_RATE) for d in (0.3, 0.05))
    return np.abs(samples[a:b]).max() < 0.02


def video_packets(path):
    with av.open(str(path)) as c:
        return [(p.pts, p.dts, bytes(p)) for p in c.demux(c.streams.video[0]) if p.dts is not None]


def test_speech_is_trimmed_and_its_length_grows_with_the_text():
    short, long = voice.speak("Soft fleece."), voice.speak("Soft fleece, warm hugs and a bunny for every night.")
    assert 0 < len(short) < len(long)
    assert np.abs(short[:220]).max() > voice.SILENCE < np.abs(short[-220:]).max()   # no silence at either end
    sentences = voice.speak("Meet it. Then buy it! Really? Yes.")              # pauses shortened
    assert utterance_starts(sentences, min_silence_s=voice.MAX_PAUSE_S + 0.02) == [0.0]
    assert len(voice.speak("Soft fleece.", speed=2)) < len(short)               # faster rate, shorter speech
    assert len(voice.speak("这款精华液深层补水。", "zh")) > 0                         # Mandarin voice
    assert len(voice.speak("   ")) == 0
    assert len(voice.speak("-v starts like an option")) > 0                    # text goes on stdin, not argv


def test_spoken_fit_counts_narrations_that_fit_their_clip():
    text = "Meet the soft fleece bunny for every evening at home."
    said = voice.speech_seconds(text)
    assert 10 / 4 < said < 10 / 2                                  # 10 words at about 2.5 words a second
    fit = voice.spoken_fit([text, text, ""], [said + 1, said - 0.5, 1.0], "en")
    assert fit["spoken_fit"] == pytest.approx(2 / 3)              # the empty narration fits too
    assert fit["spoken_overrun_s"] == pytest.approx(0.5 / 3, abs=1e-6)
    with pytest.raises(ValueError, match="2 narrations but 1 clip durations"):
        voice.spoken_fit(["a", "b"], [1.0], "en")
    with pytest.raises(ValueError, match="no espeak-ng voice for language 'fr'"):
        voice.spoken_fit(["a"], [1.0], "fr")


def test_voice_over_starts_each_utterance_at_its_clip_and_copies_the_video(real_video, tmp_path):
    clips = [SimpleNamespace(start=a, end=b) for a, b in ((0.0, 1.76), (1.76, 3.52), (3.52, 5.28))]
    texts = ["Soft fleece bunny", "Hugs all night every night for every child in every home in the land", ""]
    track, info = voice.voice_track(clips, texts, "en", 5.28)
    assert [i["speech_speed"] for i in info[:2]] == [1.0, voice.MAX_SPEEDUP]   # the long one said faster
    assert info[1]["speech_cut"] and not info[0]["speech_cut"] and info[2]["speech_s"] == 0

    out = voice.write_narrated_video(real_video, track, tmp_path / "bunny.narrated.mp4")
    samples = decoded_voice(out)
    assert len(samples) / voice.SAMPLE_RATE == pytest.approx(5.28, abs=0.05)
    starts = utterance_starts(samples)
    assert len(starts) == 2                                       # one per spoken clip, none for the empty one
    for s, clip in zip(starts, clips):
        assert clip.start <= s < clip.start + 0.1
    assert all(quiet_before(samples, clip.end) for clip in clips[:2])   # each utterance ends inside its clip
    assert video_packets(out) == video_packets(real_video)        # video packets copied bit for bit
    with av.open(str(out)) as c, av.open(str(real_video)) as src:
        assert [s.codec_context.name for s in c.streams.audio] == ["aac", "aac"]   # voice, then the film's own
        assert c.streams.audio[0].disposition == av.stream.Disposition.default
        assert [bytes(p) for p in c.demux(c.streams.audio[1]) if p.dts is not None] == \
            [bytes(p) for p in src.demux(src.streams.audio[0]) if p.dts is not None]


def test_bad_inputs_name_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="video .*nothing.mp4 does not exist"):
        voice.write_narrated_video(tmp_path / "nothing.mp4", np.zeros(10, np.float32), tmp_path / "o.mp4")
    with pytest.raises(ValueError, match="2 clips but 1 narrations"):
        voice.voice_track([SimpleNamespace(start=0, end=1)] * 2, ["a"], "en", 2.0)
    monkeypatch.setattr(voice.shutil, "which", lambda name: None)
    with pytest.raises(FileNotFoundError, match="apt-get install -y espeak-ng"):
        voice.espeak_path()


def test_the_evaluation_scores_spoken_fit_for_every_system(tiny_prepared):
    from videonarrator import evaluate as E
    from videonarrator.generate import ClipOutput

    _, videos, _ = tiny_prepared
    clips = [c for v in videos for c in v.clips]
    seconds = [c.end - c.start for c in clips]

    def system(texts):
        it = iter(texts)
        return E.Narrations({v.id: [ClipOutput(text=next(it), labels=None, raw="", length=0, in_window=True)
                                    for _ in v.clips] for v in videos}, {})

    refs = [c.narration for c in clips]
    m = E.score_system(system(refs), videos, "en")
    assert {k: m[k] for k in ("spoken_fit", "spoken_overrun_s")} == voice.spoken_fit(refs, seconds, "en")
    rambling = E.score_system(system([" ".join([t] * 4) for t in refs]), videos, "en")
    assert rambling["spoken_fit"] < m["spoken_fit"] and rambling["spoken_overrun_s"] > m["spoken_overrun_s"]
    assert "spoken_fit" in E.results_table({"reference": m}, {})
