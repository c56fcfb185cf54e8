"""Training: seeded runs, resume after an interruption, two processes (gloo) agreeing."""
import json
import os
from types import SimpleNamespace
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from helpers import DEFAULTS, make_tiny_llm
from videonarrator.features import extract_features
from videonarrator.model import VideoNarrator
from videonarrator.prompt import build_clip_prompt
from videonarrator.train import batch_plan, full_plan, lr_lambda, train_system, video_groups

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def project(tiny_prepared, tmp_path_factory):
    """A project folder with prepared data, tiny-tower features, a tiny LLM and tiny params."""
    processed, videos, _ = tiny_prepared
    root = tmp_path_factory.mktemp("project")
    shutil.copytree(processed, root / "data/processed")
    extract_features(videos, root / "data/processed", root / "data/features", DEFAULTS.tower(), progress=False)
    corpus = [build_clip_prompt(v, i, mode=m).text() for v in videos for i in range(len(v.clips))
              for m in ("given", "generated")]
    make_tiny_llm(root / "models/tiny_llm", corpus)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["llm"]["path"] = "models/tiny_llm"
    params["model"].update(num_query_tokens=2, qformer_hidden=16, qformer_heads=2, lora_r=2)
    params["train"].update(steps=6, batch_size=4, eval_every=3, checkpoint_every=2, eval_clips=4,
                           precision="fp32", warmup_steps=2, caption_steps=0, qformer_steps=0)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root, params


def copy_project(project, tmp_path):
    root, params = project
    dest = tmp_path / "p"
    shutil.copytree(root, dest, ignore=shutil.ignore_patterns("videonarrator*", "text_only*"))
    return dest, params


def saved_weights(root, system="videonarrator"):
    model = VideoNarrator.from_pretrained(root / "models" / system, root / "models/tiny_llm")
    return {k: v.clone() for k, v in model.state_dict().items()}


def padded_share(plan, lengths):
    """Padding share of the plan's batches, each padded to its longest sample."""
    total = sum(max(lengths[i] for i in b) * len(b) for b in plan)
    return 1 - sum(lengths[i] for b in plan for i in b) / total


def test_batch_plan_is_seeded_and_groups_lengths():
    lengths = [10 + (i * 37) % 90 for i in range(64)]
    cfg = DEFAULTS.train(steps=20, batch_size=4, seed=1)
    plan = batch_plan(lengths, cfg)
    assert plan == batch_plan(lengths, cfg) and len(plan) == 20
    assert all(len(b) == 4 for b in plan)
    assert batch_plan(lengths, DEFAULTS.train(steps=20, batch_size=4, seed=2)) != plan
    ungrouped = batch_plan(lengths, DEFAULTS.train(steps=20, batch_size=4, seed=1, length_grouping=False))
    assert padded_share(plan, lengths) < padded_share(ungrouped, lengths)
    with pytest.raises(ValueError, match="fewer than batch_size"):
        batch_plan([1, 2], cfg)


