"""Subtitles: exact SRT/WebVTT output, strict parsing, FFmpeg (PyAV) opening, fuzzing."""
import math
import tempfile
import unicodedata
from pathlib import Path

import av
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from videonarrator.schema import Clip
from videonarrator.subtitles import (Cue, cues_from_clips, parse_srt, parse_webvtt, read_subtitles, to_srt,
                                     to_webvtt, wrap_text, write_subtitles)


def make_clips(bounds):
    return [Clip(index=i, start=s, end=e, window=(1, 10), labels=["product_recommendation"])
            for i, (s, e) in enumerate(bounds)]


CLIPS = make_clips([(0.0, 2.5), (2.5, 5.04), (5.04, 9.0)])
NARRATIONS = [
    "Meet the new Aqua bottle.",
    "It keeps drinks cold\n\nfor 24 hours --> all day & night.",
    "Order today and get a second bottle at half price, while stocks last.",
]

EXPECTED_SRT = """\
1
00:00:00,000 --> 00:00:02,500
Meet the new Aqua bottle.

2
00:00:02,500 --> 00:00:05,040
It keeps drinks cold for 24
hours -> all day & night.

3
00:00:05,040 --> 00:00:09,000
Order today and get a second bottle
at half price, while stocks last.
"""

EXPECTED_VTT = """\
WEBVTT

00:00:00.000 --> 00:00:02.500
Meet the new Aqua bottle.

00:00:02.500 --> 00:00:05.040
It keeps drinks cold for 24
hours --&gt; all day &amp; night.

00:00:05.040 --> 00:00:09.000
Order today and get a second bottle
at half price, while stocks last.
"""


def test_exact_srt_and_webvtt():
    cues = cues_from_clips(CLIPS, NARRATIONS)
    assert to_srt(cues) == EXPECTED_SRT
    assert to_webvtt(cues) == EXPECTED_VTT


def test_cue_timing_equals_clip_boundaries():
    cues = cues_from_clips(CLIPS, NARRATIONS)
    assert [(c.start, c.end) for c in cues] == [(c.start, c.end) for c in CLIPS]
    for parse, fmt in ((parse_srt, to_srt), (parse_webvtt, to_webvtt)):
        assert [(c.start, c.end) for c in parse(fmt(cues))] == [(0.0, 2.5), (2.5, 5.04), (5.04, 9.0)]


def test_empty_narration_gets_no_cue_and_counts_must_match():
    cues = cues_from_clips(CLIPS, ["One.", "  \n ", "Three."])
    assert [(c.start, c.text) for c in cues] == [(0.0, "One."), (5.04, "Three.")]
    with pytest.raises(ValueError, match="3 clips but 2 narrations"):
        cues_from_clips(CLIPS, ["a", "b"])


def test_split_long_narration_at_sentences_proportionally():
    clip = make_clips([(10.0, 16.0)])
    text = "Short one. This second sentence is quite a bit longer. End!"
    cues = cues_from_clips(clip, [text], max_chars_per_cue=30)
    assert [c.text for c in cues] == ["Short one.", "This second sentence is quite a bit longer.", "End!"]
    assert cues[0].start == 10.0 and cues[-1].end == 16.0
    assert all(a.end == b.start for a, b in zip(cues, cues[1:]))  # consecutive, inside the clip
    total = sum(len(c.text) for c in cues)
    for c in cues:  # duration proportional to length
        assert c.end - c.start == pytest.approx(6.0 * len(c.text) / total)
    # sentences that fit together are packed; "3.5" is not a sentence end
    packed = cues_from_clips(clip, ["It weighs 3.5 kg. Light. Strong."], max_chars_per_cue=25)
    assert [c.text for c in packed] == ["It weighs 3.5 kg. Light.", "Strong."]
    # Chinese sentence ends need no space
    zh = cues_from_clips(clip, ["这款水杯很轻。保温二十四小时！现在下单。"], max_chars_per_cue=8)
    assert [c.text for c in zh] == ["这款水杯很轻。", "保温二十四小时！", "现在下单。"]
    assert cues_from_clips(clip, [text]) == [Cue(10.0, 16.0, text)]  # default: one cue per clip


def test_wrap_text_two_lines_at_most():
    assert wrap_text("short") == ["short"]
    lines = wrap_text("word " * 30 + "end")  # 153 characters: still two lines, nothing lost
    assert len(lines) == 2 and " ".join(lines) == "word " * 30 + "end"
    assert abs(len(lines[0]) - len(lines[1])) <= 5
    zh = "这" * 50
    assert wrap_text(zh) == ["这" * 25, "这" * 25]
    assert all(len(x) <= 42 for x in wrap_text("a" * 20 + " " + "b" * 20 + " " + "c" * 20))


