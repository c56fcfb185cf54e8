"""The benchmarks keep working: `benchmarks/run_all.py --quick` runs every script and reports every figure."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Every figure the summary promises (RESULTS.md is written from these names).
FIGURES = (
    [f"encode.{tower}.{what}" for tower in ("tiny", "vitb32")
     for what in ("project_fps", "naive_fps", "cached_rerun_s", "tower_load_s", "max_abs_diff")]
    + [f"train.{what}.{layout}" for what in ("positions_per_clip", "padding_share")
       for layout in ("per_clip", "packed")]
    + ["train.packing.clips_per_s", "train.packing.cpu_s_per_clip", "train.packing.first_loss_diff"]
    + ["train.profile.forward_share", "train.profile.backward_share", "train.profile.optimizer_share",
       "train.profile.top_op_share"]
    + ["tokens.visual_per_clip.before", "tokens.visual_per_clip.after", "tokens.memory", "tokens.text_prompt.mean",
       "tokens.input.max", "tokens.input.max_share_of_context", "tokens.context",
       "tokens.story_tokens_per_clip", "tokens.clips_to_fill_context"]
    + [f"tokens.clip{k}.{what}" for k in (1, 10, 50, 100)
       for what in ("visual_memory", "text", "input", "input_share_of_context", "qformer_frames")]
    + ["generate.full_reencode.narrations_per_s", "generate.kv_reuse.narrations_per_s",
       "generate.kv_reuse.narrations_per_cpu_s", "generate.batched.narrations_per_s",
       "generate.batched.narrations_per_cpu_s", "generate.kv_reuse.bound_from_prefill"]
    + [f"{bench}.{path}.{what}" for bench in ("generate", "generate_long")
       for path in ("full_reencode", "kv_reuse", "batched") for what in ("prefill_share", "decode_share")]
    + ["generate_long.kv_reuse.narrations_per_s", "generate_long.kv_reuse.bound_from_prefill"]
    + ["generate_passes.separate.narrations_per_s", "generate_passes.together_batch4.narrations_per_s"]
    + ["generate_merge.on_top.narrations_per_s", "generate_merge.merged.narrations_per_s",
       "generate_merge.identical_narrations"]
)


@pytest.mark.slow
def test_run_all_quick_reports_every_figure(tmp_path):
    out = tmp_path / "results.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "benchmarks/run_all.py", "--quick", "--out", str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    doc = json.loads(out.read_text())
    assert doc["mode"] == "quick" and doc["machine"]["cores"] >= 1
    figures = {f["name"]: f for f in doc["figures"]}
    missing = [name for name in FIGURES if name not in figures]
    assert not missing, f"figures missing from the JSON: {missing}"
    for name in FIGURES:
        value = figures[name]["value"]
        assert isinstance(value, (int, float)) and math.isfinite(value), (name, value)
    assert set(doc["benchmarks"]) == {"encode", "train", "tokens", "generate", "generate_long", "generate_passes",
                                        "generate_merge"}
    assert all(b["returncode"] == 0 for b in doc["benchmarks"].values())
    # the comparisons are of the same work
    assert doc["benchmarks"]["encode"]["details"]["runs"][0]["agree"]
    assert doc["benchmarks"]["generate"]["details"]["identical_ab"]
    long, short = doc["benchmarks"]["generate_long"]["details"], doc["benchmarks"]["generate"]["details"]
    assert long["identical_ab"] and long["prefix_tokens"] >= 400 > short["prefix_tokens"]
    assert doc["benchmarks"]["generate_passes"]["details"]["identical"]
    assert "summary" in proc.stdout and "generate.kv_reuse.narrations_per_s" in proc.stdout
