"""The real-data profile end to end: `dvc repro esyncvidstory/dvc.yaml` on the shared annotations, tiny budgets."""
import json

import pytest
import yaml

from test_pipeline import make_project, run


@pytest.fixture
def project(tmp_path):
    """A fresh copy of the project with the tiny params of test_pipeline."""
    return make_project(tmp_path / "project")


@pytest.mark.slow
def test_real_data_profile_runs_through_dvc(project, esync_path):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["esyncvidstory"].update({"annotations": str(esync_path), "steps": 2, "batch_size": 2,
                                    "checkpoint_every": 0, "eval_every": 2, "test_fraction": 0.05,
                                    "max_knowledge_chars": 40, "n_boot": 50})
    params["evaluate"]["max_new_tokens"] = 8
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True))

    out = run(["dvc", "repro", "esyncvidstory/dvc.yaml"], project)
    assert "esyncvidstory_text" in out
    assert not (project / "reports/04_evaluate.ipynb").exists()      # the default pipeline did not run
    stats = json.loads((project / "reports/esyncvidstory/statistics.json").read_text())
    assert stats["videos"] == 120 and stats["clips"] == 832
    assert stats["videos_per_split"] == {"train": 102, "val": 12, "test": 6}
    metrics = json.loads((project / "reports/esyncvidstory/metrics.json").read_text())
    assert set(metrics) == {"text_only", "retrieval", "position_prior", "majority_label", "place_prior"}
    for name in ("text_only", "retrieval"):
        assert {"BLEU-4", "ROUGE-L", "CIDEr", "sync_in_window", "length_error", "label_acc"} <= set(metrics[name])
    for name in ("majority_label", "place_prior"):
        assert {"label_acc", "label_n", "label_macro_f1"} <= set(metrics[name])
        assert not {"BLEU-4", "CIDEr", "sync_in_window"} & set(metrics[name])   # labels only
    assert metrics["retrieval"]["sync_in_window"] > 0.5   # reference-length narrations from similar windows
    results = (project / "reports/esyncvidstory/results.md").read_text()
    rows = [line for line in results.splitlines() if line.startswith("| text_only |")]
    assert len(rows) == 2                                             # the plain table and the one with intervals
    assert "| text_only - position_prior |" in results and "| text_only - place_prior |" in results
    assert "Per-label F1" in results
    examples = (project / "reports/esyncvidstory/examples.md").read_text()
    assert examples.count("| best |") == 3 and examples.count("| worst |") == 3
    intervals = json.loads((project / "reports/esyncvidstory/intervals.json").read_text())
    assert intervals["test_videos"] == 6 and intervals["n_boot"] == params["esyncvidstory"]["n_boot"]
    acc = intervals["systems"]["position_prior"]["label_acc"]
    assert acc["value"] == pytest.approx(metrics["position_prior"]["label_acc"]) and acc["n"] == intervals["test_clips"]
    assert acc["lo"] <= acc["value"] <= acc["hi"]
    assert {"BLEU-4", "CIDEr", "ROUGE-L", "sync_in_window", "repetition", "macro_f1"} <= set(intervals["systems"]["text_only"])
    assert stats["label_distribution"]["product efficacy"]["clips"] > 0 and stats["paper"]["videos"] == 6032
    assert "| clips per video |" in (project / "reports/esyncvidstory/statistics.md").read_text()
    assert (project / "reports/figures/esyncvidstory_data/overview.png").is_file()

    shown = json.loads(run(["dvc", "metrics", "show", "--json", "reports/esyncvidstory/metrics.json"], project,
                           stdout_only=True))   # by path: not a declared metric of the default job
    assert "text_only" in shown[""]["data"]["reports/esyncvidstory/metrics.json"]["data"]
    assert "spoken_fit" in shown[""]["data"]["reports/esyncvidstory/metrics.json"]["data"]["text_only"]
    assert (project / "reports/esyncvidstory/dvclive/plots/metrics/train/loss.tsv").is_file()
    assert "up to date" in run(["dvc", "repro", "esyncvidstory/dvc.yaml"], project)


@pytest.mark.slow
def test_main_pipeline_on_official_data_with_frames(project, esync_path, tmp_path):
    """The paper profile's data path: common.dataset esyncvidstory, the official annotations and a copy
    of their 1-fps frames (fake images here: the release's frames are not public) through every stage."""
    from test_realdata import official_subset

    (tmp_path / "official").mkdir()
    annotations, frames_root, records = official_subset(esync_path, tmp_path / "official", n_videos=5)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["common"]["dataset"] = "esyncvidstory"
    params["esyncvidstory"].update({"annotations": str(annotations), "frames_root": str(frames_root),
                                    "val_fraction": 0.2, "test_fraction": 0.2, "max_knowledge_chars": 40})
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True))

    run(["dvc", "repro"], project)
    prepared = json.loads((project / "reports/prepare.json").read_text())
    assert prepared["videos"] == 5 and prepared["clips"] == sum(len(r["images"]) for r in records)
    features = json.loads((project / "reports/features.json").read_text())
    assert features["frames"] == prepared["frames"]
    metrics = json.loads((project / "reports/metrics.json").read_text())
    assert {"videonarrator", "text_only", "retrieval", "majority_label"} <= set(metrics)
    assert "label_acc" in metrics["videonarrator"] and "CIDEr" in metrics["videonarrator"]
    assert "esyncvidstory test split" in (project / "reports/results.md").read_text()
    assert json.loads((project / "data/raw/source.json").read_text())["frames_root"] == str(frames_root)
