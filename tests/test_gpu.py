"""The GPU path: the same loss, training, saving and decoding on a CUDA device as on the CPU.

Skipped where torch sees no CUDA device (CI has none).  On a lent GPU:
``bash benchmarks/gpu_check.sh`` runs this file and the model/generation tests there.
"""
from dataclasses import replace

import pytest
import torch

import test_model
from helpers import DEFAULTS, make_tiny_llm
from test_generate import GREEDY, VIDEOS, VISUAL, build as build_f64
from test_model import build, hand_loss, packed_batch
from videonarrator.prompt import build_clip_prompt
from videonarrator.generate import narrate_videos
from videonarrator.model import ClipBatch, VideoNarrator
from videonarrator.train import resolve_precision, train

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]
CUDA = torch.device("cuda")


@pytest.fixture(scope="module")
def llm_dir(tmp_path_factory):
    """One tiny LLM whose tokenizer knows the prompts of test_model's and test_generate's videos."""
    videos = [test_model.make_video(), test_model.second_video(), *VIDEOS]
    corpus = [build_clip_prompt(v, i, mode=m).text() for v in videos for i in range(len(v.clips))
              for m in ("given", "generated")] * 10
    return make_tiny_llm(tmp_path_factory.mktemp("llm") / "tiny", corpus)


def grads(model: VideoNarrator) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().float().cpu() for n, p in model.trainable_parameters().items() if p.grad is not None}


def test_packed_loss_and_gradients_on_gpu_equal_the_cpu_ones(llm_dir):
    torch.backends.cuda.matmul.allow_tf32 = False      # compare fp32 with fp32
    cpu = build(llm_dir).eval()
    gpu = build(llm_dir).eval().to(CUDA)
    batch = packed_batch(cpu, "given", None)
    loss_cpu = cpu(batch)
    loss_cpu.backward()
    loss_gpu = gpu(ClipBatch(batch.samples).to(CUDA))
    loss_gpu.backward()
    torch.testing.assert_close(loss_gpu.cpu(), loss_cpu.detach(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(loss_cpu.detach(), hand_loss(cpu, batch).detach(), rtol=1e-4, atol=1e-5)
    g_cpu, g_gpu = grads(cpu), grads(gpu)
    assert g_cpu.keys() == g_gpu.keys() and g_cpu
    for name in g_cpu:
        torch.testing.assert_close(g_gpu[name], g_cpu[name], rtol=1e-3, atol=1e-5, msg=name)


def test_auto_precision_is_bf16_on_this_gpu_and_its_loss_is_close(llm_dir):
    assert resolve_precision("auto", CUDA) == ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    gpu = build(llm_dir).eval().to(CUDA)
    batch = ClipBatch(packed_batch(gpu, "generated", None).samples).to(CUDA)
    with torch.no_grad():
        fp32 = gpu(batch)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            bf16 = gpu(batch)
    assert torch.isfinite(bf16) and abs(float(bf16) - float(fp32)) < 0.02 * float(fp32)


def test_training_on_gpu_lowers_the_loss_and_saves_a_model_the_cpu_loads(llm_dir, tmp_path):
    model = build(llm_dir)
    samples = packed_batch(model, "given", None).samples
    cfg = DEFAULTS.train(steps=30, batch_size=4, warmup_steps=2, eval_every=10, eval_clips=4,
                         checkpoint_every=10, lr_lora=2e-2, lr_visual=2e-2)
    result = train(model, samples, samples[:4], cfg, tmp_path / "m", progress=False)
    assert result["precision"] == resolve_precision("auto", CUDA)
    assert next(model.parameters()).device.type == "cuda"          # accelerate placed it on the GPU
    assert result["final_loss"] < result["first_loss"] - 0.1, result["log"]
    loaded = VideoNarrator.from_pretrained(tmp_path / "m", llm_dir, device="cpu")
    trained = {n: p.detach().cpu() for n, p in model.trainable_parameters().items()}
    for name, p in loaded.trainable_parameters().items():
        torch.testing.assert_close(p, trained[name].float(), msg=name)


def test_greedy_narrations_on_gpu_equal_the_cpu_ones(llm_dir):
    cpu = build_f64(llm_dir)                # float64: no rounding tie can flip a token
    gpu = build_f64(llm_dir).to(CUDA)
    for mode in ("given", "generated"):
        cfg = replace(GREEDY, mode=mode, batch_size=3)
        a = narrate_videos(cpu, VIDEOS, VISUAL, cfg, progress=False)
        b = narrate_videos(gpu, VIDEOS, VISUAL, cfg, progress=False)
        assert {v: [o.raw for o in outs] for v, outs in a.items()} == {v: [o.raw for o in outs] for v, outs in b.items()}
        assert any(o.raw for outs in a.values() for o in outs)
