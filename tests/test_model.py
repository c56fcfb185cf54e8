from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from helpers import DEFAULTS, make_tiny_llm
from videonarrator.dataset import VisualInputs, clip_sample
from videonarrator.model import (ClipBatch, ClipSample, VideoNarrator, VideoNarratorConfig, VisualEncoder,
                                 clip_bucket, collate, default_device, encode_sample, pack_layout, pad_embeds,
                                 position_bucket, target_weights)
from videonarrator.prompt import build_clip_prompt
from videonarrator.schema import Clip, Product, Video

P, W, Q = 5, 16, 4          # patches per frame, vision width, query tokens
CFG = VideoNarratorConfig(vision_width=W, num_patches=P, qformer_hidden=16, qformer_layers=2, qformer_heads=2,
                          num_query_tokens=Q, patch_pos_embed=True, memory_frames=1, story_clips=None, label_head=False)
LORA = DEFAULTS.lora(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])


def make_video() -> Video:
    narr = ["Dry skin all winter?", "Meet the aloe cream.", "Grab it today."]
    clips = [Clip(index=i, start=3.0 * i, end=3.0 * (i + 1), window=(2, 8), labels=["pain_point"], narration=n)
             for i, n in enumerate(narr)]
    return Video(id="v1", product=Product("Aloe Cream", {"ingredients": ["aloe vera", "vitamin E"]}), clips=clips)


@pytest.fixture(scope="module")
def llm_dir(tmp_path_factory):
    v = make_video()
    corpus = [build_clip_prompt(v, i, mode=m).text() for i in range(3) for m in ("given", "generated")] * 10
    return make_tiny_llm(tmp_path_factory.mktemp("llm") / "tiny", corpus)


def build(llm_dir, seed=0, **overrides) -> VideoNarrator:
    torch.manual_seed(seed)
    return VideoNarrator.from_llm(replace(CFG, **overrides), llm_dir, lora=LORA)


def frames(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, P, W, generator=torch.Generator().manual_seed(seed))


def make_batch(model: VideoNarrator, clips=(0, 2), mode="given") -> ClipBatch:
    v = make_video()
    clip_frames = [frames(2, 10), frames(3, 11), frames(1, 12)]
    samples = [encode_sample(model.tokenizer, build_clip_prompt(v, i, mode=mode), clip_frames[i],
                             torch.cat(clip_frames[:i]) if i else None, clip_bucket(v, i)) for i in clips]
    return collate(samples)


# -- configuration and small helpers ----------------------------------------------------

def test_position_bucket():
    assert position_bucket(0, 2, 100) == 1          # midpoint 1 s of 100 s -> 1 %
    assert position_bucket(98, 100, 100) == 99
    assert position_bucket(99.9, 100, 100) == 99     # clamped, never 100
    assert position_bucket(0, 10, 10) == 50
    assert clip_bucket(make_video(), 2) == 83        # midpoint 7.5 s of 9 s
    with pytest.raises(ValueError, match="duration"):
        position_bucket(0, 1, 0)


def test_config_round_trip_and_unknown_key():
    cfg = replace(CFG, memory_frames=3, use_position=False, llm_dim=32)
    assert VideoNarratorConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="qformer_width"):
        VideoNarratorConfig.from_dict({**cfg.to_dict(), "qformer_width": 3})
    saved_before_the_head = {k: v for k, v in replace(cfg, label_head=True).to_dict().items() if k != "label_head"}
    assert VideoNarratorConfig.from_dict(saved_before_the_head) == cfg    # such a narrator has no head


def test_pad_embeds():
    a, b = torch.ones(3, 2), 2 * torch.ones(1, 2)
    x, m = pad_embeds([a, b], side="left")
    assert m.tolist() == [[1, 1, 1], [0, 0, 1]] and x[1, 2].tolist() == [2, 2] and x[1, 0].tolist() == [0, 0]
    x, m = pad_embeds([a, b], side="right")
    assert m.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_pack_layout_positions_and_empty_prompt():
    ids = lambda *t: torch.tensor(t, dtype=torch.long)                                   # noqa: E731
    none = torch.zeros(0, P, W)
    a = ClipSample(ids(1, 2), ids(5), ids(7, 8), none, none, 0, video="v")
    b = ClipSample(ids(1, 2, 3), ids(6), ids(9), none, none, 0, video="v")
    layout = pack_layout([a, b], [2, 0])
    assert layout.used == 3 + (2 + 1 + 2) + (1 + 1)                                      # prefix tokens once
    pos = layout.position_ids()[0]
    assert [pos[i].item() for i in layout.index[0]] == list(range(7))
    assert [pos[i].item() for i in layout.index[1]] == list(range(5))
    ok = layout.allowed()[0]
    assert not ok[layout.index[1][-1], layout.index[0][-1]] and not ok[layout.index[0][2], layout.index[1][2]]
    with pytest.raises(ValueError, match="non-empty prompt"):
        pack_layout([ClipSample(ids(), ids(), ids(4), none, none, 0)], [0])


