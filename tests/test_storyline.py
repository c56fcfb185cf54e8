"""The text-side storyline probe of real data: count priors, linear probes, the report and its command."""
import json

import pytest
import yaml

from videonarrator import storyline as S
from videonarrator.schema import Clip, Product, Video


def video(vid: str, labels: list[list[str]], fields=("功效",), split: str = "train") -> Video:
    clips = [Clip(index=i, start=2.0 * i, end=2.0 * i + 2, window=(3, 9), labels=ls, narration=f"第{i}段文字")
             for i, ls in enumerate(labels)]
    return Video(id=vid, product=Product("面霜", {f: ["保湿"] for f in fields}), clips=clips, language="zh",
                 split=split)


# a storyline the place decides: recommendation first, efficacy in the middle, purchase guidance last;
# twelve clips, so the position prior's first and last bins hold two clips of different labels each
PLACED = [["product_recommendation"]] + [["product_efficacy"]] * 10 + [["purchase_guidance"]]


def test_count_prior_takes_the_most_frequent_label_set_per_key_and_falls_back_to_the_overall_one():
    train = [video("a", [["pain_point"], ["product_trial", "product_efficacy"]]),
             video("b", [["pain_point"], ["product_trial", "product_efficacy"]]),
             video("c", [["product_recommendation"], ["product_efficacy"]])]
    by_index = S.count_prior(train, lambda v, i: i)
    assert by_index(video("t", [[], [], []])) == [("pain_point",), ("product_efficacy", "product_trial"),
                                                  ("pain_point",)]   # index 2 unseen: the most frequent set
    majority = S.count_prior(train, lambda v, i: None)
    assert majority(video("t", [[]])) == [("pain_point",)]            # first of the tied sets seen


def test_ends_caps_the_clips_before_and_after():
    v = video("a", [["pain_point"]] * 9)
    assert [S.ends(v, i) for i in (0, 1, 4, 8)] == [(0, 3), (1, 3), (3, 3), (3, 0)]


def test_hashed_bigrams_are_deterministic_and_normed():
    a = S.hashed_bigrams("保湿补水保湿")
    assert a == S.hashed_bigrams("保湿补水保湿") and len(a) == S.HASH_DIM
    assert sum(x * x for x in a) == pytest.approx(1.0)
    assert S.hashed_bigrams("一") == [0.0] * S.HASH_DIM                 # no bigram: zeros, no division by 0


def test_linear_probe_learns_a_label_that_the_place_decides():
    train = [video(f"v{i}", PLACED) for i in range(6)]
    predict = S.linear_probe(train, S.feature_sets(train)["place"])
    assert predict(video("t", PLACED)) == [tuple(ls) for ls in PLACED]


def test_storyline_report_scores_every_predictor_and_chooses_on_val():
    train = [video(f"tr{i}", PLACED) for i in range(8)]
    val = [video(f"va{i}", PLACED, split="val") for i in range(3)]
    test = [video(f"te{i}", PLACED, split="test") for i in range(4)]
    report = S.storyline_report(train, val, test, n_boot=50, seed=0)
    rows = report["rows"]
    assert list(rows)[0] == "position_prior" and "test_minus_position_prior" not in rows["position_prior"]
    assert rows["place_prior"]["test"]["value"] == 1.0 and rows["place_prior"]["test"]["n"] == 48
    assert rows["position_prior"]["test"]["k"] == 40       # bins 0 and 4 (ties: first seen) miss clips 1 and 11
    assert rows["majority_label"]["test"]["k"] == 40                                 # efficacy: the ten middle clips
    assert rows["place_prior"]["val"]["value"] == 1.0
    assert report["chosen"] == "place_prior"            # the first of the perfect rows on val (ties: the simpler)
    d = rows["place_prior"]["test_minus_position_prior"]
    assert d["value"] == pytest.approx(8 / 48) and d["lo"] == d["hi"] == pytest.approx(8 / 48)
    assert "| `place_prior` (best on val) |" in S.storyline_table(report)
    with pytest.raises(ValueError, match="train, val and test"):
        S.storyline_report(train, [], test)


@pytest.mark.slow
def test_storyline_command_on_the_real_subset(esync_path, tmp_path):
    from videonarrator.params import load_params

    params = load_params("params.yaml")
    params["esyncvidstory"]["n_boot"] = 20
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    assert S.main(["--root", str(tmp_path), "--annotations", str(esync_path)]) == 0
    report = json.loads((tmp_path / "reports/probe_labels/esyncvidstory.json").read_text())
    assert report["videos"]["train"] + report["videos"]["val"] + report["videos"]["test"] == 120
    rows = report["rows"]
    assert rows["position_prior"]["test"]["n"] == rows["place_prior"]["test"]["n"] > 0
    assert report["chosen"] in rows
    assert "best on val" in (tmp_path / "reports/probe_labels/esyncvidstory.md").read_text()


def test_place_prior_narrations_are_a_label_only_row():
    train = [video(f"tr{i}", PLACED) for i in range(3)]
    test = [video("te", PLACED[:5] + PLACED[-1:], split="test")]
    rows = S.place_prior_narrations(train, test)
    assert rows.given == {}
    assert [o.labels for o in rows.generated["te"]] == [["product_recommendation"]] + [["product_efficacy"]] * 4 + [
        ["purchase_guidance"]]
    assert all(o.text == "" for o in rows.generated["te"])
