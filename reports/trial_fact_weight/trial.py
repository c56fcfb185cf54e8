"""Scratch trial: train videonarrator with params.yaml's default plus overrides, narrate the test
split as the evaluation does (both modes + free-running), score it. One seed per call.

    python reports/trial_fact_weight/trial.py --root <a clone that ran prepare, features, base_llm> \
        --out /tmp/fw3_seed1 --seed 1 train.fact_weight=3

The runs here were made with params.yaml read from a fixed checkout path; it is --params now.
"""
import argparse, json, time
from pathlib import Path

import yaml

from videonarrator import evaluate as E
from videonarrator.config import Settings
from videonarrator.model import default_device
from videonarrator.schema import load_dataset, split_videos
from videonarrator.train import train_on_videos

ap = argparse.ArgumentParser()
ap.add_argument("--root", required=True)
ap.add_argument("--out", required=True)
ap.add_argument("--seed", type=int, required=True)
ap.add_argument("--params", default="params.yaml", help="the profile to start from")
ap.add_argument("--score-only", action="store_true", help="narrate and score the model already in OUT/model")
ap.add_argument("sets", nargs="*")
a = ap.parse_args()
root, out = Path(a.root), Path(a.out)
params = yaml.safe_load(Path(a.params).read_text())
params["train"]["seed"] = a.seed
for s in a.sets:
    key, _, value = s.partition("=")
    sec, _, name = key.partition(".")
    if not value or name not in params.get(sec, {}):
        raise SystemExit(f"override {s!r}: expected section.key=value with a key of {a.params}")
    params[sec][name] = yaml.safe_load(value)
settings = Settings(params)
videos, _ = load_dataset(root / "data/processed/dataset.json")
train_videos, test = split_videos(videos, "train"), split_videos(videos, "test")
t0 = time.time()
result = {} if a.score_only else train_on_videos(params, "videonarrator", videos, root / "data/features",
                                                 out / "model", root)
t_train = None if a.score_only else time.time() - t0
narrator = settings.narrator(out / "model", default_device(), llm_path=root / params["llm"]["path"])
gen = E.generation_config(settings, train_videos)
n = E.narrate_with_model(narrator, test, root / "data/features", settings.tau("videonarrator"), gen, free=True)
knowledge_vocab = [it for v in videos for its in v.product.knowledge.values() for it in its]
m = E.score_system(n, test, "en", None, knowledge_vocab)
keys = ["visual_attr_acc", "visual_attr_acc_lo", "visual_attr_acc_hi", "CIDEr", "sync_in_window_free",
        "sync_in_window_free_lo", "sync_in_window_free_hi", "length_slope_free", "length_error_free",
        "label_acc", "hallucination_rate", "knowledge_recall", "visual_attr_above_chance"]
summary = {"sets": a.sets, "seed": a.seed, "train_s": t_train and round(t_train), "val_loss": result.get("val_loss"),
           **{k: m.get(k) for k in keys}}
(out / "metrics.json").write_text(json.dumps({"summary": summary, "metrics": m}, indent=1))
(out / "narrations.json").write_text(json.dumps(E.narrations_to_json(n), indent=1))
print(json.dumps(summary))
