"""Stage 1 of the visual side: the Q-Former learns to read the frames before the LLM steps.

BLIP-2 trains its Q-Former in two stages: first on the frozen image encoder alone, without the
LLM (vision-language representation learning on captioned images), then connected to the frozen
LLM.  The paper's narrator starts from that pretrained Q-Former.  Ours starts from random weights
on a random frozen tower, and the LLM's gradients alone (a few hundred small steps) taught it to
pass on colour and setting but never shape (README, *The caption probe*), although a linear
probe of the same frozen features names every visible value.

So before any LLM step, the visual path learns to name each training clip's caption values, the
colour, shape, action and setting that the caption warm-up writes (``synthetic.clip_values``),
in the LLM's own word space: the Q-Former's query outputs are split into one group per value
kind, each group's mean goes through the projector, and its cosine similarity with the LLM's
(frozen) input embedding of every value of that kind is a logit; the loss is the cross-entropy of
the true values.  A clip's visual tokens then point at the words for what it shows, which the LLM
can copy.  There is no LLM forward pass in this loop, so a step of 32 clips costs milliseconds
and a thousand steps take under a minute on a CPU.  The targets are the generator's truth of the
*training* clips (as for the caption warm-up); real data has no such truth and skips this stage,
and the paper profile starts from BLIP-2's weights instead.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .progress import progress_bar

SCALE = 10.0   # cosine logits x 10: a softmax temperature of 0.1, as contrastive losses use


@dataclass
class ClipValues:
    """What stage 1 learns from: each clip's kept frames and its value of each kind."""
    frames: list[torch.Tensor]          # per clip (F, P, W) kept frames
    values: torch.Tensor                # (N, K) long: clip n's value of kind k (index into vocab[k])
    kinds: tuple[str, ...]              # K kind names
    vocab: tuple[tuple[str, ...], ...]  # per kind, the phrases of its values

    def __len__(self) -> int:
        return len(self.frames)


@dataclass
class PretrainConfig:
    steps: int
    lr: float
    batch_size: int
    seed: int


def value_embeddings(data: ClipValues, embed_text: Callable[[str], torch.Tensor]) -> list[torch.Tensor]:
    """Per kind, (V_k, D) unit vectors: the mean input embedding of each value phrase's tokens
    (``embed_text``: phrase -> (L, D), the LLM's embedding of the phrase as it stands in a sentence)."""
    with torch.no_grad():
        return [F.normalize(torch.stack([embed_text(p).float().mean(dim=0) for p in phrases]), dim=-1)
                for phrases in data.vocab]


def query_groups(num_queries: int, kinds: int) -> list[list[int]]:
    """The queries each value kind reads: the Q queries split into K groups in order (with fewer
    queries than kinds, kind k shares query k mod Q)."""
    if num_queries < kinds:
        return [[k % num_queries] for k in range(kinds)]
    return [g.tolist() for g in torch.tensor_split(torch.arange(num_queries), kinds)]


def kind_tokens(visual: nn.Module, frames: list[torch.Tensor], kinds: int) -> torch.Tensor:
    """(B,) clips' kept frames -> (B, K, D): per value kind, the projected mean of its group of
    queries (:func:`query_groups`), averaged over the clip's frames."""
    queries = visual.encode_frames(torch.cat(frames))                            # (sum F, Q, H)
    groups = torch.stack([queries[:, g].mean(dim=1) for g in query_groups(queries.shape[1], kinds)],
                         dim=1)                                                  # (sum F, K, H)
    per_clip = torch.stack([g.mean(dim=0) for g in groups.split([len(f) for f in frames])])          # (B, K, H)
    return visual.projector(per_clip)                                                               # (B, K, D)


def logits(tokens: torch.Tensor, words: list[torch.Tensor]) -> list[torch.Tensor]:
    """(B, K, D) kind tokens -> per kind (B, V_k) scaled cosine similarities with its values' words."""
    tokens = F.normalize(tokens.float(), dim=-1)
    return [SCALE * tokens[:, k] @ w.T for k, w in enumerate(words)]


def accuracy(visual: nn.Module, words: list[torch.Tensor], data: ClipValues, batch_size: int = 256
             ) -> dict[str, float]:
    """Share of ``data``'s clips whose value of each kind is the nearest word to its kind token."""
    was_training = visual.training
    visual.eval()
    hits = torch.zeros(len(data.kinds))
    with torch.no_grad():
        for k in range(0, len(data), batch_size):
            out = logits(kind_tokens(visual, data.frames[k:k + batch_size], len(data.kinds)), words)
            truth = data.values[k:k + batch_size]
            hits += torch.stack([(x.argmax(-1).cpu() == truth[:, j]).sum() for j, x in enumerate(out)]).float()
    visual.train(was_training)
    return {kind: float(hits[j] / len(data)) for j, kind in enumerate(data.kinds)}


def pretrain_visual(visual: nn.Module, data: ClipValues, embed_text: Callable[[str], torch.Tensor],
                    cfg: PretrainConfig, val: ClipValues | None = None, progress: bool = True) -> dict:
    """Train ``visual``'s Q-Former, query tokens, patch position embedding and projector in place
    so that each kind's tokens name ``data``'s values among that kind's words (the clip-position
    embedding is left to the LLM steps); returns the stage's figures: losses, wall time, accuracy
    on ``data`` and on ``val``."""
    if len(data) == 0:
        raise ValueError("stage 1 has no clip with caption values to learn from; set train.qformer_steps: 0 "
                         "for data without the generator's truth")
    device = visual.query_tokens.device
    words = [w.to(device) for w in value_embeddings(data, embed_text)]
    params = [visual.query_tokens, *visual.qformer.parameters(), *visual.projector.parameters()]
    if visual.patch_pos is not None:
        params.append(visual.patch_pos)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    order = torch.Generator().manual_seed(cfg.seed)
    visual.train()
    losses, t0 = [], time.time()
    for _ in progress_bar(range(cfg.steps), desc="stage 1: Q-Former", disable=not progress):
        idx = torch.randint(len(data), (cfg.batch_size,), generator=order)
        out = logits(kind_tokens(visual, [data.frames[i].to(device) for i in idx.tolist()], len(data.kinds)), words)
        truth = data.values[idx].to(device)
        loss = sum(F.cross_entropy(x, truth[:, j]) for j, x in enumerate(out))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    tail = losses[-50:]
    return {"steps": cfg.steps, "wall_s": time.time() - t0, "first_loss": losses[0] if losses else None,
            "final_loss": sum(tail) / len(tail) if tail else None,
            "train_acc": accuracy(visual, words, data), "val_acc": accuracy(visual, words, val) if val else None,
            "loss": losses[::10]}
