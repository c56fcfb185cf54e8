from dataclasses import replace

import pytest
import torch
from torch import nn

import videonarrator.generate as gen
from helpers import DEFAULTS, make_tiny_llm
from videonarrator.dataset import VisualInputs, clip_sample
from videonarrator.generate import (ClipOutput, LengthRule, NarrationPass, ends_sentence, has_line_break,
                                    label_lines, narrate_passes, narrate_videos, narration_part, pick_candidate,
                                    row_seed)
from videonarrator.labels import format_labels, label_candidates
from videonarrator.model import VideoNarrator, VideoNarratorConfig, collate
from videonarrator.prompt import build_clip_prompt, build_prefix
from videonarrator.schema import Clip, Product, Video, text_length

P, W, Q = 5, 16, 4          # as tests/test_model.py: patches per frame, vision width, query tokens
CFG = VideoNarratorConfig(vision_width=W, num_patches=P, qformer_hidden=16, qformer_layers=2, qformer_heads=2,
                          num_query_tokens=Q, patch_pos_embed=True, memory_frames=1, story_clips=None, label_head=False)
LORA = DEFAULTS.lora(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
NARR = ["Dry skin all winter?", "Meet the aloe cream.", "Grab it today.", "Soft and calm skin.", "Only 9.99 now."]
GREEDY = DEFAULTS.generation(temperature=0, max_new_tokens=14, batch_size=1)


def make_video(vid: str, n_clips: int, n_items: int, window=(2, 8)) -> Video:
    clips = [Clip(index=i, start=3.0 * i, end=3.0 * (i + 1), window=window, labels=["pain_point"], narration=NARR[i])
             for i in range(n_clips)]
    items = ["aloe vera", "vitamin E", "no perfume", "made in Spain"][:n_items]
    return Video(id=vid, product=Product("Aloe Cream", {"ingredients": items}), clips=clips)


VIDEOS = [make_video("a", 4, 2), make_video("b", 3, 4), make_video("c", 2, 1)]   # different prefix lengths


def visual(video: Video, seed: int) -> VisualInputs:
    g = torch.Generator().manual_seed(seed)
    clips = [torch.randn(1 + i % 3, P, W, generator=g) for i in range(len(video.clips))]
    return VisualInputs(clips=clips, kept=[list(range(len(c))) for c in clips], totals=[len(c) for c in clips])


VISUAL = {v.id: visual(v, k) for k, v in enumerate(VIDEOS)}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def llm_dir(tmp_path_factory):
    corpus = [build_clip_prompt(v, i, mode=m).text() for v in VIDEOS for i in range(len(v.clips))
              for m in ("given", "generated")] * 10
    return make_tiny_llm(tmp_path_factory.mktemp("llm") / "tiny", corpus)


def build(llm_dir, **overrides) -> VideoNarrator:
    # float64: greedy ties between paths that only differ in rounding cannot flip a token
    torch.manual_seed(0)
    model = VideoNarrator.from_llm(replace(CFG, **overrides), llm_dir, lora=LORA).double().eval()
    with torch.no_grad():   # sharp attention: a random init attends almost uniformly, blind to positions and pads
        for name, p in model.named_parameters():
            if name.endswith(("q_proj.base_layer.weight", "k_proj.weight")):
                p.mul_(8.0)
            if "lora_B" in name:                            # LoRA starts at zero: make it count
                p.normal_(std=0.1)
    return model


@pytest.fixture(scope="module")
def model(llm_dir):
    return build(llm_dir)


@pytest.fixture(scope="module")
def text_model(llm_dir):
    return build(llm_dir, use_video=False)


def raws(out: dict[str, list[ClipOutput]]) -> dict[str, list[str]]:
    return {k: [o.raw for o in v] for k, v in out.items()}


def assert_same(a: dict[str, list[ClipOutput]], b: dict[str, list[ClipOutput]]) -> None:
    """Same text, and the same log-probabilities up to float64 rounding (catches any position / mask slip)."""
    assert raws(a) == raws(b)
    for v in a:
        torch.testing.assert_close([o.mean_logprob for o in a[v]], [o.mean_logprob for o in b[v]],
                                   rtol=0, atol=1e-9)


# -- KV-cache reuse and batching ------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["given", "generated"])
@pytest.mark.parametrize("use_video", [True, False])
def test_cache_reuse_equals_full_reencode(model, text_model, mode, use_video, monkeypatch):
    m = model if use_video else text_model
    video = VIDEOS[:1]                                      # 4 clips
    fed = []                                                # tokens fed in each prefill pass
    forward = gen._forward
    monkeypatch.setattr(gen, "_forward", lambda hf, x, *a: fed.append(x.shape[1]) or forward(hf, x, *a))
    cfg = replace(GREEDY, mode=mode)
    fed.clear()
    full = narrate_videos(m, video, VISUAL, replace(cfg, reencode=True), progress=False)
    # generated mode feeds the chosen label line after each prompt: keep the prompt passes only
    every = 2 if mode == "generated" else 1
    full_fed = [n for n in fed if n > 1][::every]
    fed.clear()
    cached = narrate_videos(m, video, VISUAL, cfg, progress=False)
    cached_fed = [n for n in fed if n > 1][::every]
    assert_same(cached, full)
    assert [o.text for o in cached["a"]] == [o.text for o in full["a"]]
    assert any(o.raw for o in full["a"])
    # the cache path feeds only the new story line + visual + suffix, never knowledge and the earlier story again
    assert len(cached_fed) == len(full_fed) == 4 and cached_fed[0] == full_fed[0]
    for i in range(1, 4):
        prefix_len = len(m.tokenizer(cached["a"][i].prompt.prefix, add_special_tokens=False)["input_ids"])
        line = len(m.tokenizer(f"{i}. {cached['a'][i - 1].text}\n", add_special_tokens=False)["input_ids"])
        assert cached_fed[i] == full_fed[i] - prefix_len + line


def test_a_sliding_story_window_still_equals_full_reencode(llm_dir):
    """With model.story_clips the prefix is no longer append-only: the cache keeps the common part
    (knowledge) and the slid story is encoded again; the text is the same as re-encoding everything."""
    m = build(llm_dir, use_video=False, story_clips=1)
    full = narrate_videos(m, VIDEOS[:1], VISUAL, replace(GREEDY, reencode=True), progress=False)
    cached = narrate_videos(m, VIDEOS[:1], VISUAL, GREEDY, progress=False)
    assert [o.text for o in cached["a"]] == [o.text for o in full["a"]]
    for i in range(2, 4):   # only the previous clip's narration is in the prompt
        assert f"{i}. " in cached["a"][i].prompt.prefix and f"{i - 1}. " not in cached["a"][i].prompt.prefix


@pytest.mark.parametrize("use_video", [True, False])
def test_batched_across_videos_equals_one_by_one(model, text_model, use_video):
    m = model if use_video else text_model
    for cfg in (GREEDY, replace(GREEDY, temperature=1.0, seed=5)):   # greedy and seeded sampling
        alone = narrate_videos(m, VIDEOS, VISUAL, cfg, progress=False)
        together = narrate_videos(m, VIDEOS, VISUAL, replace(cfg, batch_size=3), progress=False)
        full = narrate_videos(m, VIDEOS, VISUAL, replace(cfg, batch_size=3, reencode=True), progress=False)
        assert [len(together[v.id]) for v in VIDEOS] == [4, 3, 2]
        assert_same(together, alone)
        assert_same(full, alone)


def test_story_so_far_is_the_models_own(model):
    out = narrate_videos(model, VIDEOS[:1], VISUAL, GREEDY, progress=False)["a"]
    for i, o in enumerate(out):
        story = [x.text for x in out[:i]]
        assert o.prompt.prefix == build_prefix(VIDEOS[0], story)
        assert o.prompt.suffix.startswith(f"\nClip {i + 1}/4")
    assert out[0].text and f"1. {out[0].text}\n" in out[1].prompt.prefix
    assert NARR[0] not in out[1].prompt.prefix              # not the reference narration (teacher forcing)


def test_reference_story_puts_the_data_narrations_in_the_prompt(model):
    """The exposure-bias diagnostic: each clip written freely after the reference story so far,
    with the cache reuse of the normal path (same text as re-encoding every prompt)."""
    cfg = replace(GREEDY, story="reference")
    out = narrate_videos(model, VIDEOS[:1], VISUAL, cfg, progress=False)["a"]
    for i, o in enumerate(out):
        assert o.prompt.prefix == build_prefix(VIDEOS[0], [c.narration for c in VIDEOS[0].clips[:i]])
    assert f"1. {NARR[0]}\n" in out[1].prompt.prefix
    assert_same({"a": out}, narrate_videos(model, VIDEOS[:1], VISUAL, replace(cfg, reencode=True),
                                           progress=False))
    with pytest.raises(ValueError, match="story must be one of"):
        narrate_videos(model, VIDEOS, VISUAL, replace(GREEDY, story="oracle"), progress=False)


def test_video_model_needs_visual_inputs_and_config_checks(model, text_model):
    with pytest.raises(ValueError, match=r"\['b'\] have no visual inputs"):
        narrate_videos(model, VIDEOS[:2], {"a": VISUAL["a"]}, GREEDY, progress=False)
    assert narrate_videos(text_model, VIDEOS[2:], {}, GREEDY, progress=False)["c"]   # text-only: none needed
    with pytest.raises(ValueError, match="needs temperature > 0"):
        narrate_videos(model, VIDEOS, VISUAL, replace(GREEDY, num_candidates=2), progress=False)
    with pytest.raises(ValueError, match="mode"):
        narrate_videos(model, VIDEOS, VISUAL, replace(GREEDY, mode="free"), progress=False)
    with pytest.raises(ValueError, match="unique"):
        narrate_videos(model, [VIDEOS[0], VIDEOS[0]], VISUAL, GREEDY, progress=False)


# -- seeds -------------------------------------------------------------------------------------------

def test_sampling_is_seeded(text_model):
    cfg = replace(GREEDY, temperature=1.0, seed=1)
    a = raws(narrate_videos(text_model, VIDEOS, {}, cfg, progress=False))
    b = raws(narrate_videos(text_model, VIDEOS, {}, cfg, progress=False))
    c = raws(narrate_videos(text_model, VIDEOS, {}, replace(cfg, seed=2), progress=False))
    assert a == b
    assert a != c
    assert sum(x != y for v in a for x, y in zip(a[v], c[v])) >= 5      # most clips differ, not one
    assert row_seed(1, "a", 0, 0) == row_seed(1, "a", 0, 0) != row_seed(1, "a", 1, 0)


def test_candidates_are_reranked_reproducibly(text_model):
    cfg = replace(GREEDY, temperature=1.0, num_candidates=3, max_new_tokens=20)
    a = narrate_videos(text_model, VIDEOS[:2], {}, cfg, progress=False)
    b = narrate_videos(text_model, VIDEOS[:2], {}, replace(cfg, batch_size=2), progress=False)
    assert raws(a) == raws(b)
    one = narrate_videos(text_model, VIDEOS[:2], {}, replace(cfg, num_candidates=1), progress=False)
    # candidate 0 has the single-candidate run's seed (and, on clip 1, its prompt): the pick is at least as good
    for v in a:
        x, y = a[v][0], one[v][0]
        assert x.in_window or not y.in_window
        if x.in_window and y.in_window:
            assert x.mean_logprob >= y.mean_logprob


def test_pick_candidate():
    def out(n, lp):
        return ClipOutput("w " * n, None, "", n, 3 <= n <= 5, mean_logprob=lp)
    assert pick_candidate([out(2, -0.1), out(4, -2.0), out(5, -1.0)], (3, 5)).mean_logprob == -1.0
    assert pick_candidate([out(1, -0.1), out(7, -0.5), out(2, -0.9)], (3, 5)).length == 2   # closest
    assert pick_candidate([out(2, -0.9), out(6, -0.5)], (3, 5)).length == 6                 # tie: log-prob


# -- length control: the rules ---------------------------------------------------------------------------

def test_narration_part():
    assert narration_part(" Dry skin", "given", "en") == ("Dry skin", False)
    assert narration_part(" Dry skin.\nLabel", "given", "en") == ("Dry skin.", True)
    assert narration_part("Label: pain point\n", "generated", "en") == (None, False)
    assert narration_part("Label: pain point\nNarration: Dry", "generated", "en") == ("Dry", False)
    assert narration_part("标签：痛点铺垫\n解说：冬天皮肤干", "generated", "zh") == ("冬天皮肤干", False)


def test_ends_sentence():
    assert ends_sentence("Dry skin?") and ends_sentence("Try it!") and ends_sentence("冬天皮肤干。")
    assert not ends_sentence("Only 9.") and not ends_sentence("Dry skin,") and not ends_sentence("")
    assert ends_sentence("Only 9.99.")


def stream(rule: LengthRule, pieces: list[str]) -> tuple[str, str | None]:
    """Feed pieces through the rule as the decoder does; return (kept text, stop reason)."""
    raw = ""
    for p in pieces:
        reason, drop = rule.stop(raw, raw + p)
        if not drop:
            raw += p
        if reason:
            return raw, reason
    return raw, None


def test_length_rule_english():
    rule = LengthRule(3, 5, "en")
    # sentence end before lo does not stop; the first one at or after lo does
    assert stream(rule, [" Hi", ".", " Dry", " skin", " all", " winter", "?", " Try"]) == \
        (" Hi. Dry skin all winter?", "sentence")
    # past hi without a sentence end: stop before the next word, never inside one
    text, reason = stream(rule, [" One", " two", " three", " four", " beauti", "ful", ",", " six", " seven"])
    assert (text, reason) == (" One two three four beautiful,", "max_length")
    assert text_length(text, "en") == 5
    # a price is not a sentence end
    assert stream(rule, [" Only", " 9", ".", "99", " now", "."]) == (" Only 9.99 now.", "sentence")
    # EOS and newlines are blocked until lo, then allowed
    assert rule.blocks(" Dry skin") == (True, True) and rule.blocks(" Dry skin all") == (False, False)
    assert stream(rule, [" Dry", " skin", "\n", "x"]) == (" Dry skin\n", "newline")   # a newline always ends the line
    off = LengthRule(3, 5, "en", control=False)
    assert off.blocks(" Dry") == (False, False)
    assert stream(off, [" A", ".", " b", " c", " d", " e", " f", " g"]) == (" A. b c d e f g", None)


def test_length_rule_generated_mode_counts_the_narration_only():
    rule = LengthRule(2, 4, "en", mode="generated")
    assert rule.blocks("Label: pain point") == (True, False)       # EOS blocked, the label line may end
    assert rule.blocks("Label: pain point\nNarration: Dry") == (True, True)
    assert stream(rule, ["Label", ":", " pain", " point", ".", "\n", "Narration", ":", " Dry", " skin", "?"]) == \
        ("Label: pain point.\nNarration: Dry skin?", "sentence")    # "point." before the marker is not a stop


def test_length_rule_chinese_counts_characters():
    pieces = ["冬天", "。", "皮肤", "干", "吗", "？", "对"]
    assert stream(LengthRule(4, 8, "zh"), pieces) == ("冬天。皮肤干吗？", "sentence")   # "冬天。" is under lo
    rule = LengthRule(4, 6, "zh")
    assert stream(rule, ["冬天", "皮肤", "干燥", "怎么"]) == ("冬天皮肤干燥", "max_length")
    assert rule.stop("冬天皮肤干", "冬天皮肤干\ufffd") == (None, False)  # half a character: wait for the rest


# -- length control: with a model --------------------------------------------------------------------

def bias_head(model: VideoNarrator, bias: dict[int, float]) -> None:
    """Give the LM head a bias (e.g. an EOS it strongly prefers)."""
    hf = model._hf()
    old = hf.get_output_embeddings()
    head = nn.Linear(old.in_features, old.out_features, bias=True, dtype=old.weight.dtype)
    with torch.no_grad():
        head.weight.copy_(old.weight)
        head.bias.zero_()
        for i, b in bias.items():
            head.bias[i] = b
    hf.set_output_embeddings(head)


def test_eos_is_blocked_until_lo(llm_dir):
    m = build(llm_dir, use_video=False)
    bias_head(m, {m.tokenizer.eos_token_id: 100.0})         # the model wants to stop at once
    for lo in (0, 3, 5):
        videos = [make_video("a", 2, 2, window=(lo, lo + 4))]
        out = narrate_videos(m, videos, {}, replace(GREEDY, max_new_tokens=40), progress=False)["a"]
        for o in out:
            assert o.stop == "eos" and o.length >= lo
            assert (o.length == 0) == (lo == 0)
        free = narrate_videos(m, videos, {}, replace(GREEDY, length_control=False), progress=False)["a"]
        assert all(o.length == 0 and o.stop == "eos" for o in free)
    gen_out = narrate_videos(m, [make_video("a", 1, 2, window=(3, 6))], {},
                             replace(GREEDY, mode="generated", max_new_tokens=30), progress=False)["a"][0]
    # generated mode: after the chosen label line, EOS stays blocked until the narration has lo words
    assert gen_out.raw.startswith("Label: ") and gen_out.stop == "eos" and gen_out.length >= 3


def test_other_special_tokens_stop_like_eos_and_never_reach_the_text(tmp_path):
    """SmolLM2 may write its chat marker "<|im_start|>" where it means to stop: that ends the
    narration (and is blocked before the window's lower bound, like EOS); it is never text."""
    corpus = [build_clip_prompt(v, i, mode="given").text() for v in VIDEOS for i in range(len(v.clips))] * 5
    llm = make_tiny_llm(tmp_path / "llm", corpus, extra_special=("<|im_start|>",))
    m = build(llm, use_video=False)
    start = m.tokenizer.convert_tokens_to_ids("<|im_start|>")
    bias_head(m, {start: 100.0})                             # the model wants to write <|im_start|> at once
    for lo in (0, 3):
        out = narrate_videos(m, [make_video("a", 2, 2, window=(lo, lo + 4))], {},
                             replace(GREEDY, max_new_tokens=20), progress=False)["a"]
        for o in out:
            assert o.stop == "eos" and "<|im_start|>" not in o.raw and o.length >= lo


def test_model_stops_are_never_inside_a_word(llm_dir):
    """Length-controlled decoding is a prefix of free decoding; where it stopped, a new word began."""
    m = build(llm_dir, use_video=False)
    tok = m.tokenizer
    pieces = tok.batch_decode([[i] for i in range(len(tok))])
    # no EOS, newline or non-ASCII byte tokens: the free run is then one long line of plain text
    bias_head(m, {i: -100.0 for i, p in enumerate(pieces)
                  if i == tok.eos_token_id or has_line_break(p) or "\ufffd" in p})
    videos = [make_video(v, 2, k, window=(2, 5)) for k, v in enumerate("xyzw", start=1)]
    cfg = replace(GREEDY, max_new_tokens=40, repetition_penalty=1.3)
    ctrl = narrate_videos(m, videos, {}, cfg, progress=False)
    free = narrate_videos(m, videos, {}, replace(cfg, length_control=False), progress=False)
    reasons = set()
    for v in ctrl:
        for c, f in zip(ctrl[v], free[v]):
            if c.prompt != f.prompt:        # the story so far differs from clip 2 on: compare first clips only
                break
            assert f.raw.startswith(c.raw) and len(f.raw) > len(c.raw)
            reasons.add(c.stop)
            assert c.length >= 2
            if c.stop == "max_length":
                assert f.raw[len(c.raw)].isspace() and c.length >= 5
            elif c.stop == "sentence":
                assert ends_sentence(c.text)
    assert reasons <= {"max_length", "sentence"} and reasons


# -- generated mode: labels ---------------------------------------------------------------------------

def test_generated_mode_parses_label_and_narration(llm_dir):
    """A tiny model taught one clip chooses its label and writes its narration."""
    video = Video(id="one", product=Product("Aloe Cream", {"ingredients": ["aloe vera"]}),
                  clips=[Clip(index=0, start=0, end=3, window=(2, 8), labels=["pain_point"],
                              narration="Dry skin all winter? Try aloe")])
    torch.manual_seed(0)
    m = VideoNarrator.from_llm(replace(CFG, use_video=False), llm_dir, lora=None)
    m.llm.requires_grad_(True)
    batch = collate([clip_sample(m.tokenizer, video, 0, None, mode) for mode in ("given", "generated")])
    opt = torch.optim.Adam(m.llm.parameters(), lr=3e-2)
    m.train()
    for _ in range(150):                                    # memorise the two targets
        loss = m(batch)
        if loss.item() < 0.005:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    cfg = replace(GREEDY, max_new_tokens=30)
    out = narrate_videos(m, [video], {}, replace(cfg, mode="generated"), progress=False)["one"][0]
    assert out.raw == "Label: pain point\nNarration: Dry skin all winter?"
    assert (out.labels, out.text, out.length, out.in_window, out.stop) == \
        (["pain_point"], "Dry skin all winter?", 4, True, "sentence")   # stopped at the first sentence end
    given = narrate_videos(m, [video], {}, cfg, progress=False)["one"][0]
    assert (given.labels, given.text) == (["pain_point"], "Dry skin all winter?")


# -- generated mode: the label is chosen among valid candidates by likelihood ----------------------------

def test_generated_mode_always_yields_a_valid_label(llm_dir):
    """Even a random model's generated storyline is a real label (never None), and the raw text
    starts with that label line; the narration after it is decoded as usual."""
    torch.manual_seed(0)
    m = VideoNarrator.from_llm(replace(CFG, use_video=False), llm_dir, lora=None)
    out = narrate_videos(m, VIDEOS, {}, replace(GREEDY, mode="generated"), progress=False)
    for v in out.values():
        for o in v:
            assert o.labels is not None and len(o.labels) == 1
            assert o.raw.startswith(f"Label: {format_labels(o.labels)}\nNarration:")


def test_label_choice_is_the_most_likely_candidate(model):
    """The chosen label line has the highest summed log-probability among the candidates, scored
    independently by full re-encoding of prompt + line (so cache, pads and positions are checked)."""
    video = VIDEOS[1]
    cands = label_candidates([["pain_point", "product_trial"]])
    cfg = replace(GREEDY, mode="generated", label_candidates=cands, max_new_tokens=20)
    out = narrate_videos(model, [video], VISUAL, cfg, progress=False)[video.id]
    tok = model.tokenizer
    conts = label_lines(tok, "en", cands)
    for i, o in enumerate(out):
        story = [x.text for x in out[:i]]
        sample = clip_sample(tok, video, i, VISUAL[video.id], "generated", story_so_far=story, with_target=False)
        with torch.no_grad():
            prompt = model.build_inputs_embeds(collate([sample]), with_target=False)[0]       # (T, D)
            totals = []
            for c in conts:
                x = torch.cat([prompt, model.embed_tokens(torch.tensor(c))])[None]
                logp = torch.log_softmax(model._hf()(inputs_embeds=x).logits[0].float(), -1)
                T = len(prompt)
                totals.append(sum(float(logp[T - 1 + k, t]) for k, t in enumerate(c)))
        best = max(range(len(cands)), key=lambda j: totals[j])
        assert o.labels == list(cands[best]), (i, o.labels, cands[best])
        assert o.raw.startswith(tok.decode(conts[best]))


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_label_scores_equal_full_reencoding_in_a_padded_batch(llm_dir, impl, monkeypatch):
    """Every candidate's summed log-probability, scored side by side on a row's cache (a 4D
    block-diagonal mask, no cache copies), equals prompt + line encoded from scratch, for rows
    with left pads (two videos of different prefix lengths in one batch) and both attention kinds."""
    model = build(llm_dir)
    model._hf().config._attn_implementation = impl
    if impl == "eager":   # transformers' eager attention gives NaN on left-padded rows in float64 (not float32)
        model.float()
    recorded, real = [], gen._score_continuations

    def spy(*args):
        scores = real(*args)
        recorded.append([sum(x) for x in scores])
        return scores
    monkeypatch.setattr(gen, "_score_continuations", spy)
    monkeypatch.setattr(gen, "SCORING_TOKENS", 60)     # several chunks of several lines per row
    cands = label_candidates([["pain_point", "product_trial"], ["purchase_guidance", "product_trial"]])
    videos = VIDEOS[:2]
    cfg = replace(GREEDY, mode="generated", label_candidates=cands, max_new_tokens=6, batch_size=2)
    out = narrate_videos(model, videos, VISUAL, cfg, progress=False)
    conts = label_lines(model.tokenizer, "en", cands)
    expected = []
    for i in range(max(len(v.clips) for v in videos)):
        for v in (v for v in videos if i < len(v.clips)):
            story = [x.text for x in out[v.id][:i]]
            sample = clip_sample(model.tokenizer, v, i, VISUAL[v.id], "generated", story_so_far=story,
                                 with_target=False)
            with torch.no_grad():
                prompt = model.build_inputs_embeds(collate([sample]), with_target=False)[0]    # (T, D)
                T, totals = len(prompt), []
                for c in conts:
                    x = torch.cat([prompt, model.embed_tokens(torch.tensor(c))])[None]
                    logp = torch.log_softmax(model._hf()(inputs_embeds=x).logits[0].float(), -1)
                    totals.append(sum(float(logp[T - 1 + k, t]) for k, t in enumerate(c)))
            expected.append(totals)
    assert len(recorded) == len(expected) == 7
    torch.testing.assert_close(torch.tensor(recorded, dtype=torch.float64), torch.tensor(expected, dtype=torch.float64),
                               rtol=0, atol=1e-4 if impl == "sdpa" else 2e-3)


def test_token_trie_shares_common_starts():
    tokens, depth, paths = gen._token_trie([[5, 6, 7], [5, 6, 8, 9], [4], [5, 6, 7]])
    assert tokens == [5, 6, 7, 8, 9, 4] and depth == [0, 1, 2, 2, 3, 0]
    assert paths == [[0, 1, 2], [0, 1, 3, 4], [5], [0, 1, 2]]          # a repeated line: the same nodes


def test_passes_decoded_together_equal_each_pass_alone(model):
    """The evaluation's layout: one model, passes that differ in storyline mode, length control and
    frames (real, another video's) share batches; every narration is what its own call writes."""
    shuffled = {v.id: visual(v, 10 + k) for k, v in enumerate(VIDEOS)}                # other frames
    cands = label_candidates([["pain_point", "purchase_guidance"]])
    for base in (GREEDY, replace(GREEDY, temperature=1.0, seed=5)):
        base = replace(base, label_candidates=cands)
        passes = {"given": NarrationPass(VIDEOS, VISUAL, base),
                  "generated": NarrationPass(VIDEOS, VISUAL, replace(base, mode="generated")),
                  "free": NarrationPass(VIDEOS, VISUAL, replace(base, length_control=False)),
                  "shuffled": NarrationPass(VIDEOS[::-1], shuffled, replace(base, mode="generated"))}
        calls = []
        together = narrate_passes(model, {k: replace(p, cfg=replace(p.cfg, batch_size=7)) for k, p in passes.items()},
                                  progress=False, on_clip=lambda *a: calls.append(a[:3]))
        assert len(calls) == 4 * 9 and len(set(calls)) == len(calls)      # every clip of every pass, once
        for name, p in passes.items():
            alone = narrate_videos(model, p.videos, p.visual, p.cfg, progress=False)
            assert list(together[name]) == [v.id for v in p.videos]       # each pass in its own video order
            assert_same(together[name], alone)
    assert all(o.labels[0] in ("pain_point", "purchase_guidance") for o in together["generated"]["a"])
    with pytest.raises(ValueError, match="pass 'b' decodes with other settings.*narrate it separately"):
        narrate_passes(model, {"a": passes["given"], "b": replace(passes["given"], cfg=replace(base, seed=6))})
    with pytest.raises(ValueError, match=r"videos \['c'\] \(pass 'x'\) have no visual inputs"):
        narrate_passes(model, {"x": NarrationPass(VIDEOS, {"a": VISUAL["a"], "b": VISUAL["b"]}, GREEDY)})


def test_label_choice_with_batches_and_cache_equals_one_by_one(model):
    cfg = replace(GREEDY, mode="generated", label_candidates=label_candidates([["pain_point", "purchase_guidance"]]))
    together = narrate_videos(model, VIDEOS, VISUAL, replace(cfg, batch_size=3), progress=False)
    alone = {v.id: narrate_videos(model, [v], VISUAL, replace(cfg, reencode=True), progress=False)[v.id]
             for v in VIDEOS}
    assert_same(together, alone)


def test_label_candidates_and_their_validation():
    cands = label_candidates([["pain_point"], ["pain_point", "product_trial"], ["pain_point", "product_trial"]])
    assert len(cands) == 13 and cands[-1] == ("pain_point", "product_trial")
    with pytest.raises(ValueError, match="unknown script label 'nope'"):
        label_candidates([["nope"]])
    with pytest.raises(ValueError, match="unknown script label 'nope'"):
        replace(GREEDY, mode="generated", label_candidates=(("nope",),)).check()
    with pytest.raises(ValueError, match="non-empty"):
        replace(GREEDY, mode="generated", label_candidates=((),)).check()


# -- the label head chooses the generated storyline's label ------------------------------------

def test_candidate_scores_use_the_head_when_there_is_one():
    from videonarrator.generate import candidate_scores
    from videonarrator.labels import LABELS
    cands = [("pain_point",), ("purchase_guidance",), ("pain_point", "product_trial")]
    lines = [[-1.0, -0.5], [-2.0], [-1.0, -1.0, -1.0]]
    assert candidate_scores(lines, cands, None) == [-1.5, -2.0, -3.0]
    head = torch.full((len(LABELS),), -5.0)
    head[LABELS.index("purchase_guidance")] = -0.5
    head[LABELS.index("product_trial")] = -1.0
    assert candidate_scores(lines, cands, head) == [-5.0, -0.5, -3.0]


def test_the_label_head_decides_the_label_and_cache_equals_reencode(llm_dir):
    """A head whose bias favours one label makes generated mode choose it for every clip; the LLM
    narrates after that line alike with and without the cache; given mode keeps the data's labels."""
    from videonarrator.labels import LABELS
    model = build(llm_dir, label_head=True)
    cfg = replace(GREEDY, mode="generated", max_new_tokens=6)
    with torch.no_grad():
        model.label_head.bias[LABELS.index("product_trial")] = 5.0
    out = narrate_videos(model, VIDEOS, VISUAL, cfg, progress=False)
    assert {tuple(o.labels) for v in out.values() for o in v} == {("product_trial",)}
    assert all(o.raw.startswith("Label: product trial\nNarration:") for v in out.values() for o in v)
    assert_same(out, narrate_videos(model, VIDEOS, VISUAL, replace(cfg, reencode=True), progress=False))
    given = narrate_videos(model, VIDEOS, VISUAL, replace(cfg, mode="given"), progress=False)
    assert {tuple(o.labels) for v in given.values() for o in v} == {("pain_point",)}


def test_a_text_only_head_labels_by_place_and_scores_only_its_line(llm_dir, monkeypatch):
    """A text-only narrator's head reads the clip's place: fitted on clips whose first clip is a pain
    point and the rest purchase guidance, generated mode follows it; the LLM scores only the chosen
    label line (one continuation per clip), with and without the cache alike."""
    from videonarrator.labels import LABELS
    from videonarrator.model import ClipSample
    model = build(llm_dir, label_head=True, use_video=False, num_patches=0, vision_width=0)
    ids, empty = torch.zeros(0, dtype=torch.long), torch.zeros(0, 1, 1)
    train = [ClipSample(ids, ids, ids, empty, empty, 0, place=place,
                        label_ids=(LABELS.index("pain_point" if place == 0 else "purchase_guidance"),))
             for place in (0, 1, 2) for _ in range(5)]
    model.label_head.fit(train)
    model.label_head.double()
    scored = []
    real = gen._score_continuations
    monkeypatch.setattr(gen, "_score_continuations", lambda *a: scored.append(len(a[-1])) or real(*a))
    cfg = replace(GREEDY, mode="generated", max_new_tokens=6)
    out = narrate_videos(model, VIDEOS, {}, cfg, progress=False)
    assert scored and set(scored) == {1}
    for v in VIDEOS:
        assert [o.labels for o in out[v.id]] == [["pain_point"]] + [["purchase_guidance"]] * (len(v.clips) - 1)
    assert_same(out, narrate_videos(model, VIDEOS, {}, replace(cfg, reencode=True), progress=False))
