"""The real-data text-side experiment: split by video, knowledge budget, statistics beside the paper."""
from dataclasses import replace
from pathlib import Path

import pytest

from videonarrator import realdata as R
from videonarrator.schema import Clip, Product, Video


def video(vid: str, knowledge: dict[str, list[str]] | None = None) -> Video:
    clips = [Clip(index=0, start=0.0, end=2.0, window=(3, 9), labels=["pain_point"], narration="皮肤干燥怎么办")]
    return Video(id=vid, product=Product("面霜", knowledge or {"功效": ["保湿"]}), clips=clips, language="zh")


def test_split_by_video_is_seeded_order_free_and_covers_every_split():
    videos = [video(f"v{i:02d}") for i in range(20)]
    a = R.split_by_video(videos, 0.1, 0.2, seed=3)
    b = R.split_by_video(list(reversed(videos)), 0.1, 0.2, seed=3)
    assert {v.id: v.split for v in a} == {v.id: v.split for v in b}
    counts = {s: sum(v.split == s for v in a) for s in ("train", "val", "test")}
    assert counts == {"train": 14, "val": 2, "test": 4}
    assert [v.id for v in a] == [v.id for v in videos]          # order and content kept
    assert all(v.split == "train" for v in videos)              # copies: the input is untouched
    c = R.split_by_video(videos, 0.1, 0.2, seed=4)
    assert {v.id: v.split for v in c} != {v.id: v.split for v in a}


def test_split_by_video_rejects_what_cannot_be_split():
    with pytest.raises(ValueError, match="at least 3 videos"):
        R.split_by_video([video("a"), video("b")], 0.1, 0.1, 0)
    with pytest.raises(ValueError, match="not unique"):
        R.split_by_video([video("a"), video("a"), video("b")], 0.1, 0.1, 0)
    with pytest.raises(ValueError, match="leave no training video"):
        R.split_by_video([video(c) for c in "abc"], 0.3, 0.6, 0)


def test_trim_knowledge_takes_items_round_robin_within_the_budget():
    v = video("a", {"成分": ["玻色因", "二裂酵母发酵精粹"], "功效": ["抗初老", "保湿"], "价格": ["买一送一"]})
    # round 1: 玻色因(3) 抗初老(3) 买一送一(4) = 10; round 2: 二裂酵母发酵精粹(8) too long, 保湿(2) -> 12
    t = R.trim_knowledge(v, 12)
    assert t.product.knowledge == {"成分": ["玻色因"], "功效": ["抗初老", "保湿"], "价格": ["买一送一"]}
    assert R.trim_knowledge(v, 2).product.knowledge == {"功效": ["保湿"]}   # a field with nothing kept is dropped
    assert R.trim_knowledge(v, None) is v
    assert v.product.knowledge["成分"] == ["玻色因", "二裂酵母发酵精粹"]     # untouched


def test_statistics_vs_paper_rows():
    stats = {"videos": 2, "clips": 6, "clips_per_video": {"mean": 3.0}, "units_per_second": 5.5,
             "clip_seconds_mean": 4.0}
    rows = {r["statistic"]: r for r in R.statistics_vs_paper(stats)}
    assert rows["clips per video"]["these videos"] == 3.0
    assert rows["clips per video"]["paper"] == pytest.approx(41292 / 6032)
    assert rows["clip seconds (mean)"]["paper"] is None


def test_real_subset_statistics_match_a_hand_count(esync_path):
    from videonarrator.data.esyncvidstory import load_esyncvidstory
    from videonarrator.stats import dataset_statistics

    videos = load_esyncvidstory(esync_path)
    stats = dataset_statistics(videos)
    assert stats["videos"] == 120 and stats["clips"] == 832
    assert stats["reference_in_window"] == 1.0     # windows are the reference length ±3 characters
    split = R.split_by_video(videos, 0.1, 0.2, seed=0)
    assert sum(v.split == "test" for v in split) == 24 and sum(v.split == "val" for v in split) == 12
    trimmed = [R.trim_knowledge(v, 120) for v in videos]
    assert all(sum(len(x) for its in v.product.knowledge.values() for x in its) <= 120 for v in trimmed)
    assert all(replace(t, product=v.product) == v for t, v in zip(trimmed, videos))   # only knowledge changed


def test_every_field_of_the_real_subset_has_an_english_gloss(esync_path):
    from videonarrator.data.esyncvidstory import load_esyncvidstory

    fields = {f for v in load_esyncvidstory(esync_path) for f in v.product.knowledge}
    assert {f for f in fields if R.field_name_en(f) == f} == set()
    assert R.field_name_en("未知字段") == "未知字段"


