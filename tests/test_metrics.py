"""Tests for videonarrator.metrics: hand-computed cases, and coco-caption parity."""
from __future__ import annotations

import math
import random

import pytest
import torch

from videonarrator import metrics
from videonarrator.metrics import (
    bleu, cider, clip_embed, emscore, hallucination_rate, knowledge_scores, label_acc, label_f1,
    length_error, length_slope, load_sentence_encoder, mean_repetition, mentioned_phrases, mentions, meteor, repetition,
    rouge_l, sync_in_window, tokenize, visual_attr_acc,
)
from videonarrator.schema import text_length


# -- tokenisation ---------------------------------------------------------------

def test_tokenize_english_words_lowercased_punctuation_dropped():
    text = "Hello, World! It's a well-made bag -- 100% cotton."
    assert tokenize(text, "en") == ["hello", "world", "it's", "a", "well-made", "bag", "100", "cotton"]
    assert len(tokenize(text, "en")) == text_length(text, "en")


def test_tokenize_chinese_characters_without_space_or_punctuation():
    text = "这款面霜， 很好用！SPF"
    assert tokenize(text, "zh") == ["这", "款", "面", "霜", "很", "好", "用", "s", "p", "f"]


def test_unknown_language_raises():
    with pytest.raises(ValueError, match="unknown language 'fr'"):
        tokenize("bonjour", "fr")


# -- BLEU / ROUGE-L / CIDEr: hand-computed -----------------------------------

