"""The real-data profile end to end: `dvc repro esyncvidstory/dvc.yaml` on the shared annotations, tiny budgets."""
import json

import pytest
import yaml

from test_pipeline import project, run  # noqa: F401  (the fixture: a fresh copy of the project)


@pytest.mark.slow
def test_real_data_profile_runs_through_dvc(project, esync_path):  # noqa: F811
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["esyncvidstory"].update({"annotations": str(esync_path), "steps": 2, "batch_size": 2,
                                    "checkpoint_every": 0, "eval_every": 2, "test_fraction": 0.05,
                                    "max_knowledge_chars": 40})
    params["evaluate"]["max_new_tokens"] = 8
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True))

    out = run(["dvc", "repro", "esyncvidstory/dvc.yaml"], project)
    assert "esyncvidstory_text" in out
    assert not (project / "reports/04_evaluate.ipynb").exists()      # the default pipeline did not run
    stats = json.loads((project / "reports/esyncvidstory/statistics.json").read_text())
    assert stats["videos"] == 120 and stats["clips"] == 832
    assert stats["videos_per_split"] == {"train": 102, "val": 12, "test": 6}
    metrics = json.loads((project / "reports/esyncvidstory/metrics.json").read_text())
    assert set(metrics) == {"text_only", "retrieval", "position_prior", "majority_label"}
    for name in ("text_only", "retrieval"):
        assert {"BLEU-4", "ROUGE-L", "CIDEr", "sync_in_window", "length_error", "label_acc"} <= set(metrics[name])
    assert set(metrics["majority_label"]) == {"label_acc"}
    assert metrics["retrieval"]["sync_in_window"] > 0.5   # reference-length narrations from similar windows
    assert (project / "reports/esyncvidstory/results.md").read_text().count("| text_only |") == 1
    assert (project / "reports/figures/esyncvidstory_data/overview.png").is_file()

    shown = json.loads(run(["dvc", "metrics", "show", "--json"], project))
    assert "text_only" in shown[""]["data"]["reports/esyncvidstory/metrics.json"]["data"]
    assert "up to date" in run(["dvc", "repro", "esyncvidstory/dvc.yaml"], project)