def test_collate_rejects_mismatched_frames(llm_dir):
    model = build(llm_dir)
    good = make_batch(model).samples[0]
    bad = replace(good, clip_patches=torch.randn(2, P + 1, W))
    with pytest.raises(ValueError, match=r"batch sample 1: clip_patches has shape \(2, 6, 16\)"):
        collate([good, bad])


# -- what the switches change ------------------------------------------------------------------

def visual_len(model, clip_frames, earlier, bucket=10) -> int:
    return len(model.visual([clip_frames], [earlier], [bucket])[0])


def test_memory_switch_and_groups(llm_dir):
    model = build(llm_dir).eval()
    cur, prev = frames(3, 1), frames(5, 2)
    assert visual_len(model, cur, prev) == Q + 3 * Q                # all earlier frames -> one frame of queries
    assert visual_len(model, cur, None) == 3 * Q                    # first clip: no memory
    assert visual_len(model, cur, prev[:0]) == 3 * Q
    assert visual_len(build(llm_dir, memory_frames=2).eval(), cur, prev) == 2 * Q + 3 * Q
    assert visual_len(build(llm_dir, memory_frames=9).eval(), cur, prev) == 5 * Q + 3 * Q  # fewer frames than groups
    off = build(llm_dir, use_memory=False).eval()
    assert visual_len(off, cur, prev) == 3 * Q
    with torch.no_grad():
        # memory off: the earlier frames cannot matter at all
        assert torch.equal(off.visual([cur], [prev], [5])[0], off.visual([cur], [frames(5, 3)], [5])[0])
        # memory on: the memory tokens are the projected mean of the earlier frames' query outputs, placed first
        out = model.visual([cur], [prev], [5])[0]
        mem = model.visual.projector(model.visual.encode_frames(prev).mean(0))
        torch.testing.assert_close(out[:Q], mem)
        torch.testing.assert_close(out[Q:], model.visual([cur], [None], [5])[0])


def test_position_switch(llm_dir):
    cur, prev = frames(2, 1), frames(2, 2)
    on = build(llm_dir).eval()
    off = build(llm_dir, use_position=False).eval()
    assert off.visual.clip_pos is None
    with torch.no_grad():
        a, b = on.visual([cur, cur], [prev, prev], [3, 90])
        assert not torch.allclose(a[Q:], b[Q:])      # the clip's tokens carry its position...
        assert torch.equal(a[:Q], b[:Q])             # ...the memory tokens do not (documented choice)
        a, b = off.visual([cur, cur], [prev, prev], [3, 90])
        assert torch.equal(a, b)
        with pytest.raises(ValueError, match="bucket 100"):
            on.visual([cur], [prev], [100])


def test_patch_position_switch(llm_dir):
    on = build(llm_dir).eval()
    off = build(llm_dir, patch_pos_embed=False).eval()
    assert on.visual.patch_pos.shape == (P, W) and off.visual.patch_pos is None
    x = frames(2, 4)
    with torch.no_grad():
        base = on.visual.encode_frames(x)
        on.visual.patch_pos.add_(1.0)
        assert not torch.allclose(base, on.visual.encode_frames(x))   # it reaches the Q-Former input


def test_video_switch_is_text_only(llm_dir):
    model = build(llm_dir, use_video=False).eval()
    assert model.visual is None
    assert all(n.startswith("llm.") and "lora_" in n for n in model.trainable_parameters())
    batch = make_batch(model)
    seqs = model.build_inputs_embeds(batch)
    for s, seq in zip(batch.samples, seqs):
        assert len(seq) == len(s.prefix_ids) + len(s.suffix_ids) + len(s.target_ids)
        torch.testing.assert_close(seq, model.embed_tokens(torch.cat([s.prefix_ids, s.suffix_ids, s.target_ids])))
    with torch.no_grad():
        changed = ClipBatch([replace(s, clip_patches=s.clip_patches + 5) for s in batch.samples])
        assert torch.equal(model(batch), model(changed))     # frames cannot matter