def test_bleu_hand_computed():
    # ref "the cat sat on the mat", hyp "the cat sat on a mat" (both 6 words, BP = 1)
    # clipped matches / hyp n-grams: 1-grams 5/6 (all but "a"); 2-grams 3/5
    # (the cat, cat sat, sat on); 3-grams 2/4 (the cat sat, cat sat on); 4-grams 1/3.
    # BLEU-n = geometric mean of the first n precisions.
    s = bleu(["The cat sat on the mat."], ["the cat sat on a mat"], "en")
    assert s["BLEU-1"] == pytest.approx(5 / 6, abs=1e-6)
    assert s["BLEU-2"] == pytest.approx(math.sqrt(5 / 6 * 3 / 5), abs=1e-6)
    assert s["BLEU-3"] == pytest.approx((5 / 6 * 3 / 5 * 2 / 4) ** (1 / 3), abs=1e-6)
    assert s["BLEU-4"] == pytest.approx((5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** (1 / 4), abs=1e-6)


def test_bleu_brevity_penalty_uses_closest_reference_length():
    # hyp "the cat sat" (3 words): every unigram matches -> p1 = 1.
    # refs of length 6 and 2: closest is 2 -> ratio 3/2 >= 1 -> BP = 1 -> BLEU-1 = 1.
    # only the 6-word ref: ratio 3/6 -> BP = exp(1 - 6/3) = e^-1.
    two = bleu([["the cat sat on the mat", "a cat"]], ["the cat sat"], "en")
    one = bleu(["the cat sat on the mat"], ["the cat sat"], "en")
    assert two["BLEU-1"] == pytest.approx(1.0, abs=1e-6)
    assert one["BLEU-1"] == pytest.approx(math.exp(-1), abs=1e-6)


def test_rouge_l_hand_computed():
    # ref "the cat sat on the mat" (6), hyp "the cat on mat" (4): LCS = 4
    # P = 4/4 = 1, R = 4/6; score = (1 + 1.2^2) P R / (R + 1.2^2 P)
    p, r = 1.0, 4 / 6
    expected = (1 + 1.44) * p * r / (r + 1.44 * p)  # = 0.77215...
    assert rouge_l(["the cat sat on the mat"], ["the cat on mat"], "en") == pytest.approx(expected, abs=1e-12)
    # two clips, the second with no overlap -> mean of (expected, 0)
    two = rouge_l(["the cat sat on the mat", "red"], ["the cat on mat", "blue"], "en")
    assert two == pytest.approx(expected / 2, abs=1e-12)


def test_cider_hand_computed():
    # 2 clips, refs "a b" and "c d": every n-gram has df = 1 -> idf = log 2 - log 1 = log 2.
    # clip 2, hyp == ref: 1-gram and 2-gram cosines are 1, 3-/4-grams have no vectors (0);
    #   equal lengths -> no length penalty -> 10 * mean(1, 1, 0, 0) = 5.
    # clip 1, hyp "a": 1-gram vectors h = {a: log2}, r = {a: log2, b: log2}
    #   -> min(h,r) r / (|h| |r|) = log2^2 / (log2 * sqrt(2) log2) = 1/sqrt(2);
    #   no bigrams -> 0; lengths 1 vs 2 words -> penalty exp(-1 / (2 * 36)).
    #   -> 10 * (1/sqrt(2)) * exp(-1/72) / 4.
    clip1 = 10 * (1 / math.sqrt(2)) * math.exp(-1 / 72) / 4
    assert cider(["a b", "c d"], ["a", "c d"], "en") == pytest.approx((clip1 + 5.0) / 2, abs=1e-12)


def test_cider_of_a_single_clip_is_zero():
    # IDF comes from the scored reference set: with one clip, idf = log 1 - log 1 = 0.
    assert cider(["a red bottle"], ["a red bottle"], "en") == 0.0


# -- parity with pycocoevalcap on the same tokens ---------------------------------

def _random_corpus(language: str, n_clips: int, multi_ref: bool, seed: int):
    rng = random.Random(seed)
    if language == "en":
        words = "the a red green round bottle cream is soft skin buy now hand table".split()
        sent = lambda: " ".join(rng.choice(words) for _ in range(rng.randint(1, 12))) + rng.choice([".", "!", ""])
    else:
        chars = list("这款面霜很好用红色圆形瓶子买")
        sent = lambda: "".join(rng.choice(chars) + rng.choice(["", "", "，"]) for _ in range(rng.randint(1, 14)))
    hyps = [sent() for _ in range(n_clips)]
    hyps[0] = "!!!"  # a hypothesis with no tokens at all
    refs = [[sent() for _ in range(rng.randint(1, 3))] if multi_ref else sent() for _ in range(n_clips)]
    return refs, hyps


def _coco_inputs(refs, hyps, language):
    gts = {i: [" ".join(tokenize(x, language)) for x in ([r] if isinstance(r, str) else r)]
           for i, r in enumerate(refs)}
    res = {i: [" ".join(tokenize(h, language))] for i, h in enumerate(hyps)}
    return gts, res


@pytest.mark.parametrize("language,multi_ref,seed", [("en", False, 0), ("en", True, 1), ("zh", False, 2), ("zh", True, 3)])
def test_bleu_rouge_cider_match_pycocoevalcap(language, multi_ref, seed):
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    refs, hyps = _random_corpus(language, 40, multi_ref, seed)
    gts, res = _coco_inputs(refs, hyps, language)
    coco_bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    ours = bleu(refs, hyps, language)
    for k in range(4):
        assert ours[f"BLEU-{k + 1}"] == pytest.approx(coco_bleu[k], abs=1e-6)
    assert rouge_l(refs, hyps, language) == pytest.approx(Rouge().compute_score(gts, res)[0], abs=1e-6)
    assert cider(refs, hyps, language) == pytest.approx(Cider().compute_score(gts, res)[0], abs=1e-6)
    assert cider(refs, hyps, language) > 0  # the comparison is not 0 == 0


def test_caption_metrics_reject_mismatch_and_empty():
    with pytest.raises(ValueError, match="hyps has 2 items but refs has 1"):
        bleu(["a b"], ["a", "b"], "en")
    with pytest.raises(ValueError, match="hyps is empty"):
        rouge_l([], [], "en")
    with pytest.raises(ValueError, match=r"refs\[0\] must be a string or a non-empty list"):
        cider([[]], ["a"], "en")


def test_meteor_raises_clearly_without_java(monkeypatch):
    metrics._meteor_scorer.cache_clear()          # no Java process left from an earlier test
    monkeypatch.setattr(metrics.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="Java"):
        meteor(["a red bottle"], ["a red bottle"], "en")


@pytest.mark.slow
def test_meteor_java_scorer():
    # Starts Java once (about 11 s); the second call reuses the process. Identical text scores
    # high; text sharing no word with the reference scores exactly 0 (no alignment).
    refs = ["a red round bottle is held in a hand", "the green cream feels soft"]
    same = meteor(refs, refs, "en")
    process = metrics._meteor_scorer().meteor_p
    unrelated = meteor(refs, ["zzyx qqwv", "xxkj vvpq"], "en")
    assert 0.5 < same <= 1.0
    assert unrelated == 0.0
    assert metrics._meteor_scorer().meteor_p is process and process.poll() is None
    assert meteor(refs, refs, "en") == same           # a reused process scores the same


# -- synchronisation ----------------------------------------------------------

def test_sync_in_window_and_length_error_hand_computed():
    narrations = ["one two three", "one two three four five", "a"]
    windows = [(2, 4), (2, 4), (0, 0)]
    # lengths 3, 5, 1 -> inside [2,4]? yes; no; [0,0]? no -> 1/3
    assert sync_in_window(narrations, windows, "en") == pytest.approx(1 / 3)
    # centres 3, 3, 0 -> errors 0, +2, +1 -> mean 1.0
    assert length_error(narrations, windows, "en") == pytest.approx(1.0)
    # Chinese: schema.text_length counts every character of "这款面霜，很好用！": 9
    assert sync_in_window(["这款面霜，很好用！", "好用"], [(8, 10), (8, 10)], "zh") == pytest.approx(0.5)
    assert length_error(["这款面霜，很好用！"], [(10, 12)], "zh") == pytest.approx(9 - 11)


def test_length_slope_tells_following_the_window_from_a_constant_length():
    windows = [(2, 4), (6, 8), (10, 12)]                      # midpoints 3, 7, 11
    follows = ["w " * 3, "w " * 7, "w " * 11]
    assert length_slope(follows, windows, "en") == pytest.approx(1.0)
    constant = ["w " * 7] * 3                                   # in the middle window only, whatever was asked
    assert length_slope(constant, windows, "en") == pytest.approx(0.0)
    # lengths 4, 6, 10 on midpoints 3, 7, 11: sum (x - 7)(y - 20/3) / sum (x - 7)^2 = 24 / 32
    assert length_slope(["w " * 4, "w " * 6, "w " * 10], windows, "en") == pytest.approx(0.75)
    assert math.isnan(length_slope(["a", "a b"], [(2, 4), (1, 5)], "en"))   # one midpoint: no slope


def test_sync_rejects_mismatch_and_bad_window():
    with pytest.raises(ValueError, match="narrations has 1 items but windows has 2"):
        sync_in_window(["a"], [(1, 2), (1, 2)], "en")
    with pytest.raises(ValueError, match=r"windows\[0\]"):
        length_error(["a"], [(3, 2)], "en")


# -- storyline labels ---------------------------------------------------------

def test_label_acc_and_f1_hand_computed():
    pred = [["pain_point"], ["pain_point", "product_trial"], ["purchase_guidance"]]
    true = [["pain_point"], ["product_trial"], ["purchase_guidance", "product_efficacy"]]
    # exact set match: clip 0 only -> 1/3
    assert label_acc(pred, true) == pytest.approx(1 / 3)
    # TP = 1 + 1 + 1 = 3, FP = 0 + 1 + 0 = 1, FN = 0 + 0 + 1 = 1 -> 2*3 / (6 + 1 + 1) = 0.75
    assert label_f1(pred, true) == pytest.approx(0.75)
    # order and duplicates do not matter
    assert label_acc([["product_trial", "pain_point", "pain_point"]], [["pain_point", "product_trial"]]) == 1.0


def test_labels_reject_unknown_key_and_mismatch():
    with pytest.raises(ValueError, match=r"unknown script label 'nope' in pred_labels\[0\]"):
        label_acc([["nope"]], [["pain_point"]])
    with pytest.raises(ValueError, match="pred_labels has 1 items but true_labels has 2"):
        label_f1([["pain_point"]], [["pain_point"], ["pain_point"]])


# -- grounding ----------------------------------------------------------------

VOCAB = {
    "colour": ["red", "dark red", "green"],
    "shape": ["round", "square"],
    "action": ["held in a hand", "on a table"],
}


def test_mentioned_phrases_whole_word_longest_match():
    assert mentioned_phrases("A Dark  Red bottle", VOCAB["colour"]) == {"dark red"}
    assert mentioned_phrases("a reddish box", VOCAB["colour"]) == set()
    assert mentioned_phrases("red, not green", VOCAB["colour"]) == {"red", "green"}
    assert mentioned_phrases("一个红色的瓶子", ["红色", "绿色"]) == {"红色"}
    # the longest phrase wins across attributes; a phrase under two attributes counts under both
    vocab = {**VOCAB, "ingredient": ["green tea extract"], "flavour": ["red"]}
    said = mentions("It has Green Tea Extract and a red cap.", vocab)
    assert said == {"colour": {"red"}, "shape": set(), "action": set(),
                    "ingredient": {"green tea extract"}, "flavour": {"red"}}


def test_visual_attr_acc_hand_computed():
    narrations = [
        "A Dark  Red, round bottle.",          # colour dark red ok ("red" inside it ignored), shape ok -> 2/2
        "A reddish green box held in a hand",  # "reddish" is not "red": colour ok, action ok -> 2/2
        "Red or green, on a table.",           # colour ambiguous -> 0; action wrong -> 0 -> 0/2
    ]
    facts = [{"colour": "dark red", "shape": "round"},
             {"colour": "green", "action": "held in a hand"},
             {"colour": "red", "action": "held in a hand"}]
    assert visual_attr_acc(narrations, facts, VOCAB) == pytest.approx(4 / 6)
    # Chinese phrases match inside running Chinese text
    zh_vocab = {"colour": ["红色", "绿色"]}
    assert visual_attr_acc(["一个红色的瓶子", "红色和绿色"], [{"colour": "红色"}, {"colour": "红色"}],
                           zh_vocab) == pytest.approx(1 / 2)


def test_stated_kinds_are_the_fact_kinds_a_narration_names_right_or_wrong():
    narrations = ["A red round bottle held in a hand.", "A green one.", "Nothing to see."]
    facts = [{"colour": "red", "shape": "square"}, {"colour": "red", "action": "on a table"}, {"colour": "red"}]
    assert metrics.stated_kinds(narrations, facts, VOCAB) == [{"colour", "shape"}, {"colour"}, set()]
    assert metrics.stated_kinds(["Dark red."], [{"colour": "red"}], VOCAB) == [{"colour"}]   # "dark red" is a colour


def test_visual_attr_acc_errors():
    with pytest.raises(ValueError, match=r"facts\[0\] has attribute 'size'"):
        visual_attr_acc(["x"], [{"size": "big"}], VOCAB)
    with pytest.raises(ValueError, match=r"facts\[0\]\['colour'\] = 'blue' is not in vocab"):
        visual_attr_acc(["x"], [{"colour": "blue"}], VOCAB)
    with pytest.raises(ValueError, match="nothing to score"):
        visual_attr_acc(["x"], [{}], VOCAB)


def test_hallucination_rate_hand_computed():
    narrations = ["A red round bottle.", "Nothing visual here.", "Dark red, held in a hand."]
    allowed = [{"colour": {"red"}, "shape": {"square"}},  # red ok, round wrong
               {"colour": {"green"}},                     # states nothing
               {"colour": {"Dark Red"}}]                  # dark red ok (case-insensitive), action not allowed
    # stated 4 facts, 2 not allowed -> 0.5
    assert hallucination_rate(narrations, allowed, VOCAB) == pytest.approx(0.5)
    assert hallucination_rate(["Nothing here."], [{}], VOCAB) == 0.0  # nothing stated -> 0.0
    # a knowledge item in vocab claims its span: "green" inside it is no colour claim
    # stated: colour red (ok), ingredient green tea extract (ok) -> 0/2
    vocab = {**VOCAB, "ingredient": ["green tea extract"]}
    ok = [{"colour": {"red"}, "ingredient": {"green tea extract"}}]
    assert hallucination_rate(["A red jar with green tea extract."], ok, vocab) == 0.0
    assert hallucination_rate(["A red jar with green tea extract."], ok, VOCAB) == pytest.approx(1 / 2)
    with pytest.raises(ValueError, match="narrations has 2 items but allowed has 1"):
        hallucination_rate(["a", "b"], [{}], VOCAB)


# -- EMScore ------------------------------------------------------------------

def test_emscore_hand_computed():
    # tokens X (unnormalised) -> x1 = [1, 0], x2 = [0.6, 0.8] (last row = sentence embedding)
    x = torch.tensor([[1.0, 0.0], [3.0, 4.0]])
    # frames -> v1 = [1, 0], v2 = v3 = [0, 1]; video = normalise([1/3, 2/3]) = [1, 2] / sqrt(5)
    v = torch.tensor([[2.0, 0.0], [0.0, 5.0], [0.0, 1.0]])
    coarse = (0.6 * 1 + 0.8 * 2) / math.sqrt(5)  # 0.98387
    # sim = [[1, 0, 0], [0.6, 0.8, 0.8]]: P = mean(1, 0.8) = 0.9, R = mean(1, 0.8, 0.8) = 2.6/3
    p, r = 0.9, 2.6 / 3
    fine = 2 * p * r / (p + r)  # 0.88302
    # reference X* -> r1 = [0, 1], r2 = [1, 0] (sentence [1, 0]); coarse = x2 . r2 = 0.6
    # sim(X, X*) = [[0, 1], [0.8, 0.6]]: P = mean(1, 0.8) = 0.9, R = mean(0.8, 1) = 0.9 -> F = 0.9
    ref = torch.tensor([[0.0, 2.0], [1.0, 0.0]])
    out = emscore(x, v, ref)
    assert out["emscore_xv_coarse"] == pytest.approx(coarse, abs=1e-6)
    assert out["emscore_xv_fine"] == pytest.approx(fine, abs=1e-6)
    assert out["emscore_xv"] == pytest.approx((coarse + fine) / 2, abs=1e-6)
    assert out["emscore_xr_coarse"] == pytest.approx(0.6, abs=1e-6)
    assert out["emscore_xr_fine"] == pytest.approx(0.9, abs=1e-6)
    assert out["emscore_xr"] == pytest.approx(0.75, abs=1e-6)
    assert out["emscore_xvr"] == pytest.approx(((coarse + fine) / 2 + 0.75) / 2, abs=1e-6)


def test_emscore_sentence_embeddings_give_coarse_only():
    out = emscore(torch.tensor([3.0, 4.0]), torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]),
                  torch.tensor([0.0, 1.0]))
    assert set(out) == {"emscore_xv_coarse", "emscore_xv", "emscore_xr_coarse", "emscore_xr", "emscore_xvr"}
    assert out["emscore_xv"] == pytest.approx(2.2 / math.sqrt(5), abs=1e-6)
    assert out["emscore_xr"] == pytest.approx(0.8, abs=1e-6)


