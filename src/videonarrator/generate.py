"""Narrating videos clip by clip: KV-cache reuse, batching across videos, length control.

Clip i's prompt holds the narrations the model wrote for clips < i (the story
so far), so a video is narrated autoregressively, one clip after the other.
In "given" mode the clip's labels come from the data.  In "generated" mode the
model first chooses the clip's label line among valid candidates by likelihood
(see *Generated storyline* below), then writes the narration after it, and
:func:`prompt.parse_generated` reads both.

KV-cache reuse
--------------
The prompt is ``[prefix][visual][suffix]`` and the prefix of clip i+1 is the
prefix of clip i plus one story line.  Per video we keep the LLM's keys and
values of the prefix tokens (one ``(1, H_kv, L_prefix, d)`` pair per layer).
For the next clip we tokenise its prefix, keep the cached tokens it starts
with (normally all of them) and feed only the rest -- the new story line --
followed by the visual and suffix embeddings, in one forward pass on top of
the cached prefix.  From that pass we cut out the keys/values of the prefix
tokens as the video's new prefix cache; the visual, suffix and generated part
lives only in the per-clip working cache and is dropped with it.

Batching: B videos' clip i are decoded together.  A batch may mix passes
(:func:`narrate_passes`): the same or other videos under another storyline
mode, length control or visual input (the evaluation's rows and controls share
one model's weights), so one forward pass serves all of them.  Their caches and new tokens
differ in length, so each row is laid out as

    [pad][cached prefix] [pad][new story line + visual + suffix] [generated ...]

with a 2-D attention mask over cache + new tokens that is 0 on the pads, and
explicit position ids that skip the pads (the cached prefix sits at positions
0..Lc-1, the new tokens continue from Lc).  transformers builds the causal
mask from cache indices and uses the position ids only for RoPE, so pads in
the middle are exact.  ``reencode=True`` is the naive path: no cache is kept
and every clip's full ``[prefix][visual][suffix]`` is encoded from scratch,
through the same code (an empty cache).  Both paths feed the model the same
token ids (the cached tokens are checked against the fresh tokenisation), so
greedy decoding gives the same text up to floating-point rounding.  Only
full-attention caches are supported for reuse (no sliding-window layers).

Decoding
--------
We drive the loop ourselves: repetition penalty (HF's rule, over the tokens
generated for this clip, as ``generate(inputs_embeds=...)`` does), the length
rule below, then greedy (``temperature == 0``) or sampling from
``softmax(logits / temperature)`` with a ``torch.Generator`` seeded from
``(seed, video id, clip index, candidate)``: results do not depend on which
videos share a batch.  Finished rows leave the batch.

Length control (units: words for English, characters for Chinese, see
:func:`schema.text_length`; only the narration counts -- in generated mode the
text after ``Narration:``).  With the clip's window [lo, hi]:

1. Minimum length: while the narration has fewer than ``lo`` units, EOS and
   every token whose text holds a line break are blocked (logit -inf); before the
   ``Narration:`` marker (generated mode) only EOS is blocked.
2. Sentence stop: decoding stops right after the first token that makes the
   narration end with ``. ! ? 。 ！ ？`` once it has at least ``lo`` units
   (a ``.`` right after a whole number does not count: "19." may become "19.99").
3. Maximum length: English -- once the narration has at least ``hi`` words,
   decoding stops at the next token that begins with whitespace, and that
   token is dropped, so the last word is whole.  Chinese -- stop as soon as the
   narration has ``hi`` characters (a token may carry a few, so it can
   overshoot slightly).  Never inside a half-decoded multi-byte character.
4. The narration is one line: a line break after it ends decoding (line
   breaks as ``str.splitlines`` sees them, like :func:`prompt.parse_generated`).
5. The model's own EOS ends decoding; so does ``max_new_tokens``.  These two
   are the only ends that may fall inside a word (rules 2-4 never do);
   ``ClipOutput.stop`` says which rule ended each narration.
Nothing is truncated afterwards.  With ``num_candidates > 1`` (needs
``temperature > 0``) that many candidates are sampled per clip and the one
inside the window with the best mean log-probability (the model's own,
before penalty and temperature) is kept; if none is inside, the one closest
to the window.  ``length_control=False`` turns rules 1-3 off (an ablation).

Generated storyline
-------------------
A free-running label line is often no label at all (a small model writes a
phrase of its own, or skips the line), which would leave the clip without a
storyline.  So the label is chosen, not written: after the prompt, every
candidate continuation ``Label: <labels>\\nNarration:`` (the 12 labels, plus the
multi-label sets of ``GenerationConfig.label_candidates``) is scored by the
model's summed log-probability, the most likely one is fed as if the model had
written it, and decoding goes on from there.  A narrator with a label head
(``model.label_head``: the clip's frames where it sees video, and its place) chooses by the
head instead (:func:`candidate_scores`), and only the chosen line is scored by the LLM: the
LLM then narrates after the head's label line.  The choice ignores temperature
and repetition penalty (it is the model's own most likely label line), so it is
the same for every candidate narration of a clip.  All candidates of a row are
scored in one pass on top of its cache, laid out as a token trie under a 4D
mask (:func:`_score_continuations`); on real data (62 candidate label sets,
prompts of about 800 tokens) this scoring was most of generated mode's time.

``GenerationConfig.story = "reference"`` puts the data's narrations, not the
model's own, in the story so far: a diagnostic (``probe --side decode``) of
what the model's own earlier words cost it.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from .dataset import VisualInputs, clip_sample
from .labels import LABELS, check_label, format_labels, label_candidates
from .model import ClipBatch, VideoNarrator, pad_embeds
from .progress import progress_bar
from .prompt import MODES, TEMPLATES, ClipPrompt, build_clip_prompt, parse_generated
from .schema import Video, text_length

SENTENCE_END = ".!?。！？"
STOPS = ("eos", "sentence", "max_length", "newline", "max_new_tokens")
STORIES = ("own", "reference")


@dataclass
class GenerationConfig:
    """Built from params' ``evaluate`` section (and ``train.seed``) by :class:`config.Settings`."""
    max_new_tokens: int              # reference: 100
    temperature: float               # 0 = greedy; reference: 0.1
    repetition_penalty: float        # reference: 1.1 (1.0 = off)
    num_candidates: int              # > 1: sample that many and rerank by the window (needs temperature > 0)
    seed: int
    batch_size: int                  # narrations decoded together (a video in one pass)
    mode: str = "given"              # "given" | "generated" storyline (a caller's choice, not a param)
    length_control: bool = True      # False: no min-length block, no sentence / max-length stops
    reencode: bool = False           # True: no KV-cache reuse, every clip's prompt encoded from scratch
    # the story so far in clip i's prompt: "own" (what the model wrote for clips < i: the task) or
    # "reference" (the data's narrations: a diagnostic of how much the model's own earlier words cost)
    story: str = "own"
    # generated mode: the label sets chosen among (None: the 12 single labels; see labels.label_candidates)
    label_candidates: tuple[tuple[str, ...], ...] | None = None

    def check(self) -> "GenerationConfig":
        if self.mode not in MODES:
            raise ValueError(f"GenerationConfig.mode must be one of {MODES}, got {self.mode!r}")
        if self.story not in STORIES:
            raise ValueError(f"GenerationConfig.story must be one of {STORIES}, got {self.story!r}")
        if self.max_new_tokens < 1 or self.batch_size < 1 or self.num_candidates < 1:
            raise ValueError(f"max_new_tokens ({self.max_new_tokens}), batch_size ({self.batch_size}) and "
                             f"num_candidates ({self.num_candidates}) must be >= 1")
        if self.temperature < 0 or self.repetition_penalty <= 0:
            raise ValueError(f"temperature must be >= 0 (got {self.temperature}) and repetition_penalty > 0 "
                             f"(got {self.repetition_penalty})")
        if self.num_candidates > 1 and self.temperature == 0:
            raise ValueError("num_candidates > 1 needs temperature > 0: greedy candidates would all be the same")
        if self.label_candidates is not None:
            if not self.label_candidates or not all(self.label_candidates):
                raise ValueError("GenerationConfig.label_candidates must be None or a non-empty list of "
                                 "non-empty label sets (see labels.label_candidates)")
            for keys in self.label_candidates:
                for k in keys:
                    check_label(k, "GenerationConfig.label_candidates")
        return self


