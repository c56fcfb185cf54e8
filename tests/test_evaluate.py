"""Evaluation: baselines without a model, scoring, the results table."""
import pytest

from videonarrator import evaluate as E
from videonarrator.generate import ClipOutput
from videonarrator.schema import text_length


def split(tiny_prepared):
    _, videos, _ = tiny_prepared
    return videos[:4], videos[4:]


def reference_outputs(test, labels_from=None):
    out = {}
    for v in test:
        out[v.id] = [ClipOutput(text=c.narration, labels=list(c.labels), raw=c.narration,
                                length=text_length(c.narration, "en"), in_window=True) for c in v.clips]
    return out


def test_retrieval_uses_training_narrations_with_the_same_label(tiny_prepared):
    train, test = split(tiny_prepared)
    n = E.retrieval_narrations(train, test)
    train_texts = {c.narration: c.labels for v in train for c in v.clips}
    for v in test:
        for c, o in zip(v.clips, n.given[v.id]):
            assert o.text in train_texts
            if any(tc.labels == c.labels for tv in train for tc in tv.clips):
                assert train_texts[o.text] == c.labels
    prior = E.position_prior(train)
    assert set(prior) == set(range(E.POSITION_BINS))
    for v in test:   # generated mode: the label is the position prior's
        for i, o in enumerate(n.generated[v.id]):
            assert o.labels == [prior[E._position_bin(v, i)]]


def test_references_score_perfectly_and_the_majority_bar(tiny_prepared):
    train, test = split(tiny_prepared)
    perfect = E.Narrations(given=reference_outputs(test), generated=reference_outputs(test))
    vocab = [it for v in train + test for its in v.product.knowledge.values() for it in its]
    m = E.score_system(perfect, test, "en", knowledge_vocab=vocab)
    assert m["BLEU-4"] == pytest.approx(1.0, abs=1e-6) and m["ROUGE-L"] == pytest.approx(1.0)
    assert m["sync_in_window"] == 1.0 and m["label_acc"] == 1.0
    assert m["visual_attr_acc"] == 1.0 and m["hallucination_rate"] == 0.0
    majority = E.score_system(E.majority_narrations(train, test), test, "en")
    assert set(majority) == {"label_acc"}
    label = E.majority_label(train)
    share = sum(c.labels == [label] for v in test for c in v.clips) / sum(len(v.clips) for v in test)
    assert majority["label_acc"] == pytest.approx(share)


def test_position_prior_baseline_labels_each_clip_by_its_position(tiny_prepared):
    train, test = split(tiny_prepared)
    n = E.position_prior_narrations(train, test)
    prior = E.position_prior(train)
    assert n.given == {}
    for v in test:
        assert [o.labels for o in n.generated[v.id]] == [[prior[E._position_bin(v, i)]] for i in range(len(v.clips))]
    m = E.score_system(n, test, "en")
    hits = sum(c.labels == [prior[E._position_bin(v, i)]] for v in test for i, c in enumerate(v.clips))
    assert set(m) == {"label_acc"} and m["label_acc"] == pytest.approx(hits / sum(len(v.clips) for v in test))


def test_a_wrong_colour_is_a_hallucination(tiny_prepared):
    train, test = split(tiny_prepared)
    outs = reference_outputs(test)
    v = test[0]
    c = next(c for c in v.clips if "colour" in c.truth["stated"])
    wrong = next(x for x in ("red", "blue") if x != c.truth["colour"])
    text = c.narration.replace(c.truth["colour"], wrong)
    outs[v.id][c.index] = ClipOutput(text=text, labels=c.labels, raw=text, length=1, in_window=True)
    vocab = [it for vv in train + test for its in vv.product.knowledge.values() for it in its]
    m = E.score_system(E.Narrations(outs, {}), test, "en", knowledge_vocab=vocab)
    assert m["visual_attr_acc"] < 1.0 and m["hallucination_rate"] > 0.0


def test_results_table_has_a_row_per_system_and_says_how_each_was_obtained():
    table = E.results_table({"a": {"CIDEr": 1.0, "label_acc": 0.5}, "b": {"label_acc": 0.25}},
                            {"a": "the full model", "b": "a prior"})
    lines = table.splitlines()
    assert lines[0] == "| system | CIDEr | label_acc |"
    assert lines[2] == "| a | 1.000 | 0.500 |" and lines[3] == "| b |  | 0.250 |"
    assert "- **b**: a prior" in table