def official_subset(esync_path, tmp_path, n_videos: int = 5, with_frames: int | None = None):
    """The first ``n_videos`` real records as an annotation file, and fake 1-fps frames for
    the first ``with_frames`` of them (all by default), laid out one folder per video."""
    import json

    import numpy as np
    from PIL import Image

    records = json.loads(Path(esync_path).read_text(encoding="utf-8"))[:n_videos]
    annotations = tmp_path / "subset.json"
    annotations.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    frames_root = tmp_path / "frames"
    rng = np.random.default_rng(0)
    for r in records[: n_videos if with_frames is None else with_frames]:
        for clip in r["images"]:
            for name in clip:
                (frames_root / r["id"]).mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(frames_root / r["id"] / name)
    frames_root.mkdir(exist_ok=True)
    return annotations, frames_root, records


ESV = {"val_fraction": 0.2, "test_fraction": 0.2, "max_knowledge_chars": 60, "steps": 1, "batch_size": 1,
       "checkpoint_every": 0, "eval_every": 1}


def test_prepare_official_links_frames_and_splits_by_video(esync_path, tmp_path):
    from videonarrator.schema import load_dataset

    annotations, frames_root, records = official_subset(esync_path, tmp_path)
    esv = {**ESV, "annotations": str(annotations), "frames_root": str(frames_root)}
    videos, metrics = R.prepare_official(esv, seed=0, out_dir=tmp_path / "processed", progress=False)
    assert [v.id for v in videos] == [r["id"] for r in records]
    assert metrics["videos"] == 5 and metrics["skipped_videos"] == []
    assert sorted(v.split for v in videos) == ["test", "train", "train", "train", "val"]
    again, _ = load_dataset(tmp_path / "processed/dataset.json")
    assert again == videos
    for v, r in zip(videos, records):
        assert [len(c.frames) for c in v.clips] == [len(x) for x in r["images"]]
        for c, names in zip(v.clips, r["images"]):
            for rel, name in zip(c.frames, names):
                assert rel == f"frames/{v.id}/{name}"
                assert (tmp_path / "processed" / rel).read_bytes() == (frames_root / v.id / name).read_bytes()
        assert sum(len(x) for its in v.product.knowledge.values() for x in its) <= 60


def test_prepare_official_names_a_video_without_frames_or_skips_it(esync_path, tmp_path):
    annotations, frames_root, records = official_subset(esync_path, tmp_path, n_videos=5, with_frames=4)
    esv = {**ESV, "annotations": str(annotations), "frames_root": str(frames_root)}
    with pytest.raises(FileNotFoundError, match=f"video '{records[4]['id']}' has no frames under .*esyncvidstory/dvc.yaml"):
        R.prepare_official(esv, 0, tmp_path / "processed", progress=False)
    assert not (tmp_path / "processed").exists()           # nothing half-written
    videos, metrics = R.prepare_official(esv, 0, tmp_path / "processed", skip_bad=True, progress=False)
    assert len(videos) == 4 and [s["id"] for s in metrics["skipped_videos"]] == [records[4]["id"]]
    with pytest.raises(ValueError, match="frames_root is null"):
        R.prepare_official({**esv, "frames_root": None}, 0, tmp_path / "other", progress=False)


# -- reporting with intervals over test videos ---------------------------------------------

def out(text: str, labels):
    from videonarrator.generate import ClipOutput

    return ClipOutput(text=text, labels=labels, raw=text, length=len(text), in_window=True)


def labelled_video(vid: str, labels: list[list[str]], narrations: list[str] | None = None) -> Video:
    narrations = narrations or ["皮肤干燥怎么办"] * len(labels)
    clips = [Clip(index=i, start=2.0 * i, end=2.0 * i + 2, window=(len(n) - 3, len(n) + 3), labels=lab, narration=n)
             for i, (lab, n) in enumerate(zip(labels, narrations))]
    return Video(id=vid, product=Product("面霜", {"功效": ["保湿"]}), clips=clips, language="zh")