def test_emscore_rejects_bad_shapes():
    with pytest.raises(ValueError, match="width 3 != frame_embs width 2"):
        emscore(torch.ones(2, 3), torch.ones(4, 2))
    with pytest.raises(ValueError, match="both as"):
        emscore(torch.ones(2, 3), torch.ones(4, 3), ref_emb=torch.ones(3))


def _tiny_clip(custom_text: bool = False):
    import open_clip

    torch.manual_seed(0)
    vision = open_clip.CLIPVisionCfg(layers=1, width=32, patch_size=8, image_size=32, head_width=16)
    text = open_clip.CLIPTextCfg(context_length=77, vocab_size=49408, width=32, heads=2, layers=1)
    cls = open_clip.CustomTextCLIP if custom_text else open_clip.CLIP
    return cls(embed_dim=16, vision_cfg=vision, text_cfg=text), open_clip.get_tokenizer("ViT-B-32")


def test_clip_embed_token_embeddings_on_tiny_open_clip():
    model, tokenizer = _tiny_clip()
    model.train()
    frames = torch.randn(3, 3, 32, 32)
    texts = ["a red bottle", "buy now"]
    text_embs, frame_embs = clip_embed(model, tokenizer, texts, frames)
    assert model.training  # mode restored
    # [SOS] + 3 words + [EOS], [SOS] + 2 words + [EOS]
    assert [tuple(t.shape) for t in text_embs] == [(5, 16), (4, 16)]
    assert frame_embs.shape == (3, 16)
    model.eval()
    with torch.no_grad():
        glob = model.encode_text(tokenizer(texts), normalize=True)
        img = model.encode_image(frames, normalize=True)
    for t, g in zip(text_embs, glob):
        assert torch.allclose(t.norm(dim=-1), torch.ones(len(t)), atol=1e-5)
        assert torch.allclose(t[-1], g, atol=1e-5)  # last token row = the pooled sentence embedding
    assert torch.allclose(frame_embs, img, atol=1e-5)
    out = emscore(text_embs[0], frame_embs, text_embs[1])
    assert "emscore_xv_fine" in out and math.isfinite(out["emscore_xvr"])


