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


def test_retrieval_uses_training_narrations_of_the_same_category_and_label(tiny_prepared):
    train, test = split(tiny_prepared)
    n = E.retrieval_narrations(train, test)
    for v in test:
        same = [tv for tv in train if tv.truth["category"] == v.truth["category"]] or train
        for c, o in zip(v.clips, n.given[v.id]):
            if any(tc.labels == c.labels for tv in same for tc in tv.clips):
                assert o.text in {tc.narration for tv in same for tc in tv.clips if tc.labels == c.labels}
            else:
                assert o.text in {tc.narration for tv in same for tc in tv.clips}
    prior = E.position_prior(train)
    assert set(prior) == set(range(E.POSITION_BINS))
    for v in test:   # generated mode: the label is the position prior's
        for i, o in enumerate(n.generated[v.id]):
            assert o.labels == [prior[E._position_bin(v, i)]]


def test_references_score_perfectly_and_the_majority_bar(tiny_prepared):
    train, test = split(tiny_prepared)
    perfect = E.Narrations(given=reference_outputs(test), generated=reference_outputs(test),
                           free=reference_outputs(test))
    vocab = [it for v in train + test for its in v.product.knowledge.values() for it in its]
    m = E.score_system(perfect, test, "en", knowledge_vocab=vocab)
    assert m["BLEU-4"] == pytest.approx(1.0, abs=1e-6) and m["ROUGE-L"] == pytest.approx(1.0)
    assert m["sync_in_window"] == 1.0 and m["label_acc"] == 1.0
    # a window is its reference's length +- 3 (at least 1), so references follow the windows
    assert m["sync_in_window_free"] == 1.0 and m["length_slope_free"] > 0.8
    assert m["visual_attr_acc"] == 1.0 and m["hallucination_rate"] == 0.0
    used = sum(len(c.truth["knowledge_used"]) for v in test for c in v.clips)
    assert m["knowledge_n"] == used and m.get("knowledge_recall", 1.0) == 1.0 and (used == 0) == ("knowledge_recall" not in m)
    majority = E.score_system(E.majority_narrations(train, test), test, "en")
    assert {k.split("_")[0] for k in majority} == {"label"}
    label = E.majority_label(train)
    share = sum(c.labels == [label] for v in test for c in v.clips) / sum(len(v.clips) for v in test)
    assert majority["label_acc"] == pytest.approx(share)
    assert majority["label_n"] == sum(len(v.clips) for v in test)
    assert majority["label_acc_lo"] <= majority["label_acc"] <= majority["label_acc_hi"]
    assert m["visual_attr_n"] == sum(len(c.truth["stated"]) for v in test for c in v.clips)
    assert m["label_macro_f1"] == 1.0


def test_position_prior_baseline_labels_each_clip_by_its_position(tiny_prepared):
    train, test = split(tiny_prepared)
    n = E.position_prior_narrations(train, test)
    prior = E.position_prior(train)
    assert n.given == {}
    with_text = E.position_prior_narrations(train, test, with_text=True)
    train_texts = {c.narration for v in train for c in v.clips}
    assert all(o.text in train_texts and o.labels is None for outs in with_text.given.values() for o in outs)
    for v in test:
        assert [o.labels for o in n.generated[v.id]] == [[prior[E._position_bin(v, i)]] for i in range(len(v.clips))]
    m = E.score_system(n, test, "en")
    hits = sum(c.labels == [prior[E._position_bin(v, i)]] for v in test for i, c in enumerate(v.clips))
    assert m["label_acc"] == pytest.approx(hits / sum(len(v.clips) for v in test))


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
    assert m["visual_attr_acc_colour"] < 1.0 and m["stated_facts_n"] >= m["visual_attr_n"]


