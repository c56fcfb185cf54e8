import pytest

from videonarrator import video as vid


def test_read_frames_gives_every_frame(tiny_synthetic):
    root, videos, cfg = tiny_synthetic
    frames, info = vid.read_frames(root / videos[0].video_path)
    assert info.fps == cfg.fps
    assert frames.shape == (round(videos[0].duration * cfg.fps), cfg.frame_size, cfg.frame_size, 3)
    small, _ = vid.read_frames(root / videos[0].video_path, size=32)
    assert small.shape[1:] == (32, 32, 3)


def test_detected_cuts_match_the_generated_ones(tiny_synthetic):
    root, videos, _ = tiny_synthetic
    for v in videos:
        frames, info = vid.read_frames(root / v.video_path)
        cuts = vid.detect_shots(frames, info.fps, threshold=12.0, min_shot_frames=10)
        assert [c / info.fps for c in cuts] == [c.start for c in v.clips[1:]]


def test_missing_empty_and_truncated_files_name_the_file(tiny_synthetic, tmp_path):
    root, videos, _ = tiny_synthetic
    with pytest.raises(vid.VideoError, match="nope.mp4 does not exist"):
        vid.read_frames(tmp_path / "nope.mp4")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(vid.VideoError, match="empty.mp4 is empty"):
        vid.read_frames(empty)
    data = (root / videos[0].video_path).read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 3])
    with pytest.raises(vid.VideoError, match="truncated.mp4"):
        vid.read_frames(truncated)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all" * 100)
    with pytest.raises(vid.VideoError, match="garbage.mp4"):
        vid.read_frames(garbage)


def test_shots_from_cuts_and_merging():
    assert vid.shots_from_cuts([10, 30], 50, 10.0) == [(0.0, 1.0), (1.0, 3.0), (3.0, 5.0)]
    # A 0.5 s shot joins the previous clip; a short first shot joins the next one.
    assert vid.merge_shots([(0, 2), (2, 2.5), (2.5, 5)], 1.0) == [(0, 2.5), (2.5, 5)]
    assert vid.merge_shots([(0, 0.4), (0.4, 3)], 1.0) == [(0, 3)]
    assert vid.merge_shots([(0, 3), (3, 3.5)], 1.0) == [(0, 3.5)]
    assert vid.merge_shots([(0, 0.5)], 1.0) == [(0, 0.5)]


def test_one_frame_per_whole_second():
    assert vid.sample_times(0, 3) == [0.5, 1.5, 2.5]
    assert vid.sample_times(2, 4.9) == [2.5, 3.5]   # floor(2.9 s) = 2 frames
    assert vid.sample_times(1, 1.6) == [1.5]
    assert vid.sample_times(1, 1.4) == [1.2]   # shorter than the half second: its midpoint
    assert vid.frame_index(0.5, 10, 100) == 4 and vid.frame_index(99, 10, 100) == 99


def test_boundary_f1_by_hand():
    # 2 of 3 detections within 0.2 s of the 3 true cuts: P = 2/3, R = 2/3.
    s = vid.boundary_f1([1.0, 2.1, 5.0], [1.0, 2.0, 3.0], 0.2)
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 / 3)
    # A true cut is matched once: two detections near it count one hit.
    assert vid.boundary_f1([1.0, 1.1], [1.0], 0.2)["precision"] == 0.5
    assert vid.boundary_f1([], [], 0.2)["f1"] == 1.0
    assert vid.boundary_f1([], [1.0], 0.2)["f1"] == 0.0


def test_real_video_decodes_and_detects(real_video):
    frames, info = vid.read_frames(real_video, size=96)
    assert info.fps == 25 and len(frames) == info.n_frames > 100
    cuts = vid.detect_shots(frames, info.fps)
    shots = vid.shots_from_cuts(cuts, info.n_frames, info.fps)
    assert shots[0][0] == 0 and shots[-1][1] == pytest.approx(info.duration)


def test_long_shots_are_split_evenly():
    assert vid.split_long_shots([(0, 3), (3, 12)], 4.0) == [(0, 3), (3, 6), (6, 9), (9, 12)]
    assert vid.split_long_shots([(0, 8)], 8.0) == [(0, 8)]
    parts = vid.split_long_shots([(0, 5.28)], 2.0)
    assert [t for span in parts for t in span] == pytest.approx([0, 1.76, 1.76, 3.52, 3.52, 5.28])