def test_label_report_counts_and_intervals_by_hand():
    from videonarrator.evaluate import Narrations

    test = [labelled_video("a", [["pain_point"], ["product_trial", "product_efficacy"]]),
            labelled_video("b", [["pain_point"], ["purchase_guidance"]]),
            labelled_video("c", [["product_trial"]])]
    gen = {"a": [out("", ["pain_point"]), out("", ["product_trial"])],      # 1 of 2 exact (partial multi-label)
           "b": [out("", ["pain_point"]), out("", None)],                    # no parsable label: wrong
           "c": [out("", ["pain_point"])]}
    rep = R.label_report(test, gen, n_boot=200, seed=0)
    assert (rep["label_acc"]["k"], rep["label_acc"]["n"]) == (2, 5) and rep["label_acc"]["value"] == 0.4
    f1 = {k: v["value"] for k, v in rep["label_f1"].items()}
    # pain_point: TP 2, FP 1, FN 0 -> 0.8; product_trial: TP 1, FN 1 -> 2/3; efficacy, guidance: 0
    assert f1 == pytest.approx({"pain_point": 0.8, "product_trial": 2 / 3, "purchase_guidance": 0.0,
                                "product_efficacy": 0.0})
    assert rep["label_f1"]["pain_point"]["support"] == 2 and rep["label_f1"]["pain_point"]["predicted"] == 3
    assert rep["macro_f1"]["value"] == pytest.approx((0.8 + 2 / 3) / 4)
    for m in (rep["label_acc"], rep["macro_f1"], rep["label_f1"]["pain_point"]):
        assert m["lo"] <= m["value"] <= m["hi"]
    assert R.label_report(test, gen, n_boot=200, seed=0) == rep          # seeded: identical on a rerun

    # the paired difference against the position prior uses the same resampled videos
    outputs = {"model": Narrations(given={}, generated=gen),
               "position_prior": Narrations(given={}, generated={v.id: [out("", ["pain_point"])] * len(v.clips)
                                                                 for v in test})}
    report = R.interval_report(outputs, test, n_boot=200, seed=0)
    d = report["differences"]["model - position_prior"]["label_acc"]
    assert d["value"] == pytest.approx(0.4 - 0.4) and d["lo"] <= d["value"] <= d["hi"]
    assert report["systems"]["position_prior"]["label_acc"]["k"] == 2
    table = R.interval_tables(report)
    assert "| model | 0.400 [" in table and "(2/5)" in table and "| pain point | 2 |" in table
    # several references: each labelling system against each of them
    outputs["place_prior"] = Narrations(given={}, generated={v.id: [out("", ["product_trial"])] * len(v.clips)
                                                              for v in test})
    report = R.interval_report(outputs, test, n_boot=50, seed=0, references=("position_prior", "place_prior"))
    assert set(report["differences"]) == {"model - position_prior", "place_prior - position_prior",
                                          "model - place_prior", "position_prior - place_prior"}
    assert "| model - place_prior |" in R.interval_tables(report)


def test_caption_report_on_references_and_on_repeats():
    texts = [["皮肤干燥怎么办呢", "这款面霜很滋润哦"], ["买二送一快来抢购", "成分安全又温和的"]]
    test = [labelled_video(f"v{i}", [["pain_point"]] * 2, t) for i, t in enumerate(texts)]
    perfect = {v.id: [out(c.narration, None) for c in v.clips] for v in test}
    rep = R.caption_report(test, perfect, n_boot=100, seed=0)
    assert rep["ROUGE-L"]["value"] == pytest.approx(1.0) and rep["BLEU-4"]["value"] == pytest.approx(1.0)
    assert rep["sync_in_window"]["value"] == 1.0 and rep["sync_in_window"]["n"] == 4
    assert rep["length_error"]["value"] == 0.0 and rep["repetition"]["value"] == 0.0
    # one narration repeated through each video: every n-gram of its second clip is a repeat
    repeated = {v.id: [out(v.clips[0].narration, None)] * 2 for v in test}
    rep = R.caption_report(test, repeated, n_boot=100, seed=0)
    assert rep["repetition"]["value"] == pytest.approx(0.5)
    assert rep["ROUGE-L"]["lo"] <= rep["ROUGE-L"]["value"] <= rep["ROUGE-L"]["hi"] < 1.0


def test_label_distribution_and_paper_rows():
    videos = [labelled_video("a", [["pain_point"], ["pain_point", "product_trial"]])]
    rows = R.label_distribution(videos)
    assert rows[0] == {"label": "pain point", "name": "痛点铺垫", "clips": 2, "share": 1.0}
    assert rows[1]["clips"] == 1 and rows[1]["share"] == 0.5 and len(rows) == 12
    assert R.field_name_en("售后服务") == "after-sales service"


def test_narration_examples_are_the_best_and_worst_clips_by_rouge():
    texts = ["皮肤干燥怎么办呢", "这款面霜很滋润哦", "买二送一快来抢购"]
    test = [labelled_video("v", [["pain_point"], ["product_efficacy"], ["purchase_guidance"]], texts)]
    given = {"v": [out("皮肤干燥怎么办呢", None), out("完全无关的话", None), out("买二送一快来", None)]}
    rows = R.narration_examples(test, given, n=1)
    assert [(r[""], r["clip"]) for r in rows] == [("best", "1/3"), ("worst", "2/3")]
    assert rows[0]["ROUGE-L"] == 1.0 and rows[1]["ROUGE-L"] == 0.0
    assert rows[0]["reference"] == rows[0]["generated"] == texts[0] and rows[1]["label"] == "产品功效"
    assert rows[0]["product"] == "面霜" and rows[0]["characters (window)"].startswith("8 (")
    assert len(R.narration_examples(test, given, n=5)) == 3                  # every clip once, never twice