def test_inputs_layout_with_video(llm_dir):
    model = build(llm_dir).eval()
    batch = make_batch(model, clips=(2,))
    s = batch.samples[0]
    with torch.no_grad():
        seq = model.build_inputs_embeds(batch)[0]
        vis = model.visual([s.clip_patches], [s.earlier_patches], [s.bucket])[0]
    lp, lv, ls = len(s.prefix_ids), len(vis), len(s.suffix_ids)
    assert lv == Q + 1 * Q                                          # memory (5 earlier frames) + 1 kept frame
    assert len(seq) == lp + lv + ls + len(s.target_ids)
    torch.testing.assert_close(seq[:lp], model.embed_tokens(s.prefix_ids))
    torch.testing.assert_close(seq[lp:lp + lv], vis)
    torch.testing.assert_close(seq[lp + lv:lp + lv + ls], model.embed_tokens(s.suffix_ids))
    assert s.target_ids[-1].item() == model.tokenizer.eos_token_id
    no_target = model.build_inputs_embeds(batch, with_target=False)[0]
    assert len(no_target) == lp + lv + ls


# -- loss and gradients ---------------------------------------------------------------------------

def hand_loss(model, batch) -> torch.Tensor:
    """Cross-entropy over the target tokens, from the full LM logits of each sample on its own."""
    total, count = 0.0, 0
    for seq, s in zip(model.build_inputs_embeds(batch), batch.samples):
        logits = model.llm(inputs_embeds=seq[None]).logits[0]        # (L, V), no padding at all
        Lt = len(s.target_ids)
        total = total + F.cross_entropy(logits[-Lt - 1:-1], s.target_ids, reduction="sum")
        count += Lt
    return total / count


def test_loss_is_cross_entropy_on_targets_only(llm_dir):
    model = build(llm_dir).eval()
    batch = make_batch(model, clips=(0, 1, 2), mode="generated")
    with torch.no_grad():
        loss = model(batch)
        torch.testing.assert_close(loss, hand_loss(model, batch), rtol=1e-5, atol=1e-5)
        # The prefix may contain the pad/eos id (SmolLM2: pad == eos): the loss is still over the same
        # target positions (a pad-id mask would drop these tokens and the final EOS of the target).
        eos = model.tokenizer.eos_token_id
        with_eos = ClipBatch([replace(s, prefix_ids=torch.cat([s.prefix_ids, torch.tensor([eos, eos])]))
                              for s in batch.samples])
        torch.testing.assert_close(model(with_eos), hand_loss(model, with_eos), rtol=1e-5, atol=1e-5)
        # Changing the prompt changes the context, never which tokens are scored: the target log-probs of
        # the first sample are unaffected by other samples (no leakage through padding).
        single = ClipBatch(batch.samples[:1])
        torch.testing.assert_close(model(single), hand_loss(model, single), rtol=1e-5, atol=1e-5)


def test_label_weight_weights_the_label_line_tokens(llm_dir):
    model = build(llm_dir).eval()
    batch = make_batch(model, clips=(0, 1, 2), mode="generated")
    for s, i in zip(batch.samples, (0, 1, 2)):
        line = build_clip_prompt(make_video(), i, mode="generated").label_line
        assert line.endswith("\n") and model.tokenizer.decode(s.target_ids[:s.label_tokens]) == line
    moved = batch.to("cpu")   # training moves each batch to its device: the label tokens go along
    assert [s.label_tokens for s in moved.samples] == [s.label_tokens for s in batch.samples]
    given = make_batch(model, clips=(0, 1), mode="given")
    assert [s.label_tokens for s in given.samples] == [0, 0]
    with torch.no_grad():
        logits, labels = model._target_logits(batch, share_prefix=True)
        token = F.cross_entropy(logits.float(), labels, reduction="none")
        is_label = torch.cat([torch.arange(len(s.target_ids)) < s.label_tokens for s in batch.samples])
        want = (3 * token[is_label].sum() + token[~is_label].sum()) / (3 * is_label.sum() + (~is_label).sum())
        torch.testing.assert_close(model(batch, label_weight=3.0), want)
        torch.testing.assert_close(model(batch, label_weight=1.0), token.mean())
        assert not torch.isclose(model(batch, label_weight=3.0), token.mean())
        torch.testing.assert_close(model(given, label_weight=3.0), model(given))   # no label line: no change


def fact_video() -> Video:
    truth = {"colour": "red", "shape": "round", "action": "held in a hand", "stated": ["colour", "action"]}
    narr = ["Dry skin all winter?", "Meet the  red aloe cream,\nheld in a hand.", "Grab it today."]
    clips = [Clip(index=i, start=3.0 * i, end=3.0 * (i + 1), window=(2, 8), labels=["pain_point"], narration=n,
                  truth=truth if i == 1 else {}) for i, n in enumerate(narr)]
    return Video(id="v2", product=Product("Aloe Cream", {"ingredients": ["aloe vera"]}), clips=clips)


