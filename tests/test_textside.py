"""The real-data text-side experiment: split by video, knowledge budget, statistics beside the paper."""
from dataclasses import replace

import pytest

from videonarrator import textside as T
from videonarrator.schema import Clip, Product, Video


def video(vid: str, knowledge: dict[str, list[str]] | None = None) -> Video:
    clips = [Clip(index=0, start=0.0, end=2.0, window=(3, 9), labels=["pain_point"], narration="皮肤干燥怎么办")]
    return Video(id=vid, product=Product("面霜", knowledge or {"功效": ["保湿"]}), clips=clips, language="zh")


def test_split_by_video_is_seeded_order_free_and_covers_every_split():
    videos = [video(f"v{i:02d}") for i in range(20)]
    a = T.split_by_video(videos, 0.1, 0.2, seed=3)
    b = T.split_by_video(list(reversed(videos)), 0.1, 0.2, seed=3)
    assert {v.id: v.split for v in a} == {v.id: v.split for v in b}
    counts = {s: sum(v.split == s for v in a) for s in ("train", "val", "test")}
    assert counts == {"train": 14, "val": 2, "test": 4}
    assert [v.id for v in a] == [v.id for v in videos]          # order and content kept
    assert all(v.split == "train" for v in videos)              # copies: the input is untouched
    c = T.split_by_video(videos, 0.1, 0.2, seed=4)
    assert {v.id: v.split for v in c} != {v.id: v.split for v in a}


def test_split_by_video_rejects_what_cannot_be_split():
    with pytest.raises(ValueError, match="at least 3 videos"):
        T.split_by_video([video("a"), video("b")], 0.1, 0.1, 0)
    with pytest.raises(ValueError, match="not unique"):
        T.split_by_video([video("a"), video("a"), video("b")], 0.1, 0.1, 0)
    with pytest.raises(ValueError, match="leave no training video"):
        T.split_by_video([video(c) for c in "abc"], 0.3, 0.6, 0)


def test_trim_knowledge_takes_items_round_robin_within_the_budget():
    v = video("a", {"成分": ["玻色因", "二裂酵母发酵精粹"], "功效": ["抗初老", "保湿"], "价格": ["买一送一"]})
    # round 1: 玻色因(3) 抗初老(3) 买一送一(4) = 10; round 2: 二裂酵母发酵精粹(8) too long, 保湿(2) -> 12
    t = T.trim_knowledge(v, 12)
    assert t.product.knowledge == {"成分": ["玻色因"], "功效": ["抗初老", "保湿"], "价格": ["买一送一"]}
    assert T.trim_knowledge(v, 2).product.knowledge == {"功效": ["保湿"]}   # a field with nothing kept is dropped
    assert T.trim_knowledge(v, None) is v
    assert v.product.knowledge["成分"] == ["玻色因", "二裂酵母发酵精粹"]     # untouched


def test_statistics_vs_paper_rows():
    stats = {"videos": 2, "clips": 6, "clips_per_video": {"mean": 3.0}, "units_per_second": 5.5,
             "clip_seconds_mean": 4.0}
    rows = {r["statistic"]: r for r in T.statistics_vs_paper(stats)}
    assert rows["clips per video"]["this subset"] == 3.0
    assert rows["clips per video"]["paper"] == pytest.approx(41292 / 6032)
    assert rows["clip seconds (mean)"]["paper"] is None


def test_real_subset_statistics_match_a_hand_count(esync_path):
    from videonarrator.data.esyncvidstory import load_esyncvidstory
    from videonarrator.stats import dataset_statistics

    videos = load_esyncvidstory(esync_path)
    stats = dataset_statistics(videos)
    assert stats["videos"] == 120 and stats["clips"] == 832
    assert stats["reference_in_window"] == 1.0     # windows are the reference length ±3 characters
    split = T.split_by_video(videos, 0.1, 0.2, seed=0)
    assert sum(v.split == "test" for v in split) == 24 and sum(v.split == "val" for v in split) == 12
    trimmed = [T.trim_knowledge(v, 120) for v in videos]
    assert all(sum(len(x) for its in v.product.knowledge.values() for x in its) <= 120 for v in trimmed)
    assert all(replace(t, product=v.product) == v for t, v in zip(trimmed, videos))   # only knowledge changed


def test_every_field_of_the_real_subset_has_an_english_gloss(esync_path):
    from videonarrator.data.esyncvidstory import load_esyncvidstory

    fields = {f for v in load_esyncvidstory(esync_path) for f in v.product.knowledge}
    assert {f for f in fields if T.field_name_en(f) == f} == set()
    assert T.field_name_en("未知字段") == "未知字段"