def test_clip_embed_falls_back_to_sentence_embeddings():
    model, tokenizer = _tiny_clip(custom_text=True)
    text_embs, _ = clip_embed(model, tokenizer, ["a red bottle"], torch.randn(2, 3, 32, 32))
    assert tuple(text_embs[0].shape) == (16,)


# -- knowledge relevance / coverage -----------------------------------------

_TOY = {
    "n1": [1.0, 0.0, 0.0], "n2": [0.0, 1.0, 0.0], "n3": [0.0, 0.0, 1.0],
    "k1": [1.0, 0.0, 0.0], "k2": [1.0, 1.0, 0.0], "k3": [0.0, 2.0, 2.0],
}


def _toy_encoder(texts):
    return torch.tensor([_TOY[t] for t in texts])


def test_knowledge_scores_hand_computed():
    # video A: cos(n1,k1)=1, cos(n1,k2)=1/sqrt2, cos(n2,k1)=0, cos(n2,k2)=1/sqrt2
    # video B: cos(n3,k3)=1/sqrt2
    # info_sim = mean(1, 1/sqrt2, 1/sqrt2) = (1 + sqrt2) / 3
    narr, items = [["n1", "n2"], ["n3"]], [["k1", "k2"], ["k3"]]
    s = knowledge_scores(narr, items, _toy_encoder, threshold=0.8)
    assert s["info_sim"] == pytest.approx((1 + math.sqrt(2)) / 3, abs=1e-6)
    # threshold 0.8: A covers k1 only (1/2), B covers nothing (0) -> 0.25
    assert s["info_diverse"] == pytest.approx(0.25)
    # threshold 0.7: everything covered -> 1.0
    assert knowledge_scores(narr, items, _toy_encoder, threshold=0.7)["info_diverse"] == pytest.approx(1.0)