def test_fact_weight_weights_the_visible_facts_words(llm_dir):
    model = build(llm_dir).eval()
    video = fact_video()
    clip_frames = [frames(2, 10), frames(3, 11), frames(1, 12)]
    visual = VisualInputs(clips=clip_frames, kept=[[0, 1], [0, 1, 2], [0]], totals=[2, 3, 1])
    for mode in ("given", "generated"):
        prompt = build_clip_prompt(video, 1, mode=mode)
        assert prompt.target[prompt.narration_at:] == "Meet the red aloe cream, held in a hand."
        s = clip_sample(model.tokenizer, video, 1, visual, mode)
        runs = [[s.fact_tokens[0]]]   # maximal runs of consecutive fact tokens: one per stated fact
        for k in s.fact_tokens[1:]:
            runs[-1].append(k) if k == runs[-1][-1] + 1 else runs.append([k])
        assert [model.tokenizer.decode(s.target_ids[r]).strip(" ,.") for r in runs] == ["red", "held in a hand"]
        # the shape is in the truth but not stated; clips without truth have no fact tokens
        assert clip_sample(model.tokenizer, video, 0, visual, mode).fact_tokens == ()
    batch = collate([clip_sample(model.tokenizer, video, i, visual, "generated") for i in range(3)])
    assert [s.fact_tokens for s in batch.to("cpu").samples] == [s.fact_tokens for s in batch.samples]
    with torch.no_grad():
        logits, labels = model._target_logits(batch, share_prefix=True)
        token = F.cross_entropy(logits.float(), labels, reduction="none")
        weight = torch.cat([target_weights(s, 2.0, 5.0) for s in batch.samples])
        assert set(weight.tolist()) == {1.0, 2.0, 5.0}
        torch.testing.assert_close(model(batch, label_weight=2.0, fact_weight=5.0),
                                   (token * weight).sum() / weight.sum())
        torch.testing.assert_close(model(batch, fact_weight=1.0), token.mean())
        assert not torch.isclose(model(batch, fact_weight=5.0), token.mean())


def test_stop_weight_weights_the_tokens_that_set_the_length(llm_dir):
    model = build(llm_dir).eval()
    narr = ["Tired of frizz? This oil smooths it. Shine all day.", "Order now."]
    video = Video(id="v3", product=Product("Hair Oil", {}), clips=[
        Clip(index=i, start=2.0 * i, end=2.0 * (i + 1), window=(2, 12), labels=["product_efficacy"], narration=n)
        for i, n in enumerate(narr)])
    visual = VisualInputs(clips=[frames(2, 20), frames(1, 21)], kept=[[0, 1], [0]], totals=[2, 1])
    for mode in ("given", "generated"):
        s = clip_sample(model.tokenizer, video, 0, visual, mode)
        # two sentence ends inside the narration (go on: the token right after "?" / ".", whatever the
        # tokenizer makes of " This") and the EOS (stop); the label line has none
        before = [model.tokenizer.decode(s.target_ids[:k]) for k in s.stop_tokens[:-1]]
        assert len(before) == 2 and before[0].endswith("of frizz?") and before[1].endswith("smooths it.")
        assert s.stop_tokens[-1] == len(s.target_ids) - 1
        assert s.target_ids[-1] == model.tokenizer.eos_token_id
        assert clip_sample(model.tokenizer, video, 1, visual, mode).stop_tokens[:-1] == ()
    batch = collate([clip_sample(model.tokenizer, video, i, visual, "generated") for i in range(2)])
    assert [s.stop_tokens for s in batch.to("cpu").samples] == [s.stop_tokens for s in batch.samples]
    with torch.no_grad():
        logits, labels = model._target_logits(batch, share_prefix=True)
        token = F.cross_entropy(logits.float(), labels, reduction="none")
        weight = torch.cat([target_weights(s, 1.0, 1.0, 4.0) for s in batch.samples])
        assert weight.tolist().count(4.0) == 4
        torch.testing.assert_close(model(batch, stop_weight=4.0), (token * weight).sum() / weight.sum())
        torch.testing.assert_close(model(batch, stop_weight=1.0), token.mean())
        assert not torch.isclose(model(batch, stop_weight=4.0), token.mean())