@dataclass
class ClipOutput:
    text: str                        # the narration
    labels: list[str] | None         # given mode: the data's labels; generated mode: the chosen labels
    raw: str                         # what the model wrote (EOS and a dropped last token excluded)
    length: int                      # text_length(text) in the video's unit
    in_window: bool                  # lo <= length <= hi
    stop: str = ""                   # why decoding ended: one of STOPS
    mean_logprob: float = 0.0        # mean log-probability of the kept tokens (and EOS)
    prompt: ClipPrompt | None = field(default=None, repr=False)  # the prompt used (story so far included)


# -- length control (pure functions of the decoded text) ------------------------------------

def _narration_marker(language: str) -> re.Pattern:
    # as prompt.parse_generated reads it: "Narration:" / "narration :" at the start of a line
    word = TEMPLATES[language].narration.rstrip(":：")
    return re.compile(r"^\s*" + re.escape(word) + r"\s*[:：]\s*", re.IGNORECASE)


_MARKERS = {lang: _narration_marker(lang) for lang in TEMPLATES}


def has_line_break(text: str) -> bool:
    """Any of the characters ``str.splitlines`` breaks at (\\n, \\r, \\x0b, \\x85, ...), as parse_generated does."""
    return len(f"x{text}x".splitlines()) > 1