def test_knowledge_scores_errors():
    with pytest.raises(ValueError, match=r"knowledge_items_per_video\[0\] must be a non-empty list"):
        knowledge_scores([["n1"]], [[]], _toy_encoder)
    with pytest.raises(ValueError, match="narrations_per_video has 2 items but knowledge_items_per_video has 1"):
        knowledge_scores([["n1"], ["n2"]], [["k1"]], _toy_encoder)
    with pytest.raises(ValueError, match="expected an"):
        knowledge_scores([["n1"]], [["k1"]], lambda texts: torch.ones(5))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_sentence_encoder("/nonexistent/encoder")


def test_real_sentence_encoder_minilm():
    enc = load_sentence_encoder(batch_size=2)
    texts = ["This cream deeply moisturises dry skin.", "A lotion that hydrates dry skin.", "The train leaves at noon."]
    emb = enc(texts)
    assert emb.shape == (3, 384)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    sim = emb @ emb.T
    assert sim[0, 1] > sim[0, 2] + 0.2  # paraphrase closer than an unrelated sentence
    # batching with padding does not change an embedding (mask-aware mean pooling)
    assert torch.allclose(enc([texts[2]])[0], emb[2], atol=1e-5)
    s = knowledge_scores([[texts[0]]], [["moisturising for dry skin", "price: 99 yuan"]], enc, threshold=0.5)
    assert 0.5 < s["info_sim"] <= 1.0 and s["info_diverse"] == pytest.approx(0.5)