def test_round_trip_ms_precision():
    cues = [Cue(0.0, 1.25, "one"), Cue(1.25, 3.001, "two & <three>"), Cue(3600.5, 3725.999, "an hour later")]
    assert parse_srt(to_srt(cues)) == cues
    assert parse_webvtt(to_webvtt(cues)) == cues
    # rounding never makes touching cues overlap
    near = [Cue(0.0, 1.0004, "a"), Cue(1.0004, 2.0, "b"), Cue(2.0005, 3.0, "c")]
    assert [(c.start, c.end) for c in parse_srt(to_srt(near))] == [(0.0, 1.0), (1.0, 2.0), (2.001, 3.0)]


def test_writer_refuses_bad_cues():
    with pytest.raises(ValueError, match="cue 2 starts at 0.5 s, before cue 1 ends"):
        to_srt([Cue(0, 1, "a"), Cue(0.5, 2, "b")])
    with pytest.raises(ValueError, match="cue 1: end 1.0 s is not after start 1.0 s"):
        to_webvtt([Cue(1.0, 1.0, "a")])
    with pytest.raises(ValueError, match="cue 1 .* has no text"):
        to_srt([Cue(0, 1, " \n\n\x00 ")])
    with pytest.raises(ValueError, match="finite"):
        to_srt([Cue(0, float("nan"), "a")])


def test_write_subtitles_by_suffix(tmp_path):
    cues = cues_from_clips(CLIPS, NARRATIONS)
    assert write_subtitles(cues, tmp_path / "a.srt").read_text(encoding="utf-8") == EXPECTED_SRT
    assert write_subtitles(cues, tmp_path / "b.VTT").read_text(encoding="utf-8") == EXPECTED_VTT
    assert read_subtitles(tmp_path / "a.srt") == parse_srt(EXPECTED_SRT)
    with pytest.raises(ValueError, match=r"c\.txt: unknown suffix '\.txt'; use \.srt or \.vtt"):
        write_subtitles(cues, tmp_path / "c.txt")
    with pytest.raises(ValueError, match="no cues"):
        write_subtitles([], tmp_path / "d.srt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.srt", "b.VTT"]  # no temporaries left


GOOD_SRT = "1\n00:00:01,000 --> 00:00:02,000\nhi\n\n2\n00:00:02,000 --> 00:00:03,000\nthere\n"


@pytest.mark.parametrize("text, message", [
    ("00:00:01,000 --> 00:00:02,000\nhi\n", r"cue 1 \(line 1\): missing index"),
    ("1\n00:00:01.000 --> 00:00:02,000\nhi\n", r"cue 1 \(line 2\): bad timing line"),
    ("1\n00:00:01,000 --> 00:00:61,000\nhi\n", r"cue 1 \(line 2\): bad timing line"),
    ("1\n00:00:02,000 --> 00:00:01,000\nhi\n", r"cue 1 \(line 2\): end time is not after start"),
    ("1\n00:00:01,000 --> 00:00:01,000\nhi\n", r"cue 1 \(line 2\): end time is not after start"),
    (GOOD_SRT.replace("00:00:02,000 --> 00:00:03", "00:00:01,500 --> 00:00:03"), r"cue 2 \(line 6\): .* overlap"),
    (GOOD_SRT.replace("\n2\n", "\n1\n"), r"cue 2 \(line 5\): index 1 out of sequence; expected 2"),
    (GOOD_SRT.replace("\n2\n", "\nx\n"), r"cue 2 \(line 5\): expected the index 2"),
    ("1\n00:00:01,000 --> 00:00:02,000\n\n", r"cue 1 \(line 2\): no text"),
    ("1\n", r"cue 1 \(line 2\): missing timing line"),
])
def test_parse_srt_rejects(text, message):
    with pytest.raises(ValueError, match=message):
        parse_srt(text)


GOOD_VTT = "WEBVTT\n\n00:00:01.000 --> 00:00:02.000\nhi\n\n00:00:02.000 --> 00:00:03.000\nthere\n"


@pytest.mark.parametrize("text, message", [
    (GOOD_VTT.replace("WEBVTT", "WEBVT"), "line 1: missing 'WEBVTT' header"),
    (GOOD_VTT.replace("00:00:01.000 -->", "00:00:01,000 -->"), r"cue 1 \(line 3\): bad timing line"),
    (GOOD_VTT.replace("00:00:02.000\nhi", "00:00:00.500\nhi"), r"cue 1 \(line 3\): end time is not after start"),
    (GOOD_VTT.replace("00:00:02.000 --> 00:00:03", "00:00:01.500 --> 00:00:03"), r"cue 2 \(line 6\): .* overlap"),
    (GOOD_VTT.replace("hi", "a --> b"), r"cue 1 \(line 4\): cue text contains '-->'"),
])
def test_parse_webvtt_rejects(text, message):
    with pytest.raises(ValueError, match=message):
        parse_webvtt(text)


def test_parse_accepts_standard_variants():
    assert parse_srt(GOOD_SRT.replace("\n", "\r\n")) == [Cue(1, 2, "hi"), Cue(2, 3, "there")]
    vtt = ("\ufeffWEBVTT - ads\nKind: captions\n\nNOTE a comment\n\nintro\n01:00.000 --> 01:02.500 line:0\n"
           "&lt;b&gt; &amp; x\n")
    assert parse_webvtt(vtt) == [Cue(60.0, 62.5, "<b> & x")]


