"""End to end: `dvc repro` on tiny parameters in a fresh copy of the project."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# Every stage runs for real, on a dataset and budgets small enough for a test.
TINY = {
    "prepare": {"n_videos": 4, "min_clips": 3, "max_clips": 4, "max_clip_s": 3},
    "train": {"steps": 2, "batch_size": 2, "eval_every": 2, "eval_clips": 2, "checkpoint_every": 0},
    "evaluate": {"max_new_tokens": 16, "meteor": False},
    "visualize": {"videos": 1, "queries": 2},
}


def run(cmd, cwd):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.fixture
def project(tmp_path):
    """The git-tracked project files (plus any not yet committed), in a new git repo, tiny params."""
    files = run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], ROOT).split()
    for f in files:
        if (ROOT / f).is_file():
            (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, tmp_path / f)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    for section, values in TINY.items():
        params[section].update(values)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (tmp_path / "dvc.lock").unlink(missing_ok=True)
    run(["git", "init", "-q"], tmp_path)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A"], tmp_path)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "copy"], tmp_path)
    return tmp_path


@pytest.mark.slow
def test_dvc_repro_then_noop_then_experiment(project):
    run(["dvc", "repro"], project)
    metrics = json.loads((project / "reports/prepare.json").read_text())
    assert metrics["videos"] == 4 and metrics["shot_boundary_f1"] == 1.0
    for name in ("01_prepare_data", "02_features", "03_train_videonarrator", "03_train_text_only",
                 "04_evaluate", "05_visualize"):
        assert (project / f"reports/{name}.ipynb").is_file(), name
    assert (project / "reports/figures/prepare/dataset_overview.png").is_file()
    train = json.loads((project / "reports/train.json").read_text())
    assert train["steps"] == 2 and train["system"] == "videonarrator"
    results = json.loads((project / "reports/metrics.json").read_text())
    assert {"videonarrator", "text_only", "zero_shot", "retrieval", "majority_label"} <= set(results)
    assert 0 <= results["videonarrator"]["sync_in_window"] <= 1 and "label_acc" in results["videonarrator"]
    assert (project / "reports/figures/visualize/qformer_attention.png").is_file()

    out = run(["dvc", "repro"], project)
    assert "Data and pipelines are up to date" in out

    run(["dvc", "exp", "run", "-S", "prepare.n_videos=5", "prepare"], project)
    metrics = json.loads((project / "reports/prepare.json").read_text())
    assert metrics["videos"] == 5
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], project))
    assert shown[""]["data"]["reports/prepare.json"]["data"]["videos"] == 5