def narration_part(raw: str, mode: str, language: str) -> tuple[str | None, bool]:
    """The narration within the output so far: ``(text, closed)``.

    Given mode: the first non-blank line; generated mode: the first non-blank
    text after the first ``Narration:`` marker (text None before it appears).
    ``closed``: a line break followed it (narrations are one line).  Lines are
    split as :func:`prompt.parse_generated` splits them.
    """
    lines = raw.splitlines(keepends=True)
    if mode == "generated":
        at = next((k for k, line in enumerate(lines) if _MARKERS[language].match(line)), None)
        if at is None:
            return None, False
        lines = [_MARKERS[language].sub("", lines[at], count=1)] + lines[at + 1:]
    for line in lines:
        if line.strip():
            return line.strip(), has_line_break(line)
    return "", False


_OPEN_NUMBER = re.compile(r"(?<![\d.])\d+\.$")   # "costs 19." may go on as "19.99"; "19.99." may not


def ends_sentence(text: str) -> bool:
    """True if ``text`` ends with a sentence terminator; a '.' right after a whole number does not count."""
    text = text.rstrip()
    if not text or text[-1] not in SENTENCE_END:
        return False
    return not _OPEN_NUMBER.search(text)


@dataclass(frozen=True)
class LengthRule:
    """The stop / block rules of one clip (see the module docstring)."""
    lo: int
    hi: int
    language: str
    mode: str = "given"
    control: bool = True             # False: only the newline rule (and EOS / max_new_tokens) apply

    def blocks(self, raw: str) -> tuple[bool, bool]:
        """``(block EOS, block newline tokens)`` for the token after ``raw``."""
        if not self.control or self.lo <= 0:
            return False, False
        text, _ = narration_part(raw, self.mode, self.language)
        if text is None:             # before "Narration:": the label line needs its newline
            return True, False
        short = text_length(text, self.language) < self.lo
        return short, short

    def stop(self, prev_raw: str, raw: str) -> tuple[str | None, bool]:
        """After the newest token turned ``prev_raw`` into ``raw``: ``(stop reason or None, drop that token)``."""
        text, closed = narration_part(raw, self.mode, self.language)
        if text is None:
            return None, False
        if closed and text:
            return "newline", False
        if not self.control or raw.endswith("\ufffd"):      # never inside a half-decoded character
            return None, False
        n = text_length(text, self.language)
        if n >= self.lo and ends_sentence(text):
            return "sentence", False
        if self.language == "zh":                          # every character is a unit: no word to finish
            return ("max_length", False) if n >= self.hi else (None, False)
        prev_text, _ = narration_part(prev_raw, self.mode, self.language)
        piece = raw[len(prev_raw):] if raw.startswith(prev_raw) else ""
        if prev_text is not None and text_length(prev_text, self.language) >= self.hi and piece[:1].isspace():
            return "max_length", True                      # the token starts word hi+1: drop it
        return None, False


# -- per-video state and rows ----------------------------------------------------------------

@dataclass
class NarrationPass:
    """Every clip of ``videos`` narrated under ``cfg`` from ``visual`` ({video id: kept frames};
    None or empty for a text-only model).  Passes given to :func:`narrate_passes` together may
    differ in ``cfg.mode``, ``cfg.length_control``, ``cfg.story`` and ``cfg.label_candidates``."""
    videos: list[Video]
    visual: dict[str, VisualInputs | None]
    cfg: GenerationConfig


PER_PASS = ("mode", "length_control", "story", "label_candidates")   # what passes decoded together may differ in


@dataclass
class _VideoState:
    video: Video
    visual: VisualInputs | None
    cfg: GenerationConfig                                                   # its pass's
    key: str = ""                                                           # its pass's name
    outputs: list[ClipOutput] = field(default_factory=list)
    prefix_ids: list[int] = field(default_factory=list)                     # tokens whose keys/values are cached
    prefix_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None       # per layer (1, H_kv, Lc, d)
    frame_queries: list[torch.Tensor] = field(default_factory=list)         # per narrated clip: (F, Q, H) Q-Former outputs


@dataclass
class _Row:
    """One sequence being decoded: a video's clip (one of its candidates)."""
    rule: LengthRule
    generator: torch.Generator | None
    ids: list[int] = field(default_factory=list)    # generated token ids (kept)
    logprobs: list[float] = field(default_factory=list)
    raw: str = ""
    stop: str | None = None