def second_video() -> Video:
    narr = ["Tired of frizz?", "This oil smooths it.", "Shine all day.", "Order now."]
    clips = [Clip(index=i, start=2.0 * i, end=2.0 * (i + 1), window=(2, 8), labels=["product_efficacy"],
                  narration=n) for i, n in enumerate(narr)]
    return Video(id="v2", product=Product("Argan Oil", {"efficacy": ["smooths hair", "adds shine"]}), clips=clips)


def packed_batch(model, mode, story_clips) -> ClipBatch:
    """All clips of two videos plus a clip of no known video (packed alone), memory tokens from clip 2 on."""
    samples = []
    for k, v in enumerate([make_video(), second_video()]):
        clip_frames = [frames(1 + (i + k) % 3, 20 + 10 * k + i) for i in range(len(v.clips))]
        samples += [encode_sample(model.tokenizer, build_clip_prompt(v, i, mode=mode, story_clips=story_clips),
                                  clip_frames[i], torch.cat(clip_frames[:i]) if i else None, clip_bucket(v, i),
                                  video=v.id) for i in range(len(v.clips))]
    alone = make_video()
    samples.append(encode_sample(model.tokenizer, build_clip_prompt(alone, 1, mode=mode), frames(2, 50),
                                 frames(1, 51), clip_bucket(alone, 1)))
    return collate(samples)


def test_target_logprobs_are_each_samples_summed_log_probability(llm_dir):
    """Packed with other clips of its video, each sample scores as it does alone (videonarrator.probe)."""
    model = build(llm_dir).eval()
    batch = packed_batch(model, "given", None)
    with torch.no_grad():
        got = model.target_logprobs(batch)
        assert got.shape == (len(batch.samples),)
        for k, s in enumerate(batch.samples):
            want = -hand_loss(model, ClipBatch([s])) * len(s.target_ids)
            torch.testing.assert_close(got[k], want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("mode,story_clips,row_cost", [("given", None, 0.0), ("generated", None, 1.0),
                                                       ("given", 1, 1.0)])
def test_packed_loss_and_gradients_equal_the_per_clip_ones(llm_dir, attn, mode, story_clips, row_cost,
                                                           monkeypatch):
    # row_cost 0: every pack in one row; 1: a row per pack, right-padded to the longest
    monkeypatch.setattr("videonarrator.model.attention_cost", lambda config: row_cost)
    torch.manual_seed(0)
    model = VideoNarrator.from_llm(replace(CFG, memory_frames=2), llm_dir, lora=LORA, attn_implementation=attn)
    with torch.no_grad():   # LoRA B starts at zero, which would zero A's gradient: start from a non-trivial point
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.1)
    model.eval()            # no Q-Former dropout: both paths must see the same visual tokens (gradients still flow)
    batch = packed_batch(model, mode, story_clips)
    visual = [len(v) for v in model.visual([s.clip_patches for s in batch.samples],
                                           [s.earlier_patches for s in batch.samples],
                                           [s.bucket for s in batch.samples])]
    assert visual[1] == Q * (len(batch.samples[1].clip_patches) + 1)       # memory tokens are in the branch
    packed = pack_layout(batch.samples, visual, attention_cost=row_cost)
    alone = pack_layout(batch.samples, visual, share_prefix=False, attention_cost=row_cost)
    per_clip = sum(len(s.prefix_ids) + len(s.suffix_ids) + len(s.target_ids) for s in batch.samples) + sum(visual)
    assert alone.used == per_clip and packed.used < 0.8 * per_clip           # shared prefixes are computed once
    if row_cost:
        assert packed.rows == 2 and packed.positions > packed.used   # two packs share a row, one row is padded
    else:
        assert packed.rows == alone.rows == 1 and packed.positions == packed.used

    def loss_and_grads(fn):
        model.zero_grad(set_to_none=True)
        loss = fn(model, batch)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.trainable_parameters().items()}

    want, want_grads = loss_and_grads(hand_loss)                             # every clip alone, no padding
    for share in (True, False):
        got, got_grads = loss_and_grads(lambda m, b: m(b, share_prefix=share))
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        assert want_grads.keys() == got_grads.keys() and any(g.abs().sum() > 0 for g in want_grads.values())
        for n, g in want_grads.items():
            torch.testing.assert_close(got_grads[n], g, rtol=1e-4, atol=1e-6, msg=lambda m: f"{n}: {m}")