@pytest.mark.parametrize("grouping", [True, False])
def test_batch_plan_keeps_a_videos_clips_together(grouping):
    videos = [5, 3, 8, 4, 6, 7, 2, 5]                                   # clips per video
    samples = [SimpleNamespace(video=f"v{k}") for k, n in enumerate(videos) for _ in range(n)]
    groups = video_groups(samples)
    assert [len(g) for g in groups] == videos and video_groups([SimpleNamespace(video="")] * 2) == [[0], [1]]
    cfg = DEFAULTS.train(steps=30, batch_size=8, seed=4, length_grouping=grouping)
    plan = batch_plan([10] * len(samples), cfg, groups)
    assert len(plan) == 30 and all(len(b) == 8 for b in plan)
    epoch = [i for b in plan[:len(samples) // 8] for i in b]
    assert len(set(epoch)) == len(epoch)                                # an epoch sees each clip once
    for b in plan:                                                      # a video's clips: one run, in order
        runs = [g for g in groups if set(g) & set(b)]
        for g in runs:
            part = [i for i in b if i in g]
            assert part == sorted(part) and b[b.index(part[0]):b.index(part[0]) + len(part)] == part


def test_learning_rate_warms_up_then_decays():
    f = lr_lambda(DEFAULTS.train(steps=100, warmup_steps=10))
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(99) < 0.12 and f(50) < f(20)


def test_training_runs_saves_and_reports(project, tmp_path):
    root, params = copy_project(project, tmp_path)
    result = train_system(params, "videonarrator", root, progress=False)
    assert result["steps"] == 6 and len(result["log"]) == 6
    assert [e["step"] for e in result["log"] if "val_loss" in e] == [3, 6]
    for key in ("final_loss", "clips_per_s", "peak_rss_mb", "padding_share", "positions_per_clip"):
        assert result[key] > 0
    assert not (root / "models/videonarrator.ckpt").exists()      # removed once the run completes
    again = copy_project(project, tmp_path / "again")[0]
    train_system(params, "videonarrator", again, progress=False)
    a, b = saved_weights(root), saved_weights(again)
    assert all(torch.equal(a[k], b[k]) for k in a)                 # seeded: identical reruns
    assert params["model"]["label_head"] and a["label_head.weight"].abs().sum() > 0   # fitted, saved


def test_resume_after_interruption_equals_an_uninterrupted_run(project, tmp_path):
    full, params = copy_project(project, tmp_path / "full")
    train_system(params, "videonarrator", full, progress=False)
    cut = copy_project(project, tmp_path / "cut")[0]
    partial = train_system(params, "videonarrator", cut, progress=False, stop_after=3)
    assert partial["steps"] == 3 and not (cut / "models/videonarrator").exists()
    assert (cut / "models/videonarrator.ckpt/checkpoint.pt").exists()
    resumed = train_system(params, "videonarrator", cut, progress=False)
    assert [e["step"] for e in resumed["log"]] == list(range(1, 7))
    a, b = saved_weights(full), saved_weights(cut)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_checkpoint_from_other_settings_is_refused(project, tmp_path):
    root, params = copy_project(project, tmp_path)
    train_system(params, "videonarrator", root, progress=False, stop_after=2)
    params = {**params, "train": {**params["train"], "lr_lora": 0.5}}
    with pytest.raises(ValueError, match="checkpoint.pt was written by a run with other settings"):
        train_system(params, "videonarrator", root, progress=False)


def test_the_caption_warm_up_comes_first_with_captions_of_the_training_clips(project):
    from transformers import AutoTokenizer
    from videonarrator.data.synthetic import clip_caption
    from videonarrator.dataset import caption_samples, training_samples
    from videonarrator.schema import load_dataset, split_videos

    root, _ = project
    videos = split_videos(load_dataset(root / "data/processed/dataset.json")[0], "train")
    tokenizer = AutoTokenizer.from_pretrained(root / "models/tiny_llm")
    train_s = training_samples(tokenizer, videos, root / "data/features", 0.9, ["given"], 0)
    captions = caption_samples(tokenizer, videos, root / "data/features", 0.9)
    assert len(captions) == len(train_s)                            # every synthetic clip has one
    first = videos[0].clips[0]
    assert tokenizer.decode(captions[0].target_ids[:-1]).strip() == clip_caption(first)
    assert len(captions[0].earlier_patches) == 0 and captions[0].fact_tokens  # no memory; all caption words weigh
    model_cfg = SimpleNamespace(use_video=True, use_memory=True, memory_frames=1, num_query_tokens=2)
    cfg = DEFAULTS.train(steps=3, batch_size=4, caption_steps=2)
    samples, plan, warm = full_plan(train_s, captions, cfg, model_cfg)
    assert warm == 2 and len(plan) == 5 and samples == train_s + captions
    assert all(i >= len(train_s) for b in plan[:2] for i in b)
    assert all(i < len(train_s) for b in plan[2:] for i in b)
    assert plan[2:] == full_plan(train_s, [], cfg, model_cfg)[1]    # the training steps are unchanged
    assert full_plan(train_s, [], cfg, model_cfg)[2] == 0           # no captions (real data): no warm-up


def test_a_caption_warm_up_run_resumes_exactly_and_text_only_skips_it(project, tmp_path):
    full, params = copy_project(project, tmp_path / "full")
    params = {**params, "train": {**params["train"], "caption_steps": 3}}
    result = train_system(params, "videonarrator", full, progress=False)
    assert result["caption_steps"] == 3 and [e["step"] for e in result["log"]] == list(range(1, 10))
    cut = copy_project(project, tmp_path / "cut")[0]
    train_system(params, "videonarrator", cut, progress=False, stop_after=2)   # stopped inside the warm-up
    train_system(params, "videonarrator", cut, progress=False)
    a, b = saved_weights(full), saved_weights(cut)
    assert all(torch.equal(a[k], b[k]) for k in a)
    text = train_system(params, "text_only", full, progress=False)
    assert text["caption_steps"] == 0 and text["steps"] == 6


def test_stage_one_comes_before_the_llm_steps_and_a_resumed_run_skips_it(project, tmp_path):
    full, params = copy_project(project, tmp_path / "full")
    params = {**params, "train": {**params["train"], "qformer_steps": 20, "qformer_batch_size": 4}}
    result = train_system(params, "videonarrator", full, progress=False)
    stage1 = result["stage1"]
    assert stage1["steps"] == 20 and set(stage1["val_acc"]) == {"colour", "shape", "action", "setting"}
    assert [e["step"] for e in result["log"]] == list(range(1, 7))     # the LLM steps are unchanged in number
    cut = copy_project(project, tmp_path / "cut")[0]
    train_system(params, "videonarrator", cut, progress=False, stop_after=2)
    resumed = train_system(params, "videonarrator", cut, progress=False)   # from the checkpoint: no second stage 1
    assert resumed["stage1"]["train_acc"] == stage1["train_acc"]
    a, b = saved_weights(full), saved_weights(cut)
    assert all(torch.equal(a[k], b[k]) for k in a)
    plain = copy_project(project, tmp_path / "plain")[0]
    train_system({**params, "train": {**params["train"], "qformer_steps": 0}}, "videonarrator", plain, progress=False)
    assert not torch.equal(saved_weights(plain)["visual.projector.weight"], a["visual.projector.weight"])
    assert train_system(params, "text_only", full, progress=False)["stage1"] is None   # no frames, no stage 1


def test_text_only_system_trains_without_visual_weights(project, tmp_path):
    root, params = copy_project(project, tmp_path)
    result = train_system(params, "text_only", root, progress=False)
    assert result["trainable_params"] < train_system(params, "videonarrator", root, progress=False)["trainable_params"]
    assert not (root / "models/text_only/visual.safetensors").exists()


@pytest.mark.slow
def test_two_processes_on_cpu_agree_on_the_weights(project, tmp_path):
    root, _ = copy_project(project, tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
           "-m", "videonarrator.train", "--root", str(root), "--system", "videonarrator"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((root / "reports/train_videonarrator.json").read_text())
    assert report["processes"] == 2 and report["steps"] == 6
    assert len(report["rank_checksums"]) == 2 and len(set(report["rank_checksums"])) == 1


def test_training_log_goes_to_dvclive_and_the_report(tmp_path):
    from videonarrator.train import write_train_report

    log = [{"step": 1, "loss": 2.5, "lr": 0.1}, {"step": 2, "loss": 2.0, "lr": 0.05, "val_loss": 2.2}]
    result = {"log": log, "steps": 2, "final_loss": 2.25, "val_loss": 2.2, "clips_per_s": 1.5, "wall_s": 3.0}
    report = write_train_report(result, "text_only", tmp_path)
    assert report == tmp_path / "train_text_only.json"
    assert json.loads(report.read_text())["log"] == log                     # the whole run, for figures
    live = tmp_path / "dvclive" / "text_only"
    assert json.loads((live / "metrics.json").read_text()) == {             # headline numbers only
        "text_only": {"train_loss": 2.25, "val_loss": 2.2, "clips_per_s": 1.5}, "step": 2}
    plots = live / "plots" / "metrics"
    assert (plots / "train/loss.tsv").read_text().split() == ["step", "loss", "1", "2.5", "2", "2.0"]
    assert (plots / "train/lr.tsv").read_text().split() == ["step", "lr", "1", "0.1", "2", "0.05"]
    assert (plots / "val/loss.tsv").read_text().split() == ["step", "loss", "2", "2.2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dvclive", "train_text_only.json"]   # no temporaries
    write_train_report({**result, "log": log[:1]}, "text_only", tmp_path)   # a rerun replaces, never appends
    assert (plots / "train/loss.tsv").read_text().split() == ["step", "loss", "1", "2.5"]
    assert not (plots / "val/loss.tsv").exists()


def test_training_can_start_from_saved_qformer_weights(project, tmp_path):
    from transformers import Blip2QFormerModel

    from videonarrator.config import Settings

    root, params = copy_project(project, tmp_path)
    cfg = Settings(params).model(vision_shape=(64, 64))   # the tiny tower's features
    Blip2QFormerModel(cfg.qformer_config()).save_pretrained(root / "blip2_qformer")
    params = {**params, "model": {**params["model"], "qformer_weights": "missing_folder"}}
    with pytest.raises(FileNotFoundError, match="missing_folder"):
        train_system(params, "videonarrator", root, progress=False, stop_after=1)
    params["model"]["qformer_weights"] = "blip2_qformer"
    assert train_system(params, "videonarrator", root, progress=False, stop_after=1)["steps"] == 1


def test_tower_shape_reaches_the_saved_model_config(project, tmp_path):
    """Features of a tower other than the default (36 patches of width 32) train a model whose
    saved config records that shape; a config left at any other shape would fail at the Q-Former."""
    from videonarrator.features import register_model_config, stored_shape
    from videonarrator.io import read_json
    from videonarrator.schema import load_dataset
    from videonarrator.train import train_on_videos

    root, params = copy_project(project, tmp_path)
    register_model_config("vn-test-w32", {
        "embed_dim": 32, "vision_cfg": {"image_size": 48, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}})
    videos, _ = load_dataset(root / "data/processed/dataset.json")
    extract_features(videos, root / "data/processed", root / "other_features", DEFAULTS.tower(name="vn-test-w32"),
                     progress=False)
    assert stored_shape(root / "other_features", videos[0]) == (36, 32)
    for system, shape in (("videonarrator", [36, 32]), ("text_only", [0, 0])):
        train_on_videos(params, system, videos, root / "other_features", root / "models" / system, root,
                        progress=False, steps=1, checkpoint_every=0)
        saved = read_json(root / "models" / system / "config.json")
        assert [saved["num_patches"], saved["vision_width"]] == shape, system
    model = VideoNarrator.from_pretrained(root / "models/videonarrator", root / "models/tiny_llm")
    assert model.visual.qformer.config.encoder_hidden_size == 32 and model.visual.patch_pos.shape == (36, 32)
