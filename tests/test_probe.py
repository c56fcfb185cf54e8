from dataclasses import replace

import pytest
import torch

from helpers import DEFAULTS, make_tiny_llm
from test_model import CFG, LORA, P, W
from videonarrator.dataset import VisualInputs
from videonarrator.model import VideoNarrator
from videonarrator.probe import KINDS, choices, fact_versions, probe, table
from videonarrator.prompt import build_clip_prompt
from videonarrator.schema import Clip, Product, Video

# true values are never the first of their kind's vocabulary (a tie picks the first version)
NARR = [("This red square model, on a table at the beach.", {"colour": "red", "shape": "square",
         "action": "on a table", "setting": "at the beach"}),
        ("Meet it. The blue triangular one, with sparkles.", {"colour": "blue", "shape": "triangular",
                                                              "action": "with sparkles", "setting": "in a studio"}),
        ("Try it today.", {"colour": "red", "shape": "square"})]


def make_video(vid: str, colours: tuple[str, str, str]) -> Video:
    clips = []
    for i, ((text, truth), colour) in enumerate(zip(NARR, colours)):
        text, truth = text.replace(truth["colour"], colour), {**truth, "colour": colour}
        stated = [k for k in KINDS if k in truth and truth[k] in text]
        clips.append(Clip(index=i, start=3.0 * i, end=3.0 * (i + 1), window=(2, 12), labels=["pain_point"],
                          narration=text, truth={**truth, "stated": stated}))
    return Video(id=vid, product=Product("Lumo lamp", {"quality": ["never flickers"]}), clips=clips)


VIDEOS = [make_video("a", ("red", "blue", "red")), make_video("b", ("green", "red", "red"))]


def visual(seed: int) -> VisualInputs:
    g = torch.Generator().manual_seed(seed)
    clips = [torch.randn(2, P, W, generator=g) for _ in range(3)]
    return VisualInputs(clips=clips, kept=[[0, 1]] * 3, totals=[2] * 3)


def test_fact_versions_rewrite_the_stated_words_only():
    facts = fact_versions(VIDEOS[0], 0)
    assert [(k, v) for k, v, _ in facts] == [("colour", "red"), ("shape", "square"), ("action", "on a table"),
                                             ("setting", "at the beach")]
    kind, value, versions = facts[0]
    assert versions[value] == VIDEOS[0].clips[0].narration and len(versions) == 6
    assert versions["purple"] == "This purple square model, on a table at the beach."
    assert [k for k, _, _ in fact_versions(VIDEOS[0], 1)] == ["colour", "shape", "action"]   # setting not said
    assert fact_versions(VIDEOS[0], 2) == []                                                  # nothing visible said


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    corpus = [build_clip_prompt(v, i, mode="given").text() for v in VIDEOS for i in range(3)] * 10
    llm = make_tiny_llm(tmp_path_factory.mktemp("llm") / "tiny", corpus)
    torch.manual_seed(0)
    return VideoNarrator.from_llm(replace(CFG), llm, lora=LORA).eval()


def test_choices_count_what_the_scores_prefer(model, monkeypatch):
    """A scorer that always prefers 'red': right exactly on the red facts, whatever the frames."""
    def says_red(batch):
        texts = [model.tokenizer.decode(s.target_ids) for s in batch.samples]
        return torch.tensor([1.0 if "red" in t else 0.0 for t in texts])
    monkeypatch.setattr(model, "target_logprobs", says_red)
    counts = choices(model, VIDEOS, {v.id: visual(k) for k, v in enumerate(VIDEOS)}, progress=False)
    assert counts["colour"] == [(1, 2), (1, 2)]       # a: red, blue; b: green, red
    assert counts["shape"] == counts["action"] == [(0, 2), (0, 2)]     # ties: the first value, never the true one
    assert counts["setting"] == [(0, 1), (0, 1)]


