"""The paper profile's code path, scaled down to run on a CPU in CI.

profiles/paper.yaml with only sizes changed (and bf16 off, the synthetic data
instead of the official frames, a tiny LLM the test writes instead of a 7B
folder, ViT-B-32 for ViT-L-14): a non-default open_clip tower (random init, 64 px), a
Q-Former started from a LAVIS-format .pth checkpoint, LoRA on all linear
layers, and every stage from prepare to evaluate run as DVC runs it.
"""
import json
import sys
from pathlib import Path

import pytest
import torch
import yaml

from helpers import make_tiny_llm
from test_llm import hf_to_lavis
from test_pipeline import make_project, run

ROOT = Path(__file__).resolve().parents[1]

# The sizes that make it fit a test; every other value is the paper profile's.
SCALED = {
    "common": {"dataset": "synthetic"},     # the official frames are not in CI
    "prepare": {"n_videos": 3, "min_clips": 2, "max_clips": 3, "max_clip_s": 3, "frame_size": 64},
    "features": {"tower": "ViT-B-32", "pretrained": None, "image_size": 64, "batch_size": 16},  # random init
    "llm": {"path": "models/tiny_llm"},
    "model": {"num_query_tokens": 4, "qformer_hidden": 32, "qformer_layers": 2, "qformer_heads": 2,
              "qformer_weights": "models/blip2_qformer.pth", "lora_r": 4},
    "train": {"steps": 2, "batch_size": 2, "grad_accum": 2, "warmup_steps": 1, "checkpoint_every": 0,
              "eval_every": 2, "eval_clips": 2, "precision": "fp32"},
    "evaluate": {"max_new_tokens": 8, "batch_size": 2, "meteor": False},
    "visualize": {"videos": 1, "queries": 2},
    "systems": {"trained": ["videonarrator"]},
}
QKEY = "encoder.layer.0.attention.attention.query.weight"


def scaled_paper_params() -> dict:
    params = yaml.safe_load((ROOT / "profiles/paper.yaml").read_text())
    for section, values in SCALED.items():
        assert set(values) <= set(params[section]), f"{section}: a key the paper profile does not have"
        params[section].update(values)
    return params


def write_lavis_qformer(path: Path, params: dict, vision_width: int) -> dict[str, torch.Tensor]:
    """A BLIP-2 Q-Former checkpoint in LAVIS naming (``{"model": {...}}``), for the configured sizes."""
    from videonarrator.config import Settings
    from transformers import Blip2QFormerModel

    cfg = Settings(params).model(vision_shape=(1, vision_width))
    torch.manual_seed(123)
    state = Blip2QFormerModel(cfg.qformer_config()).state_dict()
    lavis = hf_to_lavis(state)
    lavis["query_tokens"] = torch.randn(1, cfg.num_query_tokens, cfg.qformer_hidden)
    lavis["Qformer.cls.predictions.bias"] = torch.randn(10)         # parts the mapping must drop
    lavis["opt_proj.weight"] = torch.randn(8, cfg.qformer_hidden)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": lavis}, path)
    return state


@pytest.mark.slow
def test_scaled_paper_profile_runs_prepare_to_evaluate(tmp_path):
    from safetensors.torch import load_file

    from videonarrator.config import Settings
    from videonarrator.features import load_tower, tower_shape
    from videonarrator.params import load_params

    project = make_project(tmp_path / "p")
    params = scaled_paper_params()
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    load_params(project / "params.yaml")                           # valid as it stands
    patches, width = tower_shape(load_tower(Settings(params).tower())[0])
    assert (patches, width) == (4, 768)                            # ViT-B-32 at 64 px: 2 x 2 patches, width 768
    qformer = write_lavis_qformer(project / params["model"]["qformer_weights"], params, width)
    make_tiny_llm(project / params["llm"]["path"], ["Product: a cream. Label: Narration: soft skin."] * 20)

    for stage in ("prepare", "features", "train", "evaluate"):
        cmd = [sys.executable, "-m", "videonarrator.stage", stage, "--quiet"]
        run(cmd + (["--system", "videonarrator"] if stage == "train" else []), project)

    saved = json.loads((project / "models/videonarrator/config.json").read_text())
    assert (saved["num_patches"], saved["vision_width"]) == (patches, width)   # the tower's shape reached the model
    assert (saved["num_query_tokens"], saved["qformer_hidden"], saved["patch_pos_embed"]) == (4, 32, False)
    visual = load_file(project / "models/videonarrator/visual.safetensors")
    start = qformer[QKEY]
    # started from the checkpoint: two AdamW steps at lr 1e-4 move a weight by about 2e-4
    assert (visual[f"qformer.{QKEY}"] - start).abs().max() < 5e-3
    adapter = json.loads((project / "models/videonarrator/adapter/adapter_config.json").read_text())
    wrapped = {name.rsplit(".", 1)[-1] for name in adapter["target_modules"]}
    assert wrapped == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}   # all linear
    report = json.loads((project / "reports/train_videonarrator.json").read_text())
    assert report["steps"] == 2 and report["precision"] == "fp32"
    metrics = json.loads((project / "reports/metrics.json").read_text())
    assert {"videonarrator", "zero_shot", "retrieval", "majority_label"} <= set(metrics)
    assert "emscore" in metrics["videonarrator"] and -1 <= metrics["videonarrator"]["emscore"] <= 1   # ViT-B-32 scored