# -- repetition ----------------------------------------------------------------

def test_repetition_hand_computed():
    # bigrams: clip 1 "the cream | cream is | is soft" (3 new);
    # clip 2 "the cream | cream is | is soft" (3 repeated) + "soft and | and light" (2 new) -> 3/8
    story = ["The cream is soft.", "The cream is soft and light."]
    assert repetition(story, "en", n=2) == pytest.approx(3 / 8)
    # repeats inside one narration count too: "good good good", n=1 -> 2 of 3 seen before
    assert repetition(["good good good"], "en", n=1) == pytest.approx(2 / 3)
    # Chinese characters: 好用好用 -> 好用, 用好, 好用 -> 1/3
    assert repetition(["好用，好用"], "zh", n=2) == pytest.approx(1 / 3)
    # no trigram at all -> 0.0; the wrapper averages per video: (3/8 + 0) / 2
    assert repetition(["a b"], "en", n=3) == 0.0
    assert mean_repetition([story, ["a b"]], "en", n=2) == pytest.approx(3 / 16)
    with pytest.raises(ValueError, match="empty"):
        repetition([], "en")


def test_label_macro_f1_averages_per_label_f1():
    from videonarrator.metrics import label_macro_f1

    true = [["pain_point"], ["pain_point"], ["product_trial"], ["product_trial"]]
    pred = [["pain_point"], ["product_trial"], ["product_trial"], ["product_trial"]]
    # pain_point: tp 1, fn 1 -> 2/3; product_trial: tp 2, fp 1 -> 4/5
    assert label_macro_f1(pred, true) == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert label_macro_f1(true, true) == 1.0


