import hashlib
import json
import re
from collections import Counter

import numpy as np

from videonarrator.data import synthetic as syn
from videonarrator.labels import LABELS
from videonarrator.metrics import mentions
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
    """Colour, shape, action and setting are only in the frames: no knowledge item or name may say them."""
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
            said = mentions(c.narration, syn.VISUAL_VOCAB)
            for attr in syn.VISUAL_ATTRS:   # exactly the stated facts, with their true values
                assert said[attr] == ({c.truth[attr]} if attr in c.truth["stated"] else set()), (attr, c.narration)
            stated += len(c.truth["stated"])
    assert stated > 0


def default_records(seed=0):
    cfg = syn.SyntheticConfig(seed=seed)
    rng = np.random.default_rng(cfg.seed)
    videos = [syn.make_video_record(rng, i, cfg) for i in range(cfg.n_videos)]
    syn.assign_splits(videos, cfg, rng)
    return videos


def test_the_default_test_split_holds_hundreds_of_visible_facts():
    for seed in (0, 1):
        test = [v for v in default_records(seed) if v.split == "test"]
        assert syn.fact_count(test) >= 300
    chance = syn.chance_levels(test)
    for attr, vocab in syn.VISUAL_VOCAB.items():   # between a blind uniform guess and certainty
        assert 1 / len(vocab) <= chance[attr] < 1
    assert 0 < chance["visual_facts"] < 1 and chance["label"] == 1 / len(LABELS)


def test_facts_belong_to_the_clip_not_to_earlier_narrations():
    """A stated value was never stated by an earlier reference narration of the same video."""
    for v in default_records()[:40]:
        for i, c in enumerate(v.clips):
            earlier = mentions(" ".join(e.narration for e in v.clips[:i]), syn.VISUAL_VOCAB)
            for attr in c.truth["stated"]:
                assert c.truth[attr] not in earlier[attr]
                assert c.truth["options"][attr] == len(syn.VISUAL_VOCAB[attr]) - len(earlier[attr])


def test_labels_are_not_painted_on():
    """No label <-> setting (background) mapping; props are shared and probabilistic;
    labels needing a knowledge field only occur when the product has it."""
    videos = default_records()
    pairs = Counter((c.labels[0], c.truth["setting"]) for v in videos for c in v.clips)
    for label in LABELS:
        assert len({s for (l, s) in pairs if l == label}) >= 3, label
    for setting in syn.SETTINGS:
        assert len({l for (l, s) in pairs if s == setting}) >= 6, setting
    props = Counter((c.labels[0], c.truth["prop"]) for v in videos for c in v.clips)
    assert props[("safety_certification", None)] > 0 and props[("quality_feature", "badge")] > 0
    for v in videos:
        for label, field in syn.LABEL_NEEDS.items():
            if field not in v.product.knowledge:
                assert all(c.labels != [label] for c in v.clips)
        settings = [c.truth["setting"] for c in v.clips]
        assert all(a != b for a, b in zip(settings, settings[1:]))   # every cut is a scene change
        labels = [c.labels[0] for c in v.clips]
        assert all(a != b for a, b in zip(labels, labels[1:]))
        assert labels[0] in ("product_recommendation", "pain_point")
    assert {v.clips[-1].labels[0] for v in videos} == {"purchase_guidance", "other_selling_points"}


def test_wording_varies_so_no_template_reaches_the_ceiling():
    videos = default_records()[:30]
    first_words: dict[str, set[str]] = {}
    for v in videos:
        for c in v.clips:
            first_words.setdefault(c.labels[0], set()).add(c.narration.split()[0])
    assert all(len(words) >= 2 for words in first_words.values()), first_words
    oracle = syn.template_narrations(videos, seed=0, oracle=True)
    refs = [c.narration for v in videos for c in v.clips]
    hyps = [t for v in videos for t in oracle[v.id]]
    assert sum(h == r for h, r in zip(hyps, refs)) < 0.2 * len(refs)
    # the oracle states the true values, the guesser its guesses (same grammar)
    said = [mentions(h, syn.VISUAL_VOCAB) for h in hyps]
    truth = [c.truth for v in videos for c in v.clips]
    assert all(s[a] <= {t[a]} for s, t in zip(said, truth) for a in syn.VISUAL_ATTRS)
    assert syn.template_narrations(videos, seed=0, oracle=False) == syn.template_narrations(videos, 0, False)


def test_splits_are_by_video_and_nonempty(tiny_synthetic):
    _, videos, _ = tiny_synthetic
    assert {v.split for v in videos} == {"train", "val", "test"}


def test_rendered_frames_show_the_clip_variant_and_setting_not_the_label():
    truth = {"colour": "red", "shape": "square", "action": "on a table", "setting": "in the kitchen",
             "prop": None, "motion": 0.0}
    clip = syn.Clip(index=0, start=0, end=2, window=(1, 5), labels=["pain_point"], narration="x", truth=truth)
    frames = syn.render_clip(clip, size=64, fps=5)
    assert frames.shape == (10, 64, 64, 3) and frames.dtype == np.uint8
    assert tuple(frames[0, 28, 32]) == syn.COLOURS["red"]
    relabelled = syn.Clip(**{**clip.__dict__, "labels": ["product_trial"]})
    assert np.array_equal(frames, syn.render_clip(relabelled, size=64, fps=5))   # the label is not drawn
    moved = syn.Clip(**{**clip.__dict__, "truth": {**truth, "setting": "at the beach"}})
    assert not np.array_equal(frames[0, :4], syn.render_clip(moved, size=64, fps=5)[0, :4])
    for prop in syn.PROPS:   # each prop changes the corner and nothing at the product
        cued = syn.render_clip(syn.Clip(**{**clip.__dict__, "truth": {**truth, "prop": prop}}), size=64, fps=5)
        assert not np.array_equal(cued[0, :16, :16], frames[0, :16, :16]), prop
        assert np.array_equal(cued[0, 20:40, 24:40], frames[0, 20:40, 24:40]), prop


def test_annotations_load_back(tiny_synthetic):
    root, videos, _ = tiny_synthetic
    loaded, meta = load_dataset(root / "annotations.json")
    assert [v.id for v in loaded] == [v.id for v in videos]
    assert meta["visual_vocab"] == json.loads(json.dumps(syn.VISUAL_VOCAB))


def test_a_clip_caption_names_all_four_visible_values_and_real_clips_have_none():
    truth = {"colour": "red", "shape": "square", "action": "on a table", "setting": "in the kitchen",
             "motion": 0.0, "stated": []}
    clip = syn.Clip(index=0, start=0, end=2, window=(1, 5), labels=["pain_point"], narration="x", truth=truth)
    caption = syn.clip_caption(clip)
    assert caption == "red square, on a table, in the kitchen"
    for kind in syn.VISUAL_ATTRS:
        assert syn.phrase_pattern(truth[kind]).search(caption)
    assert syn.clip_caption(syn.Clip(**{**clip.__dict__, "truth": {}})) is None
    assert syn.clip_caption(syn.Clip(**{**clip.__dict__, "truth": {**truth, "shape": "oval"}})) is None