def ffmpeg_packets(path: Path) -> list[tuple[float, float, str]]:
    """(start s, end s, payload) of every subtitle packet FFmpeg's demuxer finds."""
    with av.open(str(path)) as container:
        assert len(container.streams.subtitles) == 1, f"FFmpeg sees no subtitle stream in {path}"
        stream = container.streams.subtitles[0]
        tb = stream.time_base
        return [(float(p.pts * tb), float((p.pts + p.duration) * tb), bytes(p).decode("utf-8"))
                for p in container.demux(stream) if p.size > 0]  # the last packet is an empty flush


def test_ffmpeg_opens_both_formats(tmp_path):
    """The 'opens in a standard player' check: FFmpeg's SRT/WebVTT demuxers and decoders read our files."""
    cues = cues_from_clips(CLIPS, NARRATIONS)
    for name in ("a.srt", "a.vtt"):
        path = write_subtitles(cues, tmp_path / name)
        packets = ffmpeg_packets(path)
        assert [(s, e) for s, e, _ in packets] == [(c.start, c.end) for c in CLIPS]
        blocks = [b for b in path.read_text().split("\n\n") if "-->" in b]
        written = [b.split("-->", 1)[1].split("\n", 1)[1].rstrip("\n") for b in blocks]  # text after timing
        assert [t for _, _, t in packets] == written  # the payload is the cue's text as written
        with av.open(str(path)) as container:
            decoded = [sub.dialogue.decode() for pkt in container.demux(container.streams.subtitles[0])
                       if pkt.size > 0 for sub in pkt.decode()]
        assert decoded[0] == "Meet the new Aqua bottle."
        assert decoded[2] == "Order today and get a second bottle\nat half price, while stocks last."
    # the WebVTT decoder undoes our escapes: the viewer sees '-->' and '&'
    assert decoded[1] == "It keeps drinks cold for 24\nhours --> all day & night."


# -- fuzzing ---------------------------------------------------------------------

TRICKY = st.sampled_from(["", " ", "-->", "--->", "a\n\nb", "\r\n", "1\n00:00:01,000 --> 00:00:02,000\nx",
                          "WEBVTT", "NOTE x", "<b>&amp;</b>", "42", "\x00\x1f\x7f", "\u2028", "这是中文。"])
TEXT = st.one_of(st.text(min_size=1, max_size=120), st.text(max_size=120), TRICKY,
                 st.text(alphabet=st.sampled_from(list("ab -->\n\r&<;0123:,.\t")), min_size=1, max_size=60))
# durations under 1 ms (after rounding) and blank texts must be refused; keep most lists valid
DURATION = st.one_of(st.floats(0.0005, 5), st.floats(0, 0.002))
CUE_PARTS = st.lists(st.tuples(st.floats(0, 5), DURATION, TEXT), max_size=6)


def _ms(t):
    return math.floor(t * 1000 + 0.5)


def _visible(text):
    return "".join(ch for ch in text if not ch.isspace() and unicodedata.category(ch) not in ("Cc", "Cs"))


@settings(max_examples=150, deadline=None)
@given(CUE_PARTS)
def test_fuzz_write_parse_and_ffmpeg_open(parts):
    cues, t = [], 0.0
    for gap, duration, text in parts:  # non-overlapping by construction
        cues.append(Cue(t + gap, t + gap + duration, text))
        t += gap + duration
    should_fail = (not cues or any(not _visible(c.text) or _ms(c.end) <= _ms(c.start) for c in cues))
    with tempfile.TemporaryDirectory() as tmp:
        parsed = {}
        for suffix, parse in ((".srt", parse_srt), (".vtt", parse_webvtt)):
            path = Path(tmp) / f"subs{suffix}"
            try:
                write_subtitles(cues, path)
            except ValueError as err:
                assert should_fail, f"unexpected refusal: {err}"
                assert "cue" in str(err)
                continue
            assert not should_fail, "a bad cue list was written"
            got = parse(path.read_text(encoding="utf-8"))
            parsed[suffix] = got
            assert [(c.start, c.end) for c in got] == [(_ms(c.start) / 1000, _ms(c.end) / 1000) for c in cues]
            for back in got:
                lines = back.text.split("\n")
                assert 1 <= len(lines) <= 2 and all(lines), back.text
            packets = ffmpeg_packets(path)
            assert [(s, e) for s, e, _ in packets] == [(c.start, c.end) for c in got]
            if suffix == ".srt":
                assert [p for _, _, p in packets] == [c.text for c in got]
                assert all("-->" not in c.text for c in got)
        if parsed:
            for cue, vtt, srt in zip(cues, parsed[".vtt"], parsed[".srt"]):
                assert _visible(vtt.text) == _visible(cue.text)  # WebVTT keeps every visible character
                if "-->" not in vtt.text:
                    assert srt.text == vtt.text