def test_caption_choice_scores_every_kind_of_each_captioned_clip(model, monkeypatch):
    """The caption side: every kind of each clip that has a caption (clips 0 and 1; clip 2's truth
    lacks action and setting), after the frames alone; a scorer preferring 'blue' is right on the
    blue clips' colour only."""
    from videonarrator.probe import caption_versions

    kind, value, versions = caption_versions(VIDEOS[0], 1)[0]
    assert (kind, value, versions["blue"]) == ("colour", "blue", "blue triangular, with sparkles, in a studio")
    assert caption_versions(VIDEOS[0], 2) == []
    seen = []

    def says_blue(batch):
        texts = [model.tokenizer.decode(s.target_ids) for s in batch.samples]
        seen.extend(texts)
        return torch.tensor([1.0 if "blue" in t else 0.0 for t in texts])
    monkeypatch.setattr(model, "target_logprobs", says_blue)
    own = {v.id: visual(k) for k, v in enumerate(VIDEOS)}
    counts = choices(model, VIDEOS, own, progress=False, target="caption")
    assert counts["colour"] == [(1, 2), (0, 2)]        # a: red, blue; b: green, red
    assert counts["shape"] == counts["action"] == counts["setting"] == [(0, 2), (0, 2)]
    assert not any("Lumo lamp" in t or "never flickers" in t for t in seen)   # the target is the caption only
    report = probe(model, VIDEOS, own, n_boot=10, progress=False, target="caption")
    assert report["all"]["own"]["n"] == report["all"]["shuffled"]["n"] == 2 * 2 * 4
    with pytest.raises(ValueError, match="frames only"):
        choices(model, VIDEOS, None, progress=False, target="caption")


def test_probe_report_has_counts_intervals_chance_and_the_control(model):
    own = {v.id: visual(k) for k, v in enumerate(VIDEOS)}
    report = probe(model, VIDEOS, own, n_boot=20, progress=False)
    assert set(report) == {"colour", "shape", "action", "setting", "all"}
    assert report["all"]["own"]["n"] == report["all"]["shuffled"]["n"] == 2 * (4 + 3)
    assert report["colour"]["chance"] == pytest.approx(1 / 6)
    assert 0 <= report["all"]["own"]["value"] <= 1 and "own_minus_shuffled" in report["all"]
    assert "| all |" in table(report)
    text_only = VideoNarrator.from_llm(replace(CFG, use_video=False), model.tokenizer.name_or_path, lora=LORA).eval()
    assert "shuffled" not in probe(text_only, VIDEOS, None, n_boot=5, progress=False)["all"]
    with pytest.raises(ValueError, match="own_visual"):
        probe(model, VIDEOS, None, n_boot=5, progress=False)


def test_free_decoding_compares_own_and_reference_story_and_the_frames(model, monkeypatch):
    """A fake narrator that states every fact right only after the reference story and with the
    video's own frames: the report must show both effects, with counts."""
    from videonarrator import generate
    from videonarrator.probe import decoding_table, free_decoding

    own = {v.id: visual(k) for k, v in enumerate(VIDEOS)}

    def fake(model, videos, visual_by_video, cfg, progress=True):
        assert cfg.mode == "given"
        right = cfg.story == "reference"
        out = {}
        for v in videos:
            sees = visual_by_video[v.id] is own[v.id]
            out[v.id] = [generate.ClipOutput(text=c.narration if right and sees else "Try it.", labels=c.labels,
                                             raw="", length=0, in_window=True) for c in v.clips]
        return out
    monkeypatch.setattr(generate, "narrate_videos", fake)
    report = free_decoding(model, VIDEOS, own, DEFAULTS.generation(), n_boot=20)
    facts = 2 * (4 + 3)
    assert report["reference story"]["value"] == 1.0 and report["reference story"]["n"] == facts
    assert report["own story"]["value"] == 0.0 and report["reference story, shuffled frames"]["k"] == 0
    kinds = {k.split(": ")[1] for k in report if ": " in k}
    assert kinds and all(report[f"reference story: {kind}"]["value"] == 1.0 for kind in kinds)
    assert sum(report[f"own story: {kind}"]["n"] for kind in kinds) == facts
    assert report["reference story - own story"]["value"] == 1.0
    assert report["reference story - reference story, shuffled frames"]["value"] == 1.0
    assert "| reference story | 1.00 [1.00, 1.00] (14/14) |" in decoding_table(report)
    # CIDEr of each run's text against the references: the references themselves score far above "Try it."
    cider = {run: report[f"CIDEr, {run}"]["value"] for run in ("own story", "reference story")}
    assert cider["reference story"] > 5 * cider["own story"] > 0
    assert f"| CIDEr, own story | {cider['own story']:.3f} |" in decoding_table(report)