def test_gradients_reach_trainable_parts_only(llm_dir):
    model = build(llm_dir).train()
    with torch.no_grad():   # LoRA B starts at zero, which would zero A's gradient: start from a non-trivial point
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.1)
    batch = make_batch(model)
    model(batch).backward()
    names = model.trainable_parameters()
    groups = {"visual.qformer.": 0, "visual.query_tokens": 0, "visual.patch_pos": 0, "visual.clip_pos": 0,
              "visual.projector.": 0, "lora_A": 0, "lora_B": 0}
    for n, p in names.items():
        assert n.startswith("visual.") or "lora_" in n, n
        for key in groups:
            if key in n and p.grad is not None and p.grad.abs().sum() > 0:
                groups[key] += 1
    assert all(groups.values()), groups
    frozen = [(n, p) for n, p in model.named_parameters() if not n.startswith("visual.") and "lora_" not in n]
    assert frozen and all(not p.requires_grad and p.grad is None for _, p in frozen)
    # only the used buckets' rows of the clip-position table get a gradient
    used = {s.bucket for s in batch.samples}
    rows = model.visual.clip_pos.weight.grad.abs().sum(1).nonzero().flatten().tolist()
    assert set(rows) == used


# -- persistence and generation ---------------------------------------------------------------

def test_save_load_round_trip(llm_dir, tmp_path):
    model = build(llm_dir, seed=3, memory_frames=2)
    with torch.no_grad():
        for p in model.trainable_parameters().values():
            p.add_(0.05 * torch.randn_like(p))
    model.eval()
    batch = make_batch(model, clips=(1, 2))
    with torch.no_grad():
        loss = model(batch)
    model.save_pretrained(tmp_path / "narrator")
    assert {p.name for p in (tmp_path / "narrator").iterdir()} == {"config.json", "visual.safetensors", "adapter"}
    again = VideoNarrator.from_pretrained(tmp_path / "narrator", llm_dir, device="cpu")
    assert again.cfg == model.cfg and not again.training
    theirs = dict(again.named_parameters())
    assert set(theirs) == set(dict(model.named_parameters()))
    for n, p in model.named_parameters():
        assert torch.equal(p, theirs[n]), n
    with torch.no_grad():
        assert torch.equal(again(batch), loss)
    trainable = VideoNarrator.from_pretrained(tmp_path / "narrator", llm_dir, trainable=True)
    assert set(trainable.trainable_parameters()) == set(model.trainable_parameters())
    assert next(trainable.parameters()).device.type == default_device().type   # the GPU when there is one
    with pytest.raises(FileNotFoundError, match="config.json missing"):
        VideoNarrator.from_pretrained(tmp_path / "nothing", llm_dir)


def test_a_merged_adapter_narrates_what_the_adapter_on_top_narrates(llm_dir, tmp_path):
    """Narrating loads the LoRA adapter folded into the LLM's weights (Settings.narrator): a plain
    transformers model with no LoRA layers, the same loss to float tolerance and the same greedy text
    in both storyline modes as the adapter on top."""
    from peft import PeftModel

    from videonarrator.generate import narrate_videos

    model = build(llm_dir, seed=4)
    with torch.no_grad():
        for p in model.trainable_parameters().values():
            p.add_(0.3 * torch.randn_like(p))   # B != 0: the adapter changes what the LLM writes
    model.save_pretrained(tmp_path / "m")
    on_top = VideoNarrator.from_pretrained(tmp_path / "m", llm_dir, device="cpu")
    merged = VideoNarrator.from_pretrained(tmp_path / "m", llm_dir, device="cpu", merge=True)
    assert isinstance(on_top.llm, PeftModel) and not isinstance(merged.llm, PeftModel)
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    batch = make_batch(on_top, clips=(0, 1, 2))
    with torch.no_grad():
        loss = on_top(batch)
        with on_top.llm.disable_adapter():
            without = on_top(batch)
        torch.testing.assert_close(merged(batch), loss, rtol=1e-5, atol=1e-5)
        assert abs(loss.item() - without.item()) > 1e-3   # the merged weights carry the adapter
    v = make_video()
    visual = {v.id: VisualInputs(clips=[frames(2, i) for i in range(3)], kept=[[0, 1]] * 3, totals=[2] * 3)}
    for mode in ("given", "generated"):
        cfg = DEFAULTS.generation(mode=mode, max_new_tokens=8, temperature=0)
        texts = [[o.text for o in narrate_videos(m, [v], visual, cfg, progress=False)[v.id]] for m in (on_top, merged)]
        assert texts[0] == texts[1] and any(texts[0]), mode
    with pytest.raises(ValueError, match="merged LoRA adapter no longer trains"):
        VideoNarrator.from_pretrained(tmp_path / "m", llm_dir, trainable=True, merge=True)


