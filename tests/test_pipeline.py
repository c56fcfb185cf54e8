"""End to end: `dvc repro` on tiny parameters in a fresh copy of the project."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# Every stage runs for real, on a dataset and budgets small enough for a test.
TINY = {
    "prepare": {"n_videos": 4, "min_clips": 3, "max_clips": 4, "max_clip_s": 3},
    "train": {"steps": 2, "caption_steps": 2, "qformer_steps": 5, "batch_size": 2, "eval_every": 2, "eval_clips": 2,
              "checkpoint_every": 0},
    "evaluate": {"max_new_tokens": 16, "meteor": False},
    "visualize": {"videos": 1, "queries": 2},
}


def run(cmd, cwd, stdout_only: bool = False):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           # the copy's own package, ahead of the editable install of the checkout (which may change meanwhile)
           "PYTHONPATH": str(Path(cwd) / "src")}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout if stdout_only else proc.stdout + proc.stderr


def make_project(dest: Path) -> Path:
    """The git-tracked project files (plus any not yet committed), in a new git repo at ``dest``, tiny params."""
    files = run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], ROOT).split()
    for f in files:
        if (ROOT / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dest / f)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    for section, values in TINY.items():
        params[section].update(values)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (dest / "dvc.lock").unlink(missing_ok=True)
    run(["git", "init", "-q"], dest)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A"], dest)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "copy"], dest)
    return dest


@pytest.fixture(scope="module")
def projects(tmp_path_factory):
    """Two identical fresh copies of the project (made at the same moment, so they hold the same code)."""
    first = make_project(tmp_path_factory.mktemp("first"))
    second = tmp_path_factory.mktemp("second") / "p"
    shutil.copytree(first, second)
    return first, second


@pytest.fixture(scope="module")
def reproduced(projects):
    """The first copy after `dvc repro` from scratch, and its metrics.json and narrations.json as first written."""
    first, _ = projects
    start = time.perf_counter()
    run(["dvc", "repro"], first)
    print(f"tiny dvc repro from scratch: {time.perf_counter() - start:.0f} s")
    return first, (first / "reports/metrics.json").read_bytes(), (first / "reports/narrations.json").read_bytes()


@pytest.mark.slow
def test_dvc_repro_then_noop_then_experiment(reproduced):
    project = reproduced[0]
    metrics = json.loads((project / "reports/prepare.json").read_text())
    assert metrics["videos"] == 4 and metrics["shot_boundary_f1"] == 1.0
    for name in ("01_prepare_data", "02_features", "03_train_videonarrator", "03_train_text_only",
                 "04_evaluate", "05_visualize"):
        assert (project / f"reports/{name}.ipynb").is_file(), name
    assert (project / "reports/figures/prepare/dataset_overview.png").is_file()
    train = json.loads((project / "reports/train_videonarrator.json").read_text())
    assert train["steps"] == 4 and train["caption_steps"] == 2 and train["system"] == "videonarrator"
    results = json.loads((project / "reports/metrics.json").read_text())
    assert {"videonarrator", "text_only", "zero_shot", "retrieval", "majority_label"} <= set(results)
    assert 0 <= results["videonarrator"]["sync_in_window"] <= 1 and "label_acc" in results["videonarrator"]
    assert (project / "reports/figures/visualize/qformer_attention.png").is_file()

    out = run(["dvc", "repro"], project)
    assert "Data and pipelines are up to date" in out

    run(["dvc", "exp", "run", "-S", "prepare.n_videos=5", "prepare"], project)
    metrics = json.loads((project / "reports/prepare.json").read_text())
    assert metrics["videos"] == 5
    assert "failed to load" not in run(["dvc", "metrics", "show"], project)   # no warning about absent metrics
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], project, stdout_only=True))[""]["data"]
    # metrics are the headline results only: evaluation and DVCLive's training summaries, no dataset statistics
    assert set(shown) == {"reports/metrics.json", "reports/dvclive/videonarrator/metrics.json",
                          "reports/dvclive/text_only/metrics.json"}
    assert shown["reports/dvclive/videonarrator/metrics.json"]["data"]["step"] == 4   # 2 caption + 2 narration steps
    assert set(shown["reports/dvclive/text_only/metrics.json"]["data"]["text_only"]) == {
        "train_loss", "val_loss", "clips_per_s"}
    plots = run(["dvc", "plots", "show", "--json"], project, stdout_only=True)
    assert "reports/dvclive/videonarrator/plots/metrics/train/loss.tsv" in plots
    # the HTML page a user opens: a Vega-Lite chart of each system's training loss, with its data points
    run(["dvc", "plots", "show", "-o", "plots_html"], project)
    html = (project / "plots_html/index.html").read_text()
    assert "vega" in html.lower()
    for system in ("videonarrator", "text_only"):
        assert f"reports/dvclive/{system}/plots/metrics/train/loss.tsv" in html
    train_loss = json.loads((project / "reports/train_videonarrator.json").read_text())["log"][0]["loss"]
    assert f"{train_loss}"[:6] in html     # the first step's loss is a plotted value


@pytest.mark.slow
def test_two_runs_from_scratch_give_identical_results(reproduced, projects):
    """Seeded data, init, training and decoding: a second copy run from scratch in another process
    writes byte-identical metrics and narrations."""
    first, metrics, narrations = reproduced
    second = projects[1]
    start = time.perf_counter()
    run(["dvc", "repro"], second)
    print(f"second tiny dvc repro from scratch: {time.perf_counter() - start:.0f} s")
    assert (second / "reports/metrics.json").read_bytes() == metrics
    assert (second / "reports/narrations.json").read_bytes() == narrations
