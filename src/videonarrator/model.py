"""The VideoNarrator model: frames -> Q-Former -> projector -> causal LM with LoRA.

One training sample is one clip.  Its input embeddings are laid out as

    [prefix text] [memory tokens | this clip's tokens] [suffix text] [target text + EOS]

(the text comes from :mod:`videonarrator.prompt`).  Per clip:

    patch tokens of the kept frames          (F, P, W)      from the frozen vision tower
    + learned per-patch position embedding   (P, W)         optional: layout signal for a random ViT
    Q-Former, learned query tokens           (F, Q, H)      Blip2QFormerModel, one pass per frame
    + clip-position embedding                (H,)           bucket = clip midpoint as % of the video
    memory: earlier frames' query outputs    (M*Q, H)       averaged into M groups, placed first
    linear projector                         (M*Q + F*Q, D) D = the LLM's embedding width

The LLM runs on ``inputs_embeds``; the loss is the cross-entropy of the target
tokens only, chosen by *position* (SmolLM2's pad id is its EOS id, so a mask
built from the pad id would hide the EOS the model must learn to emit), and
``lm_head`` is applied only at those positions (the 49k-way head on every
prompt token would dominate the step time).

Training packs the clips of one video into one sequence (:func:`pack_layout`):
their prompts share the product knowledge and the story so far, so those tokens
are computed once, and a 4D attention mask with per-clip position ids gives every
clip exactly the context of its own sample (the loss equals the per-clip loss).

Switches (the ablations): ``use_position`` False -> no clip-position embedding;
``use_memory`` False -> no memory tokens; ``use_video`` False -> no visual
tokens and no visual weights at all (the text-only baseline, same code path).
Memory tokens get no clip-position embedding: they average several clips, so
no single bucket describes them (the reference adds position to the current clip).

Label head (``label_head``, not in the paper): in generated-storyline mode the clip's
label is chosen by a linear classifier on what the narrator knows of the clip before any
LLM pass: the frozen tower's features (the clip's patch tokens averaged over its kept
frames; a text-only narrator has none) and the clip's place in its video (first, middle,
last), fitted on the training clips before training (:class:`LabelHead`).  The LLM then
narrates after that label line.  The LLM's own label likelihood learnt only the labels'
marginal here, on synthetic and on real data (README "The label head").
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .io import atomic_path, read_json, write_json
from .llm import LoraSettings, load_llm, load_qformer
from .prompt import ClipPrompt, PromptOptions
from .labels import LABELS
from .schema import PLACES, Video


# -- configuration ----------------------------------------------------------------

@dataclass
class VideoNarratorConfig:
    """The model's shape and switches.  Built from params.yaml by :class:`config.Settings` (the
    fields without a default are params keys, or read from the feature files); saved with the model."""
    vision_width: int                 # W: width of the vision tower's patch tokens (from the features)
    num_patches: int                  # P: patch tokens per frame (open_clip's output_tokens: no CLS)
    qformer_hidden: int               # H
    qformer_layers: int
    qformer_heads: int
    num_query_tokens: int             # Q (32 in the paper)
    patch_pos_embed: bool             # learned (P, W) embedding on the patch tokens
    memory_frames: int                # M: earlier frames averaged into this many groups (reference: 1)
    story_clips: int | None           # earlier narrations kept in the prompt (None: all; an int bounds it)
    label_head: bool                  # generated mode: the label from LabelHead, not the LLM's likelihood
    qformer_cross_attention_every: int = 2  # BLIP-2: cross-attention in every 2nd layer
    use_position: bool = True         # clip-position embedding (the ablations switch these off)
    position_text: bool = True        # "Clip i/n" and numbered story lines in the prompt
    num_position_buckets: int = 100
    use_memory: bool = True
    use_video: bool = True            # False: text-only baseline
    llm_dim: int = 0                  # D: filled from the LLM

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "VideoNarratorConfig":
        d = {"label_head": False, **d}   # narrators saved before the label head existed have none
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown VideoNarratorConfig keys {unknown}; known keys: {sorted(known)}")
        return cls(**d)

    def qformer_config(self):
        from transformers import Blip2QFormerConfig
        return Blip2QFormerConfig(hidden_size=self.qformer_hidden, num_hidden_layers=self.qformer_layers,
                                  num_attention_heads=self.qformer_heads, intermediate_size=4 * self.qformer_hidden,
                                  encoder_hidden_size=self.vision_width,
                                  cross_attention_frequency=self.qformer_cross_attention_every)


def position_bucket(start: float, end: float, video_duration: float, num_buckets: int = 100) -> int:
    """The clip midpoint as a percentage of the video: floor(mid / duration * buckets), in 0..buckets-1."""
    if video_duration <= 0:
        raise ValueError(f"video duration must be positive, got {video_duration}")
    mid = (start + end) / 2
    return min(max(math.floor(mid / video_duration * num_buckets), 0), num_buckets - 1)


def clip_bucket(video: Video, clip_index: int, num_buckets: int = 100) -> int:
    clip = video.clips[clip_index]
    return position_bucket(clip.start, clip.end, video.duration, num_buckets)


# -- label head ------------------------------------------------------------------------

def fit_linear(x: torch.Tensor, y: torch.Tensor, classes: int, weight_decay: float = 1e-2, max_iter: int = 200
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression (L2, L-BFGS from zeros: deterministic) on standardised
    features: (N, K) float, (N,) class ids -> mean (K,), std (K,), weight (K, C), bias (C,)."""
    x = x.float()
    mean, std = x.mean(dim=0), x.std(dim=0) + 1e-6
    z = (x - mean) / std
    w = torch.zeros(z.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(z @ w + b, y) + weight_decay * (w ** 2).sum()
        loss.backward()
        return loss
    with torch.enable_grad():
        opt.step(closure)
    return mean, std, w.detach(), b.detach()


def label_features(clip_patches: torch.Tensor | None, place: int) -> torch.Tensor:
    """What a label head reads of a clip: (F, P, W) kept frames (None: a text-only narrator, no
    frames) and the place index (schema.PLACES) -> (P*W + 3,) frame mean and place one-hot, or (3,)."""
    device = clip_patches.device if clip_patches is not None else None
    onehot = torch.zeros(len(PLACES), device=device)
    onehot[place] = 1.0
    if clip_patches is None:
        return onehot
    return torch.cat([clip_patches.float().mean(dim=0).flatten(), onehot])


class LabelHead(nn.Module):
    """The clip's script label from its frozen features (if the narrator sees video) and its place:
    logistic regression fitted on the training clips (:meth:`fit`), kept as buffers (saved with the
    model, never trained by the optimiser, so it cannot pull the narrator away from what the
    narration needs).  ``feature_dim``: P*W of the frames it reads, 0 for a text-only narrator."""

    def __init__(self, feature_dim: int):
        super().__init__()
        self.feature_dim = feature_dim
        K, C = feature_dim + len(PLACES), len(LABELS)
        self.register_buffer("mean", torch.zeros(K))
        self.register_buffer("std", torch.ones(K))
        self.register_buffer("weight", torch.zeros(K, C))
        self.register_buffer("bias", torch.zeros(C))

    def inputs(self, clip_patches: torch.Tensor, place: int) -> torch.Tensor:
        """A sample's (F, P, W) kept frames and place index -> (K,) (:func:`label_features`; a
        text-only head ignores the frames, which a text-only sample does not have)."""
        return label_features(clip_patches if self.feature_dim else None, place)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., K) inputs -> (..., 12) log-probabilities of the labels (order of labels.LABELS)."""
        return torch.log_softmax((x.float() - self.mean) / self.std @ self.weight + self.bias, dim=-1)

    def fit(self, samples: list["ClipSample"]) -> int:
        """Fit on the single-label samples (their ``label_ids``); returns how many were used."""
        used = [s for s in samples if len(s.label_ids) == 1]
        if not used:
            raise ValueError("the label head has no single-label training clip to fit on; set "
                             "model.label_head: false for data without labels")
        x = torch.stack([self.inputs(s.clip_patches.cpu(), s.place) for s in used])
        y = torch.tensor([s.label_ids[0] for s in used])
        for buf, value in zip((self.mean, self.std, self.weight, self.bias), fit_linear(x, y, len(LABELS))):
            buf.copy_(value)
        return len(used)


# -- visual side -----------------------------------------------------------------------

class VisualEncoder(nn.Module):
    """Patch tokens of a clip (and of the earlier clips) -> visual embeddings for the LLM."""

    def __init__(self, cfg: VideoNarratorConfig):
        super().__init__()
        from transformers import Blip2QFormerModel
        if cfg.llm_dim <= 0:
            raise ValueError("VideoNarratorConfig.llm_dim is unset; it is filled from the LLM's hidden size")
        self.cfg = cfg
        P, W, Q, H = cfg.num_patches, cfg.vision_width, cfg.num_query_tokens, cfg.qformer_hidden
        if P <= 0 or W <= 0:
            raise ValueError(f"VideoNarratorConfig num_patches={P}, vision_width={W}: both must be the feature "
                             f"files' shape (features.stored_shape); build the config with config.Settings.model")
        # std 0.02 as BERT/BLIP-2 initialise embeddings: small next to LayerNormed tokens
        self.patch_pos = nn.Parameter(torch.randn(P, W) * 0.02) if cfg.patch_pos_embed else None  # (P, W)
        self.qformer = Blip2QFormerModel(cfg.qformer_config())
        self.query_tokens = nn.Parameter(torch.randn(1, Q, H) * 0.02)                               # (1, Q, H)
        self.clip_pos = nn.Embedding(cfg.num_position_buckets, H) if cfg.use_position else None
        if self.clip_pos is not None:
            nn.init.normal_(self.clip_pos.weight, std=0.02)
        self.projector = nn.Linear(H, cfg.llm_dim)

    def encode_frames(self, patches: torch.Tensor) -> torch.Tensor:
        """(F, P, W) patch tokens -> (F, Q, H) query outputs, each frame on its own."""
        if patches.dim() != 3 or patches.shape[1:] != (self.cfg.num_patches, self.cfg.vision_width):
            raise ValueError(f"patch tokens must have shape (frames, {self.cfg.num_patches}, "
                             f"{self.cfg.vision_width}) (the features this narrator was trained on), got "
                             f"{tuple(patches.shape)}; were the features encoded by another tower? "
                             f"Train the narrator again on these features (dvc repro train)")
        x = patches.to(self.query_tokens.dtype)
        if self.patch_pos is not None:
            x = x + self.patch_pos                                                # (F, P, W)
        queries = self.query_tokens.expand(x.shape[0], -1, -1)                    # (F, Q, H)
        return self.qformer(query_embeds=queries, encoder_hidden_states=x).last_hidden_state

    @torch.no_grad()
    def cross_attention(self, patches: torch.Tensor) -> torch.Tensor:
        """(F, P, W) patch tokens -> (F, heads, Q, P): how each query attends over the
        patches in the Q-Former's last cross-attention layer (for plots).  Runs the
        eager attention path in eval mode once, since fused kernels return no weights."""
        x = patches.to(self.query_tokens.dtype)
        if self.patch_pos is not None:
            x = x + self.patch_pos
        queries = self.query_tokens.expand(x.shape[0], -1, -1)
        previous, was_training = self.qformer.config._attn_implementation, self.training
        self.qformer.set_attn_implementation("eager")
        self.eval()  # no attention dropout in the maps
        try:
            out = self.qformer(query_embeds=queries, encoder_hidden_states=x, output_attentions=True)
        finally:
            self.qformer.set_attn_implementation(previous)
            self.train(was_training)
        return out.cross_attentions[-1]

    def memory(self, earlier: torch.Tensor) -> torch.Tensor:
        """(F_prev, Q, H) earlier query outputs -> (M', Q, H), M' = min(M, F_prev) time-ordered group means."""
        groups = [g for g in torch.tensor_split(earlier, self.cfg.memory_frames) if len(g)]
        return torch.stack([g.mean(dim=0) for g in groups])

    def forward(self, clip_patches: list[torch.Tensor], earlier_patches: list[torch.Tensor | None],
                buckets: list[int]) -> list[torch.Tensor]:
        """Visual embeddings of a batch of clips.

        clip_patches[b]: (F_b, P, W) kept frames of clip b; earlier_patches[b]:
        (F_prev_b, P, W) kept frames of all earlier clips of its video (None or
        0 frames for a first clip); buckets[b]: its position bucket.
        Returns B tensors (M'_b*Q + F_b*Q, D); M'_b = 0 without memory.
        """
        # One Q-Former pass over every frame of the batch, then split back.
        chunks, counts = [], []
        for b, (cur, prev, bucket) in enumerate(zip(clip_patches, earlier_patches, buckets)):
            self.check_clip(cur, bucket, f"batch sample {b}")
            chunks.append(cur)
            prev = prev if (self.cfg.use_memory and prev is not None) else cur[:0]
            chunks.append(prev)
            counts += [len(cur), len(prev)]
        queries = self.encode_frames(torch.cat(chunks)).split(counts)            # each (F, Q, H)
        return [self.clip_tokens(queries[2 * b], queries[2 * b + 1], bucket) for b, bucket in enumerate(buckets)]

    def check_clip(self, frames: torch.Tensor, bucket: int, where: str) -> None:
        if len(frames) == 0:
            raise ValueError(f"{where}: the clip has no kept frames; every clip needs at least one")
        if not 0 <= bucket < self.cfg.num_position_buckets:
            raise ValueError(f"{where}: position bucket {bucket} outside 0..{self.cfg.num_position_buckets - 1}")

    def clip_tokens(self, cur: torch.Tensor, prev: torch.Tensor, bucket: int) -> torch.Tensor:
        """One clip's embeddings from Q-Former outputs: (F, Q, H) of its frames and (F_prev, Q, H)
        of the earlier frames (generation keeps these, so each frame goes through the Q-Former once)
        -> (M'*Q + F*Q, D)."""
        if self.clip_pos is not None:
            cur = cur + self.clip_pos.weight[bucket]                               # (F, Q, H) + (H,)
        tokens = cur.flatten(0, 1)                                                 # (F*Q, H)
        if self.cfg.use_memory and len(prev):
            tokens = torch.cat([self.memory(prev).flatten(0, 1), tokens])          # (M'*Q + F*Q, H)
        return self.projector(tokens)                                              # (M'*Q + F*Q, D)

    def load_qformer(self, path_or_file: str | Path) -> None:
        """Load BLIP-2 Q-Former weights (transformers folder or LAVIS .pth) into this encoder."""
        state, query_tokens = load_qformer(path_or_file, self.qformer.config)
        self.qformer.load_state_dict(state, strict=True)
        if query_tokens is not None:
            if query_tokens.shape != self.query_tokens.shape:
                raise ValueError(f"{path_or_file}: query_tokens have shape {tuple(query_tokens.shape)}, "
                                 f"the config asks for {tuple(self.query_tokens.shape)}")
            with torch.no_grad():
                self.query_tokens.copy_(query_tokens)


# -- samples and batches ------------------------------------------------------------

@dataclass
class ClipSample:
    prefix_ids: torch.Tensor        # (Lp,) long
    suffix_ids: torch.Tensor        # (Ls,) long
    target_ids: torch.Tensor        # (Lt,) long, ends with EOS; (0,) at generation time
    clip_patches: torch.Tensor      # (F, P, W) kept frames of this clip
    earlier_patches: torch.Tensor   # (F_prev, P, W) kept frames of the earlier clips; F_prev may be 0
    bucket: int                     # clip-position bucket
    video: str = ""                 # the clip's video: training packs the clips of one video ("": alone)
    label_tokens: int = 0           # leading target tokens that are the label line (generated mode)
    fact_tokens: tuple[int, ...] = ()   # target tokens inside a visible fact's words (synthetic truth)
    place: int = 0                  # the clip's place in its video (index into schema.PLACES)
    label_ids: tuple[int, ...] = ()     # the clip's true labels (indices into labels.LABELS; with the target only)
    stop_tokens: tuple[int, ...] = ()   # target tokens that decide the length: after each sentence end, and the EOS


@dataclass
class ClipBatch:
    samples: list[ClipSample]

    def __len__(self) -> int:
        return len(self.samples)

    def to(self, device: torch.device | str) -> "ClipBatch":
        # replace: the tensors move, every other field (bucket, video, label and fact tokens) is kept as it is
        return ClipBatch([replace(s, prefix_ids=s.prefix_ids.to(device), suffix_ids=s.suffix_ids.to(device),
                                  target_ids=s.target_ids.to(device), clip_patches=s.clip_patches.to(device),
                                  earlier_patches=s.earlier_patches.to(device)) for s in self.samples])


def _ids(tokenizer, text: str) -> torch.Tensor:
    return torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)


def tokens_in_spans(tokenizer, text: str, spans: list[tuple[int, int]]) -> tuple[int, ...]:
    """Indices of the tokens of ``text`` (tokenised as the target is) whose characters overlap a
    (start, end) span; needs a fast tokenizer (offsets)."""
    if not spans:
        return ()
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    return tuple(k for k, (a, b) in enumerate(offsets) if any(a < end and start < b for start, end in spans))


def stop_decisions(tokenizer, text: str, narration_at: int) -> tuple[int, ...]:
    """Indices of the tokens of ``text`` (tokenised as the target is) that follow a sentence end of
    the narration (``text[narration_at:]``): where the writer chose to go on rather than stop. With
    the EOS after them they are the tokens that set the narration's length."""
    ends = [narration_at + m.end() for m in re.finditer(r"[.!?](?=\s)", text[narration_at:])]
    if not ends:
        return ()
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    return tuple(min(k for k, (a, b) in enumerate(offsets) if a >= end) for end in ends
                 if any(a >= end for a, _ in offsets))


def encode_sample(tokenizer, prompt: ClipPrompt, clip_patches: torch.Tensor,
                  earlier_patches: torch.Tensor | None, bucket: int, with_target: bool = True,
                  video: str = "", fact_spans: list[tuple[int, int]] = (), place: str = "first",
                  labels: tuple[str, ...] = ()) -> ClipSample:
    """Tokenise a prompt's three parts (no special tokens; EOS appended to the target).
    ``fact_spans``: (start, end) character spans of visible facts in ``prompt.target``;
    ``place``: the clip's place (schema.PLACES); ``labels``: its true labels (kept with the target)."""
    if earlier_patches is None:
        earlier_patches = clip_patches[:0]
    target = torch.cat([_ids(tokenizer, prompt.target), torch.tensor([tokenizer.eos_token_id])]) \
        if with_target else torch.zeros(0, dtype=torch.long)
    label_tokens = 0
    if with_target and prompt.label_line:
        # the label line's tokens as they start the target (a tokenizer could merge across the line break)
        line = _ids(tokenizer, prompt.label_line)
        while label_tokens < min(len(line), len(target)) and line[label_tokens] == target[label_tokens]:
            label_tokens += 1
    facts = tokens_in_spans(tokenizer, prompt.target, list(fact_spans)) if with_target else ()
    stops = stop_decisions(tokenizer, prompt.target, prompt.narration_at) + (len(target) - 1,) if with_target else ()
    label_ids = tuple(LABELS.index(k) for k in labels) if with_target else ()
    return ClipSample(_ids(tokenizer, prompt.prefix), _ids(tokenizer, prompt.suffix), target,
                      clip_patches, earlier_patches, int(bucket), video, label_tokens, facts,
                      PLACES.index(place), label_ids, stops)


def target_weights(sample: ClipSample, label_weight: float, fact_weight: float,
                   stop_weight: float = 1.0) -> torch.Tensor:
    """(Lt,) loss weight of each target token: ``label_weight`` on the label line, ``fact_weight``
    on a visible fact's words, ``stop_weight`` on the tokens that set the length (a sentence's first
    word after another sentence, the EOS; it wins where they meet a fact), 1 elsewhere."""
    weight = torch.ones(len(sample.target_ids))
    weight[:sample.label_tokens] = label_weight
    weight[list(sample.fact_tokens)] = fact_weight
    weight[list(sample.stop_tokens)] = stop_weight
    return weight


def collate(samples: list[ClipSample]) -> ClipBatch:
    """Group samples for :meth:`VideoNarrator.forward`; checks they fit together.

    Samples stay ragged: the model pads after embedding (right padding for
    training, left for generation, see :func:`pad_embeds`).
    """
    if not samples:
        raise ValueError("cannot collate an empty batch")
    shape = samples[0].clip_patches.shape[1:]
    for i, s in enumerate(samples):
        for name in ("clip_patches", "earlier_patches"):
            t = getattr(s, name)
            if t.dim() != 3 or t.shape[1:] != shape:
                raise ValueError(f"batch sample {i}: {name} has shape {tuple(t.shape)}, "
                                 f"expected (frames, {shape[0]}, {shape[1]}) like sample 0")
    return ClipBatch(list(samples))


def pad_embeds(seqs: list[torch.Tensor], side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """Pad B sequences (L_b, D) with zeros -> (B, T, D) embeddings and (B, T) attention mask."""
    if side not in ("left", "right"):
        raise ValueError(f"padding side must be 'left' or 'right', got {side!r}")
    T = max(len(s) for s in seqs)
    x = seqs[0].new_zeros(len(seqs), T, seqs[0].shape[-1])
    mask = torch.zeros(len(seqs), T, dtype=torch.long, device=x.device)
    for b, s in enumerate(seqs):
        span = slice(T - len(s), T) if side == "left" else slice(0, len(s))
        x[b, span] = s
        mask[b, span] = 1
    return x, mask


def visual_token_count(cfg: VideoNarratorConfig, sample: ClipSample) -> int:
    """Visual embeddings the LLM sees for ``sample``: F*Q clip tokens plus M'*Q memory tokens."""
    if not cfg.use_video:
        return 0
    memory = min(cfg.memory_frames, len(sample.earlier_patches)) if cfg.use_memory else 0
    return cfg.num_query_tokens * (len(sample.clip_patches) + memory)


@dataclass
class PackedLayout:
    """Where the per-clip sequences [prefix][visual][suffix][target] of a batch sit in a few rows.

    Clips of one video form a *pack*: their prefixes are merged into a token trie (the shared
    knowledge and story are stored once), followed by each clip's own branch
    [visual][suffix][target].  ``index[b]`` lists the row positions that, in order, are clip b's
    whole sequence.  Packs are binned into rows (first fit, longest first, capacity = the longest
    pack), so short packs share a row instead of being padded.
    """
    rows: int                      # R
    length: int                    # T (right padding after the last pack of a row)
    clip_row: list[int]            # (B,) the row of each clip
    index: list[torch.Tensor]      # B x (L_b,) long: clip b's sequence as row positions
    node_ids: torch.Tensor         # (N,) token ids of the shared prefix tokens (trie nodes)
    node_row: torch.Tensor         # (N,) their rows
    node_col: torch.Tensor         # (N,) their positions in the row
    branch_start: list[int]        # (B,) where clip b's branch begins in its row

    @property
    def positions(self) -> int:
        """LLM positions computed, padding included."""
        return self.rows * self.length

    branch_len: list[int]          # (B,) visual + suffix + target tokens of clip b

    @property
    def used(self) -> int:
        """LLM positions that hold a token (the rest is padding)."""
        return len(self.node_ids) + sum(self.branch_len)

    def position_ids(self) -> torch.Tensor:
        """(R, T) long: each token's position in its clip's own sequence (shared tokens agree)."""
        pos = torch.zeros(self.rows, self.length, dtype=torch.long)
        for row, idx in zip(self.clip_row, self.index):
            pos[row, idx] = torch.arange(len(idx))
        return pos

    def allowed(self) -> torch.Tensor:
        """(R, T, T) bool: query t may attend to key u.  The union of every clip's causal mask over
        its own positions (in a trie a shared token's past is the same in every clip through it);
        padding attends to itself only, so no softmax row is empty."""
        ok = torch.eye(self.length, dtype=torch.bool).repeat(self.rows, 1, 1)
        for row, idx in zip(self.clip_row, self.index):
            causal = torch.ones(len(idx), len(idx), dtype=torch.bool).tril()
            ok[row, idx[:, None], idx[None, :]] |= causal
        return ok


def attention_cost(config) -> float:
    """Rough cost of one query-key pair of attention (scores and weighted values) relative to one
    token's projections, from a Llama-style config; it only steers how packs are put into rows."""
    d = config.hidden_size
    kv = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head = getattr(config, "head_dim", None) or d // config.num_attention_heads
    per_token = d * (2 * d + 2 * kv * head) + 3 * d * getattr(config, "intermediate_size", 4 * d)
    return 2 * d / per_token


def _rows(tries: list, attention_cost: float) -> list[list]:
    """Packs into rows: first fit, longest first, for a few row capacities (from the longest pack
    to one row for all); keeps the cheapest, R*T*(1 + attention_cost*T).  More rows mean padding,
    one long row means attention over many keys a query may not see."""
    sizes = [t[3] for t in tries]
    best, best_cost = None, math.inf
    for k in range(1, len(tries) + 1):
        capacity = max(max(sizes), math.ceil(sum(sizes) / k))
        rows: list[list] = []
        for trie in sorted(tries, key=lambda t: -t[3]):               # stable: ties keep batch order
            row = next((r for r in rows if sum(t[3] for t in r) + trie[3] <= capacity), None)
            if row is None:
                rows.append([trie])
            else:
                row.append(trie)
        T = max(sum(t[3] for t in r) for r in rows)
        cost = len(rows) * T * (1 + attention_cost * T)
        if cost < best_cost:
            best, best_cost = rows, cost
    return best


def pack_layout(samples: list[ClipSample], visual_lengths: list[int], share_prefix: bool = True,
                attention_cost: float = 0.0) -> PackedLayout:
    """The packed layout of ``samples`` whose visual parts have ``visual_lengths`` tokens.

    ``share_prefix`` False puts every clip in a pack of its own (the per-clip layout, for comparison).
    ``attention_cost``: see :func:`attention_cost` (0: fewest positions, i.e. one row).
    Built from lengths and token ids only (never from the pad id).
    """
    packs: dict[object, list[int]] = {}
    for b, s in enumerate(samples):
        key = s.video if (share_prefix and s.video) else ("", b)    # "": a clip of no known video
        packs.setdefault(key, []).append(b)
    branch_len = [visual_lengths[b] + len(s.suffix_ids) + len(s.target_ids) for b, s in enumerate(samples)]
    for b, s in enumerate(samples):
        if len(s.prefix_ids) + branch_len[b] - len(s.target_ids) < 1:
            raise ValueError(f"batch sample {b}: the target ({len(s.target_ids)} tokens) must follow "
                             f"a non-empty prompt")
    # A token trie per pack: node k holds one token; paths[b] are the nodes of sample b's prefix.
    tries = []
    for members in packs.values():
        children: dict[tuple[int, int], int] = {}
        tokens: list[int] = []
        paths = {}
        for b in members:
            parent, path = -1, []
            for t in samples[b].prefix_ids.tolist():
                node = children.get((parent, t))
                if node is None:
                    node = children[(parent, t)] = len(tokens)
                    tokens.append(t)
                path.append(node)
                parent = node
            paths[b] = path
        tries.append((members, tokens, paths, len(tokens) + sum(branch_len[b] for b in members)))
    rows = _rows(tries, attention_cost)
    length = max(sum(t[3] for t in row) for row in rows)
    clip_row, index, start = [0] * len(samples), [None] * len(samples), [0] * len(samples)
    node_ids, node_row, node_col = [], [], []
    for r, row in enumerate(rows):
        col = 0
        for members, tokens, paths, size in row:
            first = col
            node_ids += tokens
            node_row += [r] * len(tokens)
            node_col += range(col, col + len(tokens))
            col += len(tokens)
            for b in members:
                clip_row[b], start[b] = r, col
                index[b] = torch.cat([first + torch.tensor(paths[b], dtype=torch.long),
                                      torch.arange(col, col + branch_len[b])])
                col += branch_len[b]
    return PackedLayout(rows=len(rows), length=length, clip_row=clip_row, index=index,
                        node_ids=torch.tensor(node_ids, dtype=torch.long),
                        node_row=torch.tensor(node_row, dtype=torch.long),
                        node_col=torch.tensor(node_col, dtype=torch.long), branch_start=start,
                        branch_len=branch_len)


# -- the whole model -------------------------------------------------------------------

def default_device() -> torch.device:
    """Where a narrator runs unless told otherwise: the GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class VideoNarrator(nn.Module):
    def __init__(self, cfg: VideoNarratorConfig, llm: nn.Module, tokenizer):
        super().__init__()
        D = llm.config.hidden_size
        if cfg.llm_dim not in (0, D):
            raise ValueError(f"config llm_dim {cfg.llm_dim} does not match the LLM's hidden size {D}; "
                             f"was this narrator trained on another LLM?")
        self.cfg = cfg = replace(cfg, llm_dim=D)  # a copy: profiles stay untouched
        self.visual = VisualEncoder(cfg) if cfg.use_video else None
        # generated mode's label: frames (where it sees video) and place, not the LLM's likelihood
        features = cfg.num_patches * cfg.vision_width if cfg.use_video else 0
        self.label_head = LabelHead(features) if cfg.label_head else None
        self.llm = llm                  # peft model: base weights frozen, LoRA trainable
        self.tokenizer = tokenizer
        # the prompt this narrator trains, narrates and is probed with (evaluate's zero-shot row replaces it)
        self.prompt_options = PromptOptions(position_text=cfg.position_text)

    @classmethod
    def from_llm(cls, cfg: VideoNarratorConfig, llm_path: str | Path, lora: LoraSettings | None,
                 dtype: torch.dtype = torch.float32, trust_remote_code: bool = False,
                 attn_implementation: str | None = None) -> "VideoNarrator":
        """A new narrator: a fresh visual side and LoRA adapter on the LLM in ``llm_path``."""
        llm, tokenizer = load_llm(llm_path, lora=lora, dtype=dtype, trust_remote_code=trust_remote_code,
                                  attn_implementation=attn_implementation)
        return cls(cfg, llm, tokenizer)

    # The Hugging Face model under the peft wrapper, its decoder stack and its output head.
    def _hf(self) -> nn.Module:
        return self.llm.get_base_model() if hasattr(self.llm, "get_base_model") else self.llm

    def decoder(self) -> nn.Module:
        hf = self._hf()
        return getattr(hf, hf.base_model_prefix)

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """(L,) token ids -> (L, D) input embeddings."""
        return self._hf().get_input_embeddings()(ids)

    def embed_text(self, text: str) -> torch.Tensor:
        """(L, D) input embeddings of ``text`` as it stands inside a sentence (after a space)."""
        device = self._hf().get_input_embeddings().weight.device
        return self.embed_tokens(_ids(self.tokenizer, " " + text.strip()).to(device))

    def build_inputs_embeds(self, batch: ClipBatch, with_target: bool = True,
                            visual: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """Per-sample embedding sequences [prefix][visual][suffix](+[target]), each (L_b, D).

        For generation pass ``with_target=False`` and pad on the left with
        :func:`pad_embeds` (``side="left"``); ``visual``: the samples' visual
        embeddings when the caller computed them (else from the samples' frames).
        """
        if visual is None and self.visual is None:
            visual = [None] * len(batch)
        elif visual is None:
            visual = self.visual([s.clip_patches for s in batch.samples],
                                 [s.earlier_patches for s in batch.samples],
                                 [s.bucket for s in batch.samples])
        seqs = []
        for s, v in zip(batch.samples, visual):
            ids = [s.prefix_ids, s.suffix_ids] + ([s.target_ids] if with_target else [])
            text = self.embed_tokens(torch.cat(ids)).split([len(t) for t in ids])  # one lookup per sample
            parts = [text[0]] + ([v.to(text[0].dtype)] if v is not None else []) + list(text[1:])
            seqs.append(torch.cat(parts))
        return seqs

    def forward(self, batch: ClipBatch, share_prefix: bool = True, label_weight: float = 1.0,
                fact_weight: float = 1.0, stop_weight: float = 1.0) -> torch.Tensor:
        """Mean cross-entropy over all target tokens of the batch (scalar).

        The clips of one video run packed (:func:`pack_layout`), each with exactly its own
        sample's context, so the loss equals that of one sequence per clip (``share_prefix``
        False: one pack per clip, the per-clip layout, for comparison).  ``label_weight``:
        the weight of the label line's tokens (``ClipSample.label_tokens``) against the
        narration's 1, and ``fact_weight`` that of the visible facts' words
        (``ClipSample.fact_tokens``) and ``stop_weight`` that of the tokens that set the length
        (``ClipSample.stop_tokens``), in a weighted mean (all 1.0: the plain mean).
        """
        logits, labels = self._target_logits(batch, share_prefix)
        if label_weight == 1.0 and fact_weight == 1.0 and stop_weight == 1.0:
            return F.cross_entropy(logits.float(), labels)
        weight = torch.cat([target_weights(s, label_weight, fact_weight, stop_weight)
                            for s in batch.samples]).to(logits.device)
        token = F.cross_entropy(logits.float(), labels, reduction="none")             # (N,)
        return (token * weight).sum() / weight.sum()

    def target_logprobs(self, batch: ClipBatch) -> torch.Tensor:
        """(B,) summed log-probability of each sample's target given its own context
        (teacher forced, packed like :meth:`forward`)."""
        logits, labels = self._target_logits(batch, share_prefix=True)
        token = -F.cross_entropy(logits.float(), labels, reduction="none")           # (N,)
        return torch.stack([t.sum() for t in token.split([len(s.target_ids) for s in batch.samples])])

    def _target_logits(self, batch: ClipBatch, share_prefix: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, V) logits before each of the batch's N target tokens, and the (N,) targets."""
        samples = batch.samples
        visual = self.visual([s.clip_patches for s in samples], [s.earlier_patches for s in samples],
                             [s.bucket for s in samples]) if self.visual is not None else [None] * len(samples)
        layout = pack_layout(samples, [0 if v is None else len(v) for v in visual], share_prefix,
                             attention_cost(self._hf().config))
        # One embedding lookup for the shared prefix tokens and every suffix and target.
        text = [s.suffix_ids for s in samples] + [s.target_ids for s in samples]
        emb = self.embed_tokens(torch.cat([layout.node_ids.to(text[0].device)] + text))
        nodes, *rest = emb.split([len(layout.node_ids)] + [len(t) for t in text])
        x = emb.new_zeros(layout.rows, layout.length, emb.shape[-1])               # (R, T, D)
        x[layout.node_row, layout.node_col] = nodes
        B = len(samples)
        for b, v in enumerate(visual):
            branch = torch.cat(([v.to(emb.dtype)] if v is not None else []) + [rest[b], rest[B + b]])
            x[layout.clip_row[b], layout.branch_start[b]:layout.branch_start[b] + len(branch)] = branch
        # The hidden state before each target token predicts it: positions from the clip's own sequence.
        rows = torch.cat([torch.full((len(s.target_ids),), layout.clip_row[b]) for b, s in enumerate(samples)])
        cols = torch.cat([idx[len(idx) - len(s.target_ids) - 1:len(idx) - 1]
                          for idx, s in zip(layout.index, samples)])
        labels = torch.cat([s.target_ids for s in samples]).to(x.device)          # (N,)
        hidden = self.decoder()(inputs_embeds=x, attention_mask=self._attention_mask(layout, x),
                                position_ids=layout.position_ids().to(x.device), use_cache=False).last_hidden_state
        logits = self._hf().get_output_embeddings()(hidden[rows, cols])            # (N, V): the head on targets only
        return logits, labels

    def _attention_mask(self, layout: PackedLayout, x: torch.Tensor) -> torch.Tensor:
        return self.attention_mask_4d(layout.allowed().to(x.device)[:, None], x.dtype)   # (R, 1, T, T)

    def attention_mask_4d(self, allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """A boolean (R, 1, T, S) mask (True: attend) as transformers takes a ready 4D mask: eager
        adds it to the scores (0 or the dtype's minimum), sdpa takes the booleans."""
        impl = self._hf().config._attn_implementation
        if impl == "sdpa":
            return allowed
        if impl == "eager":
            return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
                ~allowed, torch.finfo(dtype).min)
        raise ValueError(f"packed sequences (training, label scoring) need a 4D attention mask, which needs "
                         f"eager or sdpa attention; the LLM uses {impl!r}: set llm.attn_implementation to "
                         f"eager or sdpa")

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        """Q-Former, query tokens, position embeddings, projector (``visual.*``) and LoRA (``llm.*``)."""
        return {name: p for name, p in self.named_parameters() if p.requires_grad}

    # -- persistence -------------------------------------------------------------------

    def save_pretrained(self, out_dir: str | Path) -> Path:
        """config.json + visual.safetensors + label_head.safetensors + adapter/ (peft), written atomically."""
        from safetensors.torch import save_file
        out_dir = Path(out_dir)
        with atomic_path(out_dir) as tmp:
            tmp.mkdir()
            write_json(tmp / "config.json", self.cfg.to_dict())
            for name in ("visual", "label_head"):
                part = getattr(self, name)
                if part is not None:
                    save_file({k: v.detach().contiguous() for k, v in part.state_dict().items()},
                              str(tmp / f"{name}.safetensors"))
            self.llm.save_pretrained(str(tmp / "adapter"))
        return out_dir

    @classmethod
    def from_pretrained(cls, in_dir: str | Path, llm_path: str | Path, dtype: torch.dtype = torch.float32,
                        trainable: bool = False, trust_remote_code: bool = False,
                        attn_implementation: str | None = None,
                        device: str | torch.device | None = None, merge: bool = False) -> "VideoNarrator":
        """Load a saved narrator on top of the base LLM in ``llm_path`` (eval mode unless ``trainable``),
        on ``device`` (None: :func:`default_device`, the GPU when there is one).  ``merge``: its LoRA
        adapter folded into the LLM's weights (narrating only: :func:`llm.load_llm`)."""
        from safetensors.torch import load_file
        in_dir = Path(in_dir)
        if not (in_dir / "config.json").exists():
            raise FileNotFoundError(f"{in_dir} is not a saved VideoNarrator (config.json missing); "
                                    f"train one first or check the path")
        cfg = VideoNarratorConfig.from_dict(read_json(in_dir / "config.json"))
        llm, tokenizer = load_llm(llm_path, lora=None, dtype=dtype, adapter_dir=in_dir / "adapter",
                                  trainable=trainable, trust_remote_code=trust_remote_code,
                                  attn_implementation=attn_implementation, merge=merge)
        model = cls(cfg, llm, tokenizer)
        parts = {name: getattr(model, name) for name in ("visual", "label_head") if getattr(model, name) is not None}
        state = {}
        for name in parts:
            weights = in_dir / f"{name}.safetensors"
            if weights.exists():
                state[name] = load_file(str(weights))
        # narrators saved before the head moved out of the visual encoder keep it in visual.safetensors
        old = {k: v for k, v in state.get("visual", {}).items() if k.startswith("label_head.")}
        if old:
            state["visual"] = {k: v for k, v in state["visual"].items() if k not in old}
            state.setdefault("label_head", {k.removeprefix("label_head."): v for k, v in old.items()})
        if "label_head" in parts and "label_head" not in state and model.visual is None:
            # a text-only narrator saved before text-only narrators had a head chooses by likelihood
            model.label_head, model.cfg = None, replace(model.cfg, label_head=False)
            del parts["label_head"]
        for name, part in parts.items():
            if name not in state:
                raise FileNotFoundError(f"{in_dir / (name + '.safetensors')} is missing; the saved narrator is "
                                        f"incomplete: train it again (dvc repro train) or check the model path")
            part.load_state_dict(state[name], strict=True)
            part.requires_grad_(trainable)
        return model.to(device or default_device()).train(trainable)