def test_left_padded_generate_matches_one_by_one(llm_dir):
    model = build(llm_dir).eval()
    batch = make_batch(model, clips=(0, 2))
    eos = model.tokenizer.eos_token_id
    kw = dict(max_new_tokens=4, do_sample=False, eos_token_id=eos, pad_token_id=eos)
    with torch.no_grad():
        seqs = model.build_inputs_embeds(batch, with_target=False)
        x, mask = pad_embeds(seqs, side="left")
        together = model.llm.generate(inputs_embeds=x, attention_mask=mask, **kw)
        for b, seq in enumerate(seqs):
            alone = model.llm.generate(inputs_embeds=seq[None], attention_mask=torch.ones(1, len(seq)), **kw)
            assert together[b, :alone.shape[1]].tolist() == alone[0].tolist()


def test_load_pretrained_qformer_into_encoder(llm_dir, tmp_path):
    from transformers import Blip2QFormerModel
    model = build(llm_dir)
    torch.manual_seed(7)
    ref = Blip2QFormerModel(model.visual.qformer.config)
    ref.save_pretrained(tmp_path / "qformer")
    model.visual.load_qformer(tmp_path / "qformer")
    for k, v in ref.state_dict().items():
        assert torch.equal(model.visual.qformer.state_dict()[k], v), k


def test_cross_attention_maps_are_distributions_over_patches(llm_dir):
    model = build(llm_dir)
    maps = model.visual.cross_attention(frames(3, 1))
    assert maps.shape == (3, CFG.qformer_heads, Q, P)
    assert torch.allclose(maps.sum(-1), torch.ones(3, CFG.qformer_heads, Q), atol=1e-5)
    assert model.visual.training                     # the eager eval-mode pass leaves the encoder as it was
    assert model.visual.qformer.config._attn_implementation != "eager"


# -- label head ------------------------------------------------------------------------------