def test_per_clip_counts_add_up_to_the_rates():
    from videonarrator.metrics import hallucination_counts, hallucination_rate, visual_attr_acc, visual_attr_hits

    vocab = {"colour": ["red", "blue"], "shape": ["round", "square"]}
    texts = ["a red round one", "a blue square one", "nothing"]
    facts = [{"colour": "red", "shape": "square"}, {"colour": "red"}, {"shape": "round"}]
    hits = visual_attr_hits(texts, facts, vocab)
    assert hits == [{"colour": 1, "shape": 0}, {"colour": 0}, {"shape": 0}]
    assert visual_attr_acc(texts, facts, vocab) == pytest.approx(1 / 4)
    allowed = [{"colour": {"red"}, "shape": {"square"}}, {"colour": {"red"}, "shape": {"square"}}, {}]
    assert hallucination_counts(texts, allowed, vocab) == [(1, 2), (1, 2), (0, 0)]
    assert hallucination_rate(texts, allowed, vocab) == pytest.approx(2 / 4)


def test_knowledge_recall_counts_the_reference_items_a_narration_tells():
    from videonarrator.metrics import knowledge_recall_counts

    vocab = {"colour": ["green"], "knowledge": ["aloe vera", "green tea extract", "vitamin E"]}
    texts = ["With aloe vera and Green Tea Extract.", "A green one.", "Nothing here."]
    used = [["aloe vera", "green tea extract", "vitamin E"], ["green tea extract"], []]
    # the colour green is not the ingredient; an item the reference does not use does not count
    assert knowledge_recall_counts(texts, used, vocab) == [(2, 3), (0, 1), (0, 0)]
    with pytest.raises(ValueError, match="align"):
        knowledge_recall_counts(texts, used[:2], vocab)