def row_seed(seed: int, video_id: str, clip_index: int, candidate: int) -> int:
    """A stable 63-bit seed per (seed, video, clip, candidate): independent of batch composition."""
    digest = hashlib.sha256(f"{seed}:{video_id}:{clip_index}:{candidate}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def newline_token_ids(tokenizer) -> torch.Tensor:
    """Ids of the tokens whose text holds a line break (blocked with EOS before ``lo``)."""
    pieces = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    return torch.tensor([i for i, s in enumerate(pieces) if has_line_break(s)], dtype=torch.long)


# -- the model side: assemble caches, prefill, decode --------------------------------------

def _assemble_cache(hf, prefixes: list[list[tuple[torch.Tensor, torch.Tensor]] | None],
                    lengths: list[int]):
    """Left-pad R per-row prefix caches into one DynamicCache -> (cache, (R, Cmax) mask)."""
    from transformers import DynamicCache
    R, C = len(prefixes), max(lengths)
    mask = torch.zeros(R, C, dtype=torch.long)
    if C == 0:
        return DynamicCache(config=hf.config), mask
    ref = next(p for p, n in zip(prefixes, lengths) if n)
    layers = []
    for layer, (k0, v0) in enumerate(ref):
        k = k0.new_zeros(R, k0.shape[1], C, k0.shape[3])                  # (R, H_kv, Cmax, d)
        v = v0.new_zeros(R, v0.shape[1], C, v0.shape[3])
        for r, (kv, n) in enumerate(zip(prefixes, lengths)):
            if n:
                k[r, :, C - n:], v[r, :, C - n:] = kv[layer][0][0], kv[layer][1][0]
        layers.append((k, v))
    for r, n in enumerate(lengths):
        mask[r, C - n:] = 1
    return DynamicCache(layers, config=hf.config), mask


def _cut_prefix(cache, row: int, spans: list[tuple[int, int]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Row ``row``'s keys/values at the given index spans of the working cache -> per layer (1, H_kv, L, d)."""
    out = []
    for layer in cache.layers:
        k = torch.cat([layer.keys[row:row + 1, :, a:b] for a, b in spans], dim=2)
        v = torch.cat([layer.values[row:row + 1, :, a:b] for a, b in spans], dim=2)
        out.append((k, v))
    return out


def _forward(hf, x, mask, pos, cache) -> torch.Tensor:
    """One pass over new embeddings (R, T, D) on top of ``cache`` -> last-position logits (R, V), float."""
    out = hf(inputs_embeds=x, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True,
             logits_to_keep=1)
    return out.logits[:, -1].float()


def _repetition_penalty(scores: torch.Tensor, ids: list[int], penalty: float) -> torch.Tensor:
    """HF's rule on one row (V,): seen tokens' logits divided by ``penalty`` (multiplied if negative)."""
    if penalty == 1.0 or not ids:
        return scores
    idx = torch.tensor(sorted(set(ids)), device=scores.device)
    s = scores[idx]
    scores[idx] = torch.where(s < 0, s * penalty, s / penalty)
    return scores


def _decode(model: VideoNarrator, rows: list[_Row], logits: torch.Tensor, cache, mask: torch.Tensor,
            next_pos: torch.Tensor, cfg: GenerationConfig, newline_ids: torch.Tensor) -> None:
    """Decode all rows from their first logits (R, V) until each stops; fills ``row.ids/raw/stop``."""
    hf, tok = model._hf(), model.tokenizer
    eos = tok.eos_token_id
    # Any special token ends a narration like EOS (SmolLM2 may write "<|im_start|>" where it means to stop);
    # none is ever part of the text.
    stops = sorted({eos, *tok.all_special_ids})
    live = list(range(len(rows)))                      # rows still in the batch, in batch order
    for _ in range(cfg.max_new_tokens):
        chosen = []
        for j, r in enumerate(live):
            row = rows[r]
            logprob = torch.log_softmax(logits[j], dim=-1)               # (V,) the model's own
            scores = _repetition_penalty(logits[j].clone(), row.ids, cfg.repetition_penalty)
            block_eos, block_newline = row.rule.blocks(row.raw)
            if block_eos:
                scores[stops] = float("-inf")
            if block_newline and len(newline_ids):
                scores[newline_ids] = float("-inf")
            if cfg.temperature == 0:
                t = int(scores.argmax())
            else:
                probs = torch.softmax(scores / cfg.temperature, dim=-1).cpu()
                t = int(torch.multinomial(probs, 1, generator=row.generator))
            chosen.append(t)
            if t in stops:
                row.logprobs.append(float(logprob[t]))
                row.stop = "eos"
                continue
            raw = tok.decode(row.ids + [t])
            reason, drop = row.rule.stop(row.raw, raw)
            if not drop:
                row.ids.append(t)
                row.logprobs.append(float(logprob[t]))
                row.raw = raw
            if reason is None and len(row.ids) >= cfg.max_new_tokens:
                reason = "max_new_tokens"
            row.stop = reason
        keep = [j for j, r in enumerate(live) if rows[r].stop is None]
        if not keep:
            return
        if len(keep) < len(live):                                        # finished rows leave the batch
            idx = torch.tensor(keep, device=mask.device)
            cache.batch_select_indices(idx)
            mask, next_pos = mask[idx], next_pos[idx]
        live = [live[j] for j in keep]
        ids = torch.tensor([[chosen[j]] for j in keep], device=mask.device)   # (R', 1)
        mask = torch.cat([mask, mask.new_ones(len(keep), 1)], dim=1)
        logits = _forward(hf, model.embed_tokens(ids), mask, next_pos[:, None], cache)
        next_pos = next_pos + 1
    for r in live:
        rows[r].stop = rows[r].stop or "max_new_tokens"


def label_lines(tokenizer, language: str, candidates) -> list[list[int]]:
    """Token ids of each candidate continuation ``Label: <labels>\\nNarration:`` (as the target writes it)."""
    t = TEMPLATES[language]
    texts = [f"{t.label}{t.space}{format_labels(list(c), language)}\n{t.narration}" for c in candidates]
    return [tokenizer(x, add_special_tokens=False)["input_ids"] for x in texts]


SCORING_TOKENS = 2048   # continuation tokens (before sharing) scored in one pass


def _token_trie(conts: list[list[int]]) -> tuple[list[int], list[int], list[list[int]]]:
    """The continuations as a token trie: (token per node, depth per node, each continuation's
    nodes).  Continuations that start alike share those nodes; parents come before children."""
    index: dict[tuple[int, int], int] = {}
    tokens, depth, paths = [], [], []
    for c in conts:
        parent, path = -1, []
        for t in c:
            node = index.get((parent, t))
            if node is None:
                node = index[(parent, t)] = len(tokens)
                tokens.append(t)
                depth.append(len(path))
            path.append(node)
            parent = node
        paths.append(path)
    return tokens, depth, paths


def _score_continuations(hf, model: VideoNarrator, cache, mask: torch.Tensor, next_pos: torch.Tensor,
                         first_logits: torch.Tensor, row: int, conts: list[list[int]]) -> list[list[float]]:
    """Log-probability of every token of each continuation after row ``row``'s prompt.

    ``first_logits`` (R, V) are the prompt's last-position logits (they predict
    each continuation's first token).  The rest comes from one pass per chunk of
    continuations on top of the row's cache, their tokens laid out as a trie
    (label lines share ``Label:`` and, for label sets, their first label): a 4D
    mask lets each node see the row's real cached tokens and its own ancestors
    only, and its position is the prompt's end plus its depth, so every
    continuation is scored as if alone, without a copy of the cache per
    continuation and without scoring a shared start twice.
    """
    from transformers import DynamicCache
    first = torch.log_softmax(first_logits[row].float(), dim=-1)
    device = mask.device
    chunks, size = [[]], 0
    for c in conts:
        if chunks[-1] and size + len(c) > SCORING_TOKENS:
            chunks.append([])
            size = 0
        chunks[-1].append(c)
        size += len(c)
    past = mask[row].bool()                                                           # (C,) real cached tokens
    out = []
    for part in chunks:
        tokens, depth, paths = _token_trie(part)
        N = len(tokens)
        sees = torch.eye(N, dtype=torch.bool)                                          # (N, N): ancestor or self
        for path in paths:
            for k in range(1, len(path)):
                sees[path[k]] |= sees[path[k - 1]]
        allowed = torch.cat([past.expand(N, -1), sees.to(device)], dim=1)[None, None]  # (1, 1, N, C + N)
        x = model.embed_tokens(torch.tensor(tokens, device=device))[None]              # (1, N, D)
        sub = DynamicCache([(layer.keys[row:row + 1], layer.values[row:row + 1]) for layer in cache.layers],
                           config=hf.config)
        pos = next_pos[row] + torch.tensor(depth, device=device)
        logits = hf(inputs_embeds=x, attention_mask=model.attention_mask_4d(allowed, x.dtype),
                    position_ids=pos[None], cache=sub, use_cache=True).logits[0]
        lp = torch.log_softmax(logits.float(), dim=-1)                                 # (N, V)
        for c, path in zip(part, paths):   # token k is predicted at the node of token k - 1
            out.append([float(first[c[0]])] + [float(lp[path[k - 1], c[k]]) for k in range(1, len(c))])
    return out


def candidate_scores(line_scores: list[list[float]], candidates, head: torch.Tensor | None) -> list[float]:
    """Each candidate label set's score: its label line's summed log-probability under the LLM, or,
    with a label head's (12,) log-probabilities, the mean of its labels' log-probabilities there."""
    if head is None:
        return [sum(s) for s in line_scores]
    return [sum(float(head[LABELS.index(k)]) for k in c) / len(c) for c in candidates]


def _head_logprobs(model: VideoNarrator, states: list[_VideoState], batch: ClipBatch) -> list[torch.Tensor | None]:
    """Per video, the label head's (12,) log-probabilities for this clip (None in given mode or
    without a head)."""
    head = model.label_head
    return [head(head.inputs(t.clip_patches, t.place)) if head is not None and s.cfg.mode == "generated" else None
            for s, t in zip(states, batch.samples)]


def _choose_labels(model: VideoNarrator, states: list[_VideoState], rows: list[_Row], K: int, cache,
                   mask: torch.Tensor, next_pos: torch.Tensor, logits: torch.Tensor,
                   head: list[torch.Tensor | None]):
    """Generated mode: each such video's best label line (:func:`candidate_scores`) is fed as the
    start of its rows.

    Returns the logits, mask and next positions after the fed tokens (rows of
    given-mode videos are fed nothing and keep theirs); the rows' ids, text
    and log-probabilities start with the chosen line.
    """
    hf, tok = model._hf(), model.tokenizer
    fed = []
    for b, s in enumerate(states):
        line = []
        if s.cfg.mode == "generated":
            candidates = s.cfg.label_candidates or label_candidates()
            conts = label_lines(tok, s.video.language, candidates)
            if head[b] is None:
                scores = _score_continuations(hf, model, cache, mask, next_pos, logits, b * K, conts)
                total = candidate_scores(scores, candidates, None)
            else:   # the head decides: only the chosen line needs the LLM's scores
                total = candidate_scores([[]] * len(conts), candidates, head[b])
            best = max(range(len(conts)), key=lambda c: total[c])                        # ties: first candidate
            line = conts[best]
            line_scores = scores[best] if head[b] is None else \
                _score_continuations(hf, model, cache, mask, next_pos, logits, b * K, [line])[0]
            for k in range(K):
                row = rows[b * K + k]
                row.ids, row.logprobs = list(line), list(line_scores)
                row.raw = tok.decode(row.ids)
        fed += [line] * K
    L = max(len(f) for f in fed)
    if L == 0:
        return logits, mask, next_pos
    # feed the chosen lines (left-padded: the pads sit between prompt and line, masked, positions skip them)
    ids = torch.zeros(len(fed), L, dtype=torch.long, device=mask.device)
    new = torch.zeros(len(fed), L, dtype=torch.long, device=mask.device)
    for r, f in enumerate(fed):
        if f:
            ids[r, L - len(f):], new[r, L - len(f):] = torch.tensor(f), 1
    pos = next_pos[:, None] + (new.cumsum(1) - 1).clamp(min=0)
    mask = torch.cat([mask, new], dim=1)
    out = _forward(hf, model.embed_tokens(ids), mask, pos, cache)
    took = new.any(1)                                  # rows fed nothing keep their prompt's last logits
    logits = torch.where(took[:, None], out, logits)
    return logits, mask, next_pos + new.sum(1)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _narrate_clip(model: VideoNarrator, states: list[_VideoState], i: int, cfg: GenerationConfig,
                  newline_ids: torch.Tensor) -> None:
    """Narrate clip ``i`` of every video in ``states`` together, each under its own pass's mode,
    story and length control (``cfg``: the decoding settings they share); append one ClipOutput to each."""
    hf, tok = model._hf(), model.tokenizer
    device = next(model.parameters()).device
    K = cfg.num_candidates
    tails, cached, prompts = [], [], []
    for s in states:
        story = [o.text for o in s.outputs] if s.cfg.story == "own" else [c.narration for c in s.video.clips[:i]]
        options = model.prompt_options
        sample = clip_sample(tok, s.video, i, s.visual, s.cfg.mode, story_so_far=story, with_target=False,
                             num_buckets=model.cfg.num_position_buckets, story_clips=model.cfg.story_clips,
                             options=options)
        prompts.append(build_clip_prompt(s.video, i, mode=s.cfg.mode, story_so_far=story,
                                         story_clips=model.cfg.story_clips, options=options))
        ids = sample.prefix_ids.tolist()
        keep = 0 if cfg.reencode else _common_prefix(s.prefix_ids, ids)
        if keep < len(s.prefix_ids):   # the first clip (nothing cached yet), or a story window that slid
            s.prefix_ids = s.prefix_ids[:keep]
            s.prefix_kv = [(k[:, :, :keep], v[:, :, :keep]) for k, v in s.prefix_kv] if keep else None
        cached.append(keep)
        # the new tokens: the rest of the prefix (a story line; all of it when nothing is cached) + visual + suffix
        tails.append(replace(sample, prefix_ids=sample.prefix_ids[keep:]))
    with torch.no_grad():
        batch = ClipBatch(tails).to(device)
        visual = None
        if model.visual is not None and not cfg.reencode:
            # each frame through the Q-Former once per video: the memory reads the kept outputs of the
            # earlier clips instead of encoding all earlier frames again (O(1) work per clip, not O(i))
            visual = []
            for s, t in zip(states, batch.samples):
                model.visual.check_clip(t.clip_patches, t.bucket, f"video {s.video.id!r} clip {i}")
                cur = model.visual.encode_frames(t.clip_patches)                        # (F, Q, H)
                prev = torch.cat(s.frame_queries) if s.frame_queries else cur[:0]       # (F_prev, Q, H)
                visual.append(model.visual.clip_tokens(cur, prev, t.bucket))
                s.frame_queries.append(cur)
        seqs = model.build_inputs_embeds(batch, with_target=False, visual=visual)       # B x (T_b, D)
        head = _head_logprobs(model, states, batch)

    # R = B*K rows: each video's candidates side by side
    owner = [b for b in range(len(states)) for _ in range(K)]
    cache, mask_c = _assemble_cache(hf, [states[b].prefix_kv for b in owner], [cached[b] for b in owner])
    x, mask_t = pad_embeds([seqs[b] for b in owner], side="left")                 # (R, T, D), (R, T)
    C, T = mask_c.shape[1], mask_t.shape[1]
    mask = torch.cat([mask_c.to(device), mask_t], dim=1)                           # (R, C + T)
    lc = torch.tensor([cached[b] for b in owner], device=device)
    pos = (lc[:, None] + mask_t.cumsum(1) - 1).clamp(min=0)                        # (R, T): pads skipped
    logits = _forward(hf, x, mask, pos, cache)

    if not cfg.reencode:                               # the new prefix cache: old prefix + the new story line
        for b, s in enumerate(states):
            r, n_new, start = b * K, len(tails[b].prefix_ids), C + T - len(seqs[b])
            s.prefix_kv = _cut_prefix(cache, r, [(C - cached[b], C), (start, start + n_new)])
            s.prefix_ids = s.prefix_ids + tails[b].prefix_ids.tolist()

    rows = []
    for b in owner:
        clip = states[b].video.clips[i]
        k = len(rows) % K
        gen = None
        if cfg.temperature > 0:
            gen = torch.Generator().manual_seed(row_seed(cfg.seed, states[b].video.id, i, k))
        own = states[b].cfg
        rule = LengthRule(clip.window[0], clip.window[1], states[b].video.language, own.mode, own.length_control)
        rows.append(_Row(rule, gen))
    next_pos = pos[:, -1] + 1
    logits, mask, next_pos = _choose_labels(model, states, rows, K, cache, mask, next_pos, logits, head)
    _decode(model, rows, logits, cache, mask, next_pos, cfg, newline_ids)

    for b, s in enumerate(states):
        outs = [_clip_output(rows[b * K + k], s.video, i, s.cfg.mode, prompts[b]) for k in range(K)]
        s.outputs.append(pick_candidate(outs, s.video.clips[i].window))


def _clip_output(row: _Row, video: Video, i: int, mode: str, prompt: ClipPrompt) -> ClipOutput:
    labels, text = parse_generated(row.raw, mode, video.language)
    if mode == "given":
        labels = list(video.clips[i].labels)
    lo, hi = video.clips[i].window
    n = text_length(text, video.language)
    mean = sum(row.logprobs) / len(row.logprobs) if row.logprobs else float("-inf")
    return ClipOutput(text=text, labels=labels, raw=row.raw, length=n, in_window=lo <= n <= hi,
                      stop=row.stop or "", mean_logprob=mean, prompt=prompt)


def pick_candidate(outputs: list[ClipOutput], window: tuple[int, int]) -> ClipOutput:
    """Best mean log-prob among those inside the window; else the closest to it (ties: log-prob, then order)."""
    lo, hi = window
    inside = [o for o in outputs if o.in_window]
    if inside:
        return max(inside, key=lambda o: o.mean_logprob)
    return min(outputs, key=lambda o: (max(lo - o.length, o.length - hi), -o.mean_logprob))


# -- the entry point -----------------------------------------------------------------------------

def narrate_videos(model: VideoNarrator, videos: list[Video], visual_by_video: dict[str, VisualInputs | None],
                   cfg: GenerationConfig, progress: bool = True,
                   on_clip: Callable[[str, int, ClipOutput], None] | None = None
                   ) -> dict[str, list[ClipOutput]]:
    """Narrate every clip of every video; return ``{video id: [ClipOutput per clip]}``.

    ``visual_by_video[id]``: the video's kept frames (``dataset.visual_inputs``);
    None or missing is allowed only for a text-only model (``use_video=False``).
    Videos are processed ``cfg.batch_size`` at a time, clip by clip;
    ``on_clip(video id, clip index, output)`` is called as each clip is done
    (e.g. to move a progress bar in a UI).
    """
    call = None if on_clip is None else (lambda _key, vid, i, out: on_clip(vid, i, out))
    return narrate_passes(model, {"": NarrationPass(videos, visual_by_video, cfg)}, progress, call)[""]


def _check_pass(model: VideoNarrator, key: str, p: NarrationPass) -> None:
    ids = [v.id for v in p.videos]
    if len(set(ids)) != len(ids):
        raise ValueError(f"video ids must be unique; repeated: {sorted({x for x in ids if ids.count(x) > 1})}")
    if model.visual is not None:
        missing = [v.id for v in p.videos if p.visual.get(v.id) is None]
        if missing:
            where = f" (pass {key!r})" if key else ""
            raise ValueError(f"the model uses video (use_video=True) but videos {missing[:5]}{where} have no visual "
                             f"inputs; pass dataset.visual_inputs(video, features_dir, tau) for each")


def narrate_passes(model: VideoNarrator, passes: dict[str, NarrationPass], progress: bool = True,
                   on_clip: Callable[[str, str, int, ClipOutput], None] | None = None
                   ) -> dict[str, dict[str, list[ClipOutput]]]:
    """Several passes of one model decoded together; ``{pass name: {video id: [ClipOutput]}}``.

    Every (pass, video) is one narration; ``batch_size`` of them (from any
    passes; longest videos first, so a batch's videos end together) are decoded
    clip by clip in one batch.  Each gives the same text as its own
    :func:`narrate_videos` call: rows are independent (masks, per-row seeds).
    The passes must agree on every decoding setting but :data:`PER_PASS`.
    ``on_clip(pass name, video id, clip index, output)`` is called as each clip is done.
    """
    if not passes:
        return {}
    cfgs = {k: p.cfg.check() for k, p in passes.items()}
    cfg = next(iter(cfgs.values()))
    shared = {f: None for f in PER_PASS}
    for k, c in cfgs.items():
        if replace(c, **shared) != replace(cfg, **shared):
            raise ValueError(f"pass {k!r} decodes with other settings than pass {next(iter(cfgs))!r}; passes "
                             f"narrated together may differ only in {PER_PASS}: narrate it separately")
    for k, p in passes.items():
        _check_pass(model, k, p)
    if not cfg.reencode:
        from transformers import DynamicCache
        if any(DynamicCache(config=model._hf().config).is_sliding):
            raise ValueError("the LLM has sliding-window attention layers; KV-cache reuse needs full attention "
                             "caches: set GenerationConfig.reencode=True")
    newline_ids = newline_token_ids(model.tokenizer).to(next(model.parameters()).device)
    uses_video = model.visual is not None
    states = [_VideoState(v, p.visual.get(v.id) if uses_video else None, cfgs[k], k)
              for k, p in passes.items() for v in p.videos]
    states.sort(key=lambda s: -len(s.video.clips))     # stable: equal lengths keep pass and video order
    was_training = model.training
    model.eval()                                       # no LoRA dropout: decoding must be reproducible
    bar = progress_bar(total=sum(len(s.video.clips) for s in states), desc="narrating", unit="clip",
                       disable=not progress)
    try:
        for start in range(0, len(states), cfg.batch_size):
            batch = states[start:start + cfg.batch_size]
            for i in range(len(batch[0].video.clips)):
                live = [s for s in batch if i < len(s.video.clips)]
                with torch.no_grad():
                    _narrate_clip(model, live, i, cfg, newline_ids)
                bar.update(len(live))
                for s in live if on_clip is not None else ():
                    on_clip(s.key, s.video.id, i, s.outputs[i])
    finally:
        bar.close()
        model.train(was_training)
    out: dict[str, dict[str, list[ClipOutput]]] = {k: {} for k in passes}
    for k, p in passes.items():     # in each pass's video order
        by_id = {s.video.id: s.outputs for s in states if s.key == k}
        out[k] = {v.id: by_id[v.id] for v in p.videos}
    return out