def test_feature_probe_names_the_values_the_features_encode():
    """Features that carry the colour (one dimension per colour) and the prop (one more) and
    nothing about the shape: the probe names every test clip's colour and prop and stays near
    chance on the shape; the label, set by the prop and the clip's place, it names from both."""
    from videonarrator.data.synthetic import VISUAL_VOCAB
    from videonarrator.probe import feature_probe, feature_table

    g = torch.Generator().manual_seed(0)
    colours, shapes = VISUAL_VOCAB["colour"], VISUAL_VOCAB["shape"]

    def video(k: int) -> tuple[Video, VisualInputs]:
        clips, tokens = [], []
        for i in range(3):
            truth = {"colour": colours[(k + i) % 6], "shape": shapes[int(torch.randint(3, (1,), generator=g))],
                     "prop": (None, "tag")[(k + i) % 2]}
            label = "appraisal_display" if truth["prop"] else "purchase_guidance" if i == 2 else "pain_point"
            clips.append(Clip(index=i, start=i, end=i + 1.0, window=(2, 8), labels=[label],
                              narration="Look.", truth=truth))
            x = torch.randn(2, P, W, generator=g)
            x[:, 0, colours.index(truth["colour"])] += 10.0
            x[:, 0, 6] += 10.0 * (truth["prop"] == "tag")
            tokens.append(x)
        return (Video(id=f"v{k}", product=Product("p", {}), clips=clips),
                VisualInputs(clips=tokens, kept=[[0, 1]] * 3, totals=[2] * 3))
    made = [video(k) for k in range(60)]
    visual = {v.id: vis for v, vis in made}
    train, test = [v for v, _ in made[:40]], [v for v, _ in made[40:]]
    report = feature_probe(train, test, visual, n_boot=50)
    assert set(report) == {"colour", "shape", "prop", "label (features + place)"}   # kinds without truth: left out
    assert report["label (features + place)"]["value"] >= 0.9     # the place alone: about half
    assert report["prop"]["value"] == 1.0 and report["prop"]["chance"] == pytest.approx(1 / 9)  # "none" or a prop
    assert report["colour"]["value"] == 1.0 and report["colour"]["n"] == 60
    assert report["shape"]["value"] < 0.6 and report["shape"]["chance"] == pytest.approx(1 / 3)
    assert "| colour | 1.00" in feature_table(report)


def test_label_choice_splits_by_place_and_sets_the_position_prior_beside_it(model, monkeypatch):
    """A fake narrator that gets the first and last clip's label right and says purchase guidance
    in the middle: the report splits it by place, with counts, beside the position prior (here
    always right: every training clip is a pain point) and the paired difference."""
    from videonarrator import generate
    from videonarrator.probe import clip_place, label_choice, label_table

    def fake(model, videos, visual_by_video, cfg, progress=True):
        assert cfg.mode == "generated" and cfg.story == "reference"
        return {v.id: [generate.ClipOutput(text="", raw="", length=0, in_window=True,
                                           labels=c.labels if clip_place(v, i) != "middle" else ["purchase_guidance"])
                       for i, c in enumerate(v.clips)] for v in videos}
    monkeypatch.setattr(generate, "narrate_videos", fake)
    report = label_choice(model, VIDEOS, VIDEOS, None, DEFAULTS.generation(), n_boot=20)
    assert [report[p]["model"]["k"] for p in ("first", "middle", "last", "all")] == [2, 0, 2, 4]
    assert report["all"]["model"]["n"] == 6 and report["all"]["position_prior"]["k"] == 6
    assert report["middle"]["model_minus_prior"]["value"] == -1.0
    assert report["middle"]["chosen"] == {"purchase_guidance": 2}
    assert report["all"]["prop_place_prior"]["k"] == 6                  # no props here: the place decides
    assert "| middle | 0.00 [0.00, 0.00] (0/2) | 1.00 [1.00, 1.00] (2/2) | -1.00" in label_table(report)


def test_prop_place_prior_reads_the_prop_and_falls_back_to_the_place():
    from videonarrator.probe import prop_place_prior

    def video(vid, props_labels):
        clips = [Clip(index=i, start=2.0 * i, end=2.0 * (i + 1), window=(2, 8), labels=[label], narration="Hi there.",
                      truth={"prop": prop} if prop != "-" else {}) for i, (prop, label) in enumerate(props_labels)]
        return Video(id=vid, product=Product("Cream", {"ingredients": ["aloe"]}), clips=clips)
    train = [video("t1", [("-", "pain_point"), ("gear", "production_process"), (None, "appraisal_display"),
                          ("tag", "purchase_guidance")]),
             video("t2", [("-", "pain_point"), ("badge", "safety_certification"), (None, "appraisal_display"),
                          ("tag", "purchase_guidance")])]
    test = [video("x", [("-", "pain_point"), ("badge", "quality_feature"), ("gear", "quality_feature"),
                        ("arrow", "product_efficacy"), (None, "purchase_guidance")])]
    assert prop_place_prior(train, test)["x"] == [["pain_point"], ["safety_certification"], ["production_process"],
                                                  ["appraisal_display"], ["purchase_guidance"]]
