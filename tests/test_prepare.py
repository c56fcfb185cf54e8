import pytest

from helpers import DEFAULTS
from videonarrator.prepare import align_clips, prepare_dataset
from videonarrator.schema import Clip, load_dataset
from videonarrator.video import VideoError


def test_prepared_clips_match_the_truth(tiny_synthetic, tiny_prepared):
    _, annotated, _ = tiny_synthetic
    out, videos, metrics = tiny_prepared
    assert metrics["shot_boundary_f1"] == 1.0 and metrics["boundary_fallback_videos"] == 0
    assert metrics["videos"] == len(annotated)
    loaded, _ = load_dataset(out / "dataset.json")
    assert loaded == videos
    for a, v in zip(annotated, videos):
        assert [(c.start, c.end) for c in v.clips] == [(c.start, c.end) for c in a.clips]
        assert [c.narration for c in v.clips] == [c.narration for c in a.clips]
        for c in v.clips:
            assert len(c.frames) == int(c.duration)          # one frame per whole second
            assert all((out / f).is_file() for f in c.frames)


def test_align_clips_requires_one_to_one():
    truth = [Clip(index=i, start=s, end=e, window=(1, 3), labels=["pain_point"])
             for i, (s, e) in enumerate([(0, 2), (2, 5)])]
    assert align_clips([(0, 2.1), (2.1, 5)], truth) == [0, 1]
    assert align_clips([(0, 5)], truth) is None                    # a missed cut
    assert align_clips([(0, 1), (1, 2), (2, 5)], truth) is None    # a spurious cut


def test_a_missed_cut_falls_back_to_the_annotation(tiny_synthetic, tmp_path):
    raw, annotated, _ = tiny_synthetic
    videos, metrics = prepare_dataset(annotated[:2], raw, tmp_path / "p",
                                      DEFAULTS.prepare(shot_threshold=250.0), progress=False)
    assert metrics["shot_boundary_recall"] == 0.0
    assert metrics["boundary_fallback_videos"] == 2
    assert [len(v.clips) for v in videos] == [len(v.clips) for v in annotated[:2]]


def copy_with_a_bad_video(tiny_synthetic, tmp_path, n, bad, contents):
    """The first ``n`` raw videos in a new folder, video ``bad`` replaced by ``contents(original bytes)``."""
    raw, annotated, _ = tiny_synthetic
    broken = tmp_path / "raw"
    (broken / "videos").mkdir(parents=True)
    for k, v in enumerate(annotated[:n]):
        data = (raw / v.video_path).read_bytes()
        (broken / v.video_path).write_bytes(contents(data) if k == bad else data)
    return broken, annotated[:n]


def test_a_bad_video_leaves_no_partial_output(tiny_synthetic, tmp_path):
    broken, annotated = copy_with_a_bad_video(tiny_synthetic, tmp_path, 3, 2, lambda d: d[: len(d) // 4])
    out = tmp_path / "processed"
    with pytest.raises(VideoError, match=annotated[2].video_path):
        prepare_dataset(annotated, broken, out, DEFAULTS.prepare(), progress=False)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [broken]


def test_skip_bad_lists_the_bad_video_and_keeps_the_rest(tiny_synthetic, tmp_path):
    broken, annotated = copy_with_a_bad_video(tiny_synthetic, tmp_path, 3, 1, lambda d: b"\x00" * 100)
    videos, metrics = prepare_dataset(annotated, broken, tmp_path / "p", DEFAULTS.prepare(),
                                      progress=False, skip_bad=True)
    assert [v.id for v in videos] == [annotated[0].id, annotated[2].id]
    assert metrics["skipped_videos"][0]["id"] == annotated[1].id
    assert annotated[1].video_path in metrics["skipped_videos"][0]["reason"]
    assert not (tmp_path / "p" / "frames" / annotated[1].id).exists()