def test_each_row_has_its_own_chance_from_the_facts_it_states(tiny_prepared):
    from videonarrator.data.synthetic import VISUAL_VOCAB

    train, test = split(tiny_prepared)
    vocab = vocab_of(train + test)
    facts = [(c, a) for v in test for c in v.clips for a in c.truth["stated"]]
    expected = sum(1 / len(VISUAL_VOCAB[a]) for _, a in facts) / len(facts)
    perfect = E.score_system(E.Narrations(reference_outputs(test), {}), test, "en", knowledge_vocab=vocab)
    assert perfect["visual_attr_stated"] == 1.0 and perfect["visual_attr_chance"] == pytest.approx(expected)
    assert perfect["visual_attr_above_chance"] == pytest.approx(1 - expected)
    assert perfect["visual_attr_above_chance_lo"] > 0
    # every visible value swapped for another of its kind: all facts stated, none right, chance unchanged
    outs = reference_outputs(test)
    for v in test:
        for c in v.clips:
            text = c.narration
            for a in c.truth["stated"]:
                other = next(x for x in VISUAL_VOCAB[a] if x != c.truth[a])
                text = text.replace(c.truth[a], other)
            outs[v.id][c.index] = ClipOutput(text=text, labels=c.labels, raw=text, length=1, in_window=True)
    wrong = E.score_system(E.Narrations(outs, {}), test, "en", knowledge_vocab=vocab)
    assert wrong["visual_attr_acc"] == 0.0 and wrong["visual_attr_chance"] == pytest.approx(expected)
    assert wrong["visual_attr_above_chance_hi"] < 0
    # stating nothing: no fact can be hit, so the row's own chance is 0 too
    silent = {v.id: [ClipOutput(text="Buy it.", labels=c.labels, raw="", length=2, in_window=True) for c in v.clips]
              for v in test}
    nothing = E.score_system(E.Narrations(silent, {}), test, "en", knowledge_vocab=vocab)
    assert nothing["visual_attr_stated"] == nothing["visual_attr_chance"] == nothing["visual_attr_above_chance"] == 0
    d = E.paired_differences({"text_only": E.Narrations(silent, {}), "videonarrator": E.Narrations(outs, {})},
                             test, vocab)
    assert "visual_attr_acc_diff_text_only" in d["videonarrator"]
    assert not any(k.startswith(("visual_attr_chance", "visual_attr_stated")) for k in d["videonarrator"])


def test_results_table_has_a_row_per_system_and_says_how_each_was_obtained():
    table = E.results_table({"a": {"CIDEr": 1.0, "label_acc": 0.5}, "b": {"label_acc": 0.25}},
                            {"a": "the full model", "b": "a prior"})
    lines = table.splitlines()
    assert lines[0] == "| system | CIDEr | label_acc |"
    assert lines[2] == "| a | 1.000 | 0.500 |" and lines[3] == "| b |  | 0.250 |"
    assert "- **b**: a prior" in table


def vocab_of(videos):
    return [it for v in videos for its in v.product.knowledge.values() for it in its]


def test_template_rows_sanity_oracle_below_perfect_guess_not_above_oracle(tiny_prepared):
    train, test = split(tiny_prepared)
    vocab = vocab_of(train + test)
    rows, descriptions = E.reference_rows(train, test, seed=0, synthetic=True)
    assert set(rows) == {"template_guess", "template_oracle", "position_prior", "majority_label", "retrieval"}
    assert set(descriptions) == set(rows)
    perfect = E.score_system(E.Narrations(reference_outputs(test), {}), test, "en", knowledge_vocab=vocab)
    oracle = E.score_system(rows["template_oracle"], test, "en", knowledge_vocab=vocab)
    guess = E.score_system(rows["template_guess"], test, "en", knowledge_vocab=vocab)
    assert oracle["CIDEr"] < 0.8 * perfect["CIDEr"]   # wording varies: the grammar is not the reference
    assert guess["visual_attr_acc"] <= oracle["visual_attr_acc"]
    assert oracle["hallucination_rate"] == 0.0 < guess["hallucination_rate"]


def test_chance_row_is_the_generator_rule_with_counts_and_intervals(tiny_prepared):
    from videonarrator.data import synthetic as syn

    _, test = split(tiny_prepared)
    m = E.chance_metrics(test)
    assert m["visual_attr_acc"] == pytest.approx(syn.chance_levels(test)["visual_facts"])
    assert m["visual_attr_n"] == syn.fact_count(test)
    assert m["label_acc"] == pytest.approx(1 / 12) and m["label_acc_lo"] == pytest.approx(1 / 12)
    assert 0 < m["label_macro_f1"] < 1 / 12 + 1e-9


