import hashlib
import json
import re

import numpy as np

from videonarrator.data import synthetic as syn
from videonarrator.labels import LABELS
from videonarrator.schema import load_dataset, text_length


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_same_dataset_and_same_video_bytes(tiny_synthetic, tmp_path):
    root, _, cfg = tiny_synthetic
    again = syn.generate(cfg, tmp_path, progress=False)
    assert (tmp_path / "annotations.json").read_bytes() == (root / "annotations.json").read_bytes()
    for v in again:
        assert sha(tmp_path / v.video_path) == sha(root / v.video_path)


def test_another_seed_changes_the_dataset(tiny_synthetic):
    _, videos, cfg = tiny_synthetic
    rng = np.random.default_rng(cfg.seed + 1)
    other = [syn.make_video_record(rng, i, cfg) for i in range(cfg.n_videos)]
    assert [v.clips[0].narration for v in other] != [v.clips[0].narration for v in videos]


def test_narrations_fit_their_window_and_the_clip_duration(tiny_synthetic):
    _, videos, _ = tiny_synthetic
    for v in videos:
        for c in v.clips:
            n = text_length(c.narration, "en")
            assert c.window == (max(1, n - 3), n + 3)
            assert c.duration == int(c.duration) and 2 <= c.duration <= 3
    # Over many clips the length tracks ~2.5 words per second of video.
    rng = np.random.default_rng(0)
    cfg = syn.SyntheticConfig()
    records = [syn.make_video_record(rng, i, cfg) for i in range(60)]
    errors = [text_length(c.narration, "en") - syn.WORDS_PER_SECOND * c.duration for v in records for c in v.clips]
    assert abs(np.mean(errors)) < 1.0
    assert np.mean(np.abs(errors) <= 2) > 0.9


def test_visible_facts_never_appear_in_the_text_inputs():
    """Colour, shape and action are only in the frames: no knowledge item or name may say them."""
    phrases = [p for values in syn.VISUAL_VOCAB.values() for p in values]
    rng = np.random.default_rng(1)
    cfg = syn.SyntheticConfig()
    for i in range(100):
        v = syn.make_video_record(rng, i, cfg)
        text = " ".join([v.product.name] + [it for items in v.product.knowledge.values() for it in items]).lower()
        for p in phrases:
            assert not re.search(rf"\b{re.escape(p)}\b", text), (p, text)


def test_reference_narrations_state_the_visible_facts_they_claim(tiny_synthetic):
    _, videos, _ = tiny_synthetic
    stated = 0
    for v in videos:
        for c in v.clips:
            for attr in c.truth["stated"]:
                assert c.truth[attr] in c.narration
                stated += 1
    assert stated > 0


def test_each_label_has_its_own_scene_and_neighbours_differ(tiny_synthetic):
    assert set(syn.SCENES) == set(LABELS)
    assert len(set(syn.SCENES.values())) == len(LABELS)
    _, videos, _ = tiny_synthetic
    for v in videos:
        labels = [c.labels[0] for c in v.clips]
        assert all(a != b for a, b in zip(labels, labels[1:]))
        assert labels[-1] == "purchase_guidance"


def test_splits_are_by_video_and_nonempty(tiny_synthetic):
    _, videos, _ = tiny_synthetic
    assert {v.split for v in videos} == {"train", "val", "test"}


def test_rendered_frames_show_the_product_colour_and_label_scene():
    clip = syn.Clip(index=0, start=0, end=2, window=(1, 5), labels=["pain_point"], narration="x",
                    truth={"action": "on a table", "motion": 0.0})
    frames = syn.render_clip(clip, "red", "square", size=64, fps=5)
    assert frames.shape == (10, 64, 64, 3) and frames.dtype == np.uint8
    centre = frames[0, 28, 32]
    assert tuple(centre) == syn.COLOURS["red"]
    other = syn.render_clip(clip.__class__(**{**clip.__dict__, "labels": ["product_trial"]}),
                            "red", "square", size=64, fps=5)
    assert not np.array_equal(frames[0, :4], other[0, :4])  # the background follows the label


def test_annotations_load_back(tiny_synthetic):
    root, videos, _ = tiny_synthetic
    loaded, meta = load_dataset(root / "annotations.json")
    assert [v.id for v in loaded] == [v.id for v in videos]
    assert meta["visual_vocab"] == json.loads(json.dumps(syn.VISUAL_VOCAB))