def head_samples(n: int, seed: int) -> list[ClipSample]:
    """Clips whose label is set by a bright patch value (the "prop") and their place: the prop gives
    safety certification, else the last clip purchase guidance, else pain point."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for k in range(n):
        place, prop = k % 3, bool((k // 3) % 2)
        x = torch.randn(2, P, W, generator=g)
        x[:, 0, 3] += 6.0 * prop
        label = 9 if prop else 2 if place == 2 else 1      # labels.LABELS indices
        ids = torch.zeros(0, dtype=torch.long)
        out.append(ClipSample(ids, ids, ids, x, x[:0], 0, place=place, label_ids=(label,)))
    return out


def test_label_head_fits_the_features_and_the_place_and_survives_save(llm_dir, tmp_path):
    model = build(llm_dir, label_head=True).eval()
    head = model.label_head
    assert head.feature_dim == P * W
    train, test = head_samples(300, 0), head_samples(60, 1)
    assert head.fit(train + [replace(train[0], label_ids=(1, 2))]) == 300      # multi-label clips are left out
    predicted = [int(head(head.inputs(s.clip_patches, s.place)).argmax()) for s in test]
    right = sum(p == s.label_ids[0] for p, s in zip(predicted, test))
    assert right >= 57     # the prop alone: 50 of 60 at best, the place alone 30: it reads both
    lp = head(torch.stack([head.inputs(s.clip_patches, s.place) for s in test[:4]]))
    torch.testing.assert_close(lp.exp().sum(-1), torch.ones(4))
    model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m/label_head.safetensors").exists()
    loaded = VideoNarrator.from_pretrained(tmp_path / "m", llm_dir, device="cpu")
    for name in ("mean", "std", "weight", "bias"):
        torch.testing.assert_close(getattr(loaded.label_head, name), getattr(head, name))
    with pytest.raises(ValueError, match="no single-label training clip"):
        head.fit([replace(s, label_ids=()) for s in train[:3]])
    assert build(llm_dir).label_head is None


def test_a_text_only_head_reads_the_place_only(llm_dir, tmp_path):
    """A narrator without video gets a head on the clip's place alone (it has no frames): it learns
    the most frequent label of each place, whatever the (absent) prop says."""
    model = build(llm_dir, label_head=True, use_video=False, num_patches=0, vision_width=0).eval()
    head = model.label_head
    assert model.visual is None and head.feature_dim == 0
    empty = torch.zeros(0, 1, 1)      # what a text-only sample holds for frames (dataset.clip_sample)
    ids = torch.zeros(0, dtype=torch.long)
    # per place (first, middle, last) a majority label and a minority one
    mix = {0: [1] * 6 + [9] * 3, 1: [4] * 6 + [1] * 3, 2: [2] * 6 + [9] * 3}
    train = [ClipSample(ids, ids, ids, empty, empty, 0, place=place, label_ids=(label,))
             for place, labels in mix.items() for label in labels]
    head.fit(train)
    assert head.inputs(empty, 2).tolist() == [0.0, 0.0, 1.0]
    assert [int(head(head.inputs(empty, place)).argmax()) for place in range(3)] == [1, 4, 2]
    model.save_pretrained(tmp_path / "t")
    loaded = VideoNarrator.from_pretrained(tmp_path / "t", llm_dir, device="cpu")
    torch.testing.assert_close(loaded.label_head.weight, head.weight)


def test_narrators_saved_before_the_head_moved_still_load(llm_dir, tmp_path):
    """Earlier narrators kept the head in visual.safetensors (keys label_head.*), and text-only ones
    were saved with label_head true but no head: both load as they were trained."""
    from safetensors.torch import load_file, save_file
    model = build(llm_dir, label_head=True).eval()
    model.label_head.fit(head_samples(30, 0))
    model.save_pretrained(tmp_path / "m")
    visual = load_file(str(tmp_path / "m/visual.safetensors"))
    head = load_file(str(tmp_path / "m/label_head.safetensors"))
    save_file({**visual, **{f"label_head.{k}": v for k, v in head.items()}}, str(tmp_path / "m/visual.safetensors"))
    (tmp_path / "m/label_head.safetensors").unlink()
    loaded = VideoNarrator.from_pretrained(tmp_path / "m", llm_dir, device="cpu")
    torch.testing.assert_close(loaded.label_head.weight, model.label_head.weight)
    text = build(llm_dir, label_head=True, use_video=False, num_patches=0, vision_width=0)
    text.save_pretrained(tmp_path / "t")
    (tmp_path / "t/label_head.safetensors").unlink()
    old = VideoNarrator.from_pretrained(tmp_path / "t", llm_dir, device="cpu")
    assert old.label_head is None and not old.cfg.label_head


def test_samples_carry_the_clips_place_and_labels(llm_dir):
    model = build(llm_dir)
    v = make_video()
    visual = VisualInputs(clips=[frames(1, 1)] * 3, kept=[[0]] * 3, totals=[1] * 3)
    samples = [clip_sample(model.tokenizer, v, i, visual, "given") for i in range(3)]
    assert [s.place for s in samples] == [0, 1, 2] and samples[1].label_ids == (1,)   # pain_point: LABELS[1]
    assert clip_sample(model.tokenizer, v, 1, visual, "given", with_target=False).label_ids == ()
    assert [s.place for s in batch_to(samples)] == [0, 1, 2]                          # moving keeps the place


def batch_to(samples):
    return ClipBatch(samples).to("cpu").samples


def test_a_narrator_is_loaded_for_narrating_in_the_evaluate_precision(llm_dir, tmp_path, monkeypatch):
    """evaluate.precision sets the narrating LLM's dtype (auto: bf16 only where this CPU's bf16 products
    are timed faster, as train.precision); the visual side stays fp32, and a bf16 narrator narrates."""
    import videonarrator.train as T
    from videonarrator.config import Settings
    from videonarrator.generate import narrate_videos

    model = build(llm_dir, label_head=True)
    model.label_head.fit(head_samples(30, 0))
    model.save_pretrained(tmp_path / "m")

    def settings(precision):
        return Settings({**DEFAULTS.sections, "llm": {**DEFAULTS["llm"], "path": str(llm_dir)},
                         "evaluate": {**DEFAULTS["evaluate"], "precision": precision}})
    assert settings("fp32").narrating_dtype("cpu") == torch.float32
    monkeypatch.setattr(T, "cpu_bf16_speedup", lambda: 0.0)        # a CPU without fast bf16
    assert settings("auto").narrating_dtype("cpu") == torch.float32
    monkeypatch.setattr(T, "cpu_bf16_speedup", lambda: 3.0)
    assert settings("auto").narrating_dtype("cpu") == torch.bfloat16
    narrator = settings("bf16").narrator(tmp_path / "m", device="cpu")
    assert narrator._hf().get_input_embeddings().weight.dtype == torch.bfloat16
    assert narrator.visual.projector.weight.dtype == torch.float32
    torch.testing.assert_close(narrator.label_head.weight, model.label_head.weight)
    v = make_video()
    visual = {v.id: VisualInputs(clips=[frames(2, i) for i in range(3)], kept=[[0, 1]] * 3, totals=[2] * 3)}
    for mode in ("given", "generated"):
        out = narrate_videos(narrator, [v], visual, DEFAULTS.generation(mode=mode, max_new_tokens=4, temperature=0),
                             progress=False)[v.id]
        assert len(out) == 3 and all(isinstance(o.text, str) for o in out)