def test_paired_differences_to_text_only(tiny_prepared):
    train, test = split(tiny_prepared)
    vocab = vocab_of(train + test)
    perfect = E.Narrations(reference_outputs(test), reference_outputs(test))
    outputs = {"text_only": E.retrieval_narrations(train, test), "videonarrator": perfect}
    d = E.paired_differences(outputs, test, vocab, seed=0)
    base = E.score_system(outputs["text_only"], test, "en", knowledge_vocab=vocab)
    key = "visual_attr_acc_diff_text_only"
    assert d["videonarrator"][key] == pytest.approx(1.0 - base["visual_attr_acc"])
    assert d["videonarrator"][key + "_lo"] <= d["videonarrator"][key] <= d["videonarrator"][key + "_hi"]
    assert E.paired_differences(outputs, test, vocab, baseline="missing") == {}
    table = E.results_table({"videonarrator": base}, {}, d)
    assert "Paired differences to `text_only`" in table and "(n=" in table


def test_controls_swap_or_blank_the_frames():
    import torch

    from videonarrator.dataset import VisualInputs
    from videonarrator.schema import Clip, Product, Video

    def video(vid, n):
        clips = [Clip(index=i, start=i, end=i + 1, window=(1, 3), labels=["pain_point"]) for i in range(n)]
        return Video(id=vid, product=Product("p"), clips=clips)

    test = [video("a", 3), video("b", 2)]
    visual = {v.id: VisualInputs(clips=[torch.full((1, 2, 4), float(k * 10 + i)) for i in range(len(v.clips))],
                                 kept=[[0]] * len(v.clips), totals=[1] * len(v.clips)) for k, v in enumerate(test)}
    shuffled = E.shuffled_visual(test, visual)
    assert [float(c[0, 0, 0]) for c in shuffled["a"].clips] == [10.0, 11.0, 10.0]   # b's clips, cycled
    assert [float(c[0, 0, 0]) for c in shuffled["b"].clips] == [0.0, 1.0]
    with pytest.raises(ValueError, match="two test videos"):
        E.shuffled_visual(test[:1], visual)
    blank = E.blank_visual(test, torch.zeros(1, 2, 4))
    assert len(blank["a"].clips) == 3 and all(float(c.abs().sum()) == 0 for c in blank["a"].clips)


class ChatTokenizer:
    """A stand-in for a tokenizer with a chat template (the real one is SmolLM2's, not in the tests)."""
    chat_template = "x"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert not tokenize and add_generation_prompt
        return "<s>user\n" + messages[0]["content"] + "</s>\n<s>assistant\n"


def test_zero_shot_prompt_has_the_chat_template_output_format_and_label_list(tiny_prepared):
    from videonarrator.labels import LABELS, format_labels
    from videonarrator.prompt import build_clip_prompt

    _, videos, _ = tiny_prepared
    v = videos[0]
    options = E.zero_shot_options(ChatTokenizer())
    assert options.chat == ("<s>user\n", "</s>\n<s>assistant\n") and options.instructions
    given = build_clip_prompt(v, 1, "given", options=options)
    assert given.prefix.startswith("<s>user\nProduct:") and given.suffix.endswith("<s>assistant\nNarration:")
    assert "one line of" in given.suffix
    generated = build_clip_prompt(v, 1, "generated", options=options)
    assert generated.suffix.endswith("<s>assistant\n") and generated.target.startswith("Label:")
    assert all(format_labels([k], "en") in generated.suffix for k in LABELS)
    # the prefix stays append-only from clip to clip (the generation's KV cache relies on it)
    nxt = build_clip_prompt(v, 2, "given", options=options)
    assert nxt.prefix.startswith(given.prefix)
    plain = build_clip_prompt(v, 1, "given")   # the trained narrator's own format is unchanged
    assert "<s>" not in plain.prefix + plain.suffix and "one line of" not in plain.suffix


def test_no_position_leaves_no_position_in_the_prompt(tiny_prepared):
    import re

    from helpers import DEFAULTS
    from videonarrator.prompt import PromptOptions, build_clip_prompt

    cfg = DEFAULTS.model("no_position", vision_shape=(4, 16))
    assert not cfg.use_position and not cfg.position_text
    _, videos, _ = tiny_prepared
    v = videos[0]
    p = build_clip_prompt(v, 2, "given", options=PromptOptions(position_text=cfg.position_text))
    assert "Clip" not in p.suffix and not re.search(r"^\d+\. ", p.prefix, re.M)
    assert "Clip 3/" in build_clip_prompt(v, 2, "given").suffix   # the full model keeps it
