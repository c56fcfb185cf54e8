"""The seed study: pooling several train.seed runs of one dataset into one table."""
import json
import statistics

import pytest

from videonarrator import study


def fake_run(reports, videos, systems):
    """reports/metrics.json + video_counts.json as the evaluate stage writes them."""
    reports.mkdir(parents=True, exist_ok=True)
    counts = {"videos": videos, "systems": {name: {rate: {"hits": h, "counts": c} for rate, (h, c) in rates.items()}
                                            for name, rates in systems.items()}}
    (reports / "video_counts.json").write_text(json.dumps(counts))
    (reports / "metrics.json").write_text(json.dumps({name: {} for name in systems}))


def test_aggregate_mean_sd_interval_counts_and_difference(tmp_path):
    videos = ["a", "b", "c", "d"]
    facts = [5, 5, 5, 5]
    per_seed = {0: [5, 4, 3, 4], 1: [3, 3, 3, 3], 2: [5, 5, 4, 4]}   # videonarrator's hits per video
    for seed, hits in per_seed.items():
        fake_run(tmp_path / f"r{seed}", videos, {
            "videonarrator": {"visual_attr_acc": (hits, facts), "label_acc": ([1, 1, 0, 1], [2, 2, 2, 2])},
            "text_only": {"visual_attr_acc": ([1, 2, 1, 2], facts)}})
        study.collect(seed, tmp_path / f"r{seed}", tmp_path / "study")
    runs = study.load_runs(tmp_path / "study")
    assert sorted(runs) == [0, 1, 2]
    table = study.aggregate(runs, n_boot=200)
    row = table["videonarrator"]["visual_attr_acc"]
    values = [sum(h) / 20 for h in per_seed.values()]
    assert row["mean"] == pytest.approx(statistics.fmean(values)) and row["sd"] == pytest.approx(statistics.stdev(values))
    assert row["seeds"] == 3 and row["n"] == 20
    assert row["lo"] <= row["mean"] <= row["hi"]
    assert row["diff"] == pytest.approx(row["mean"] - 6 / 20)
    assert row["diff_lo"] > 0   # every video is better in every seed
    assert "diff" not in table["videonarrator"]["label_acc"]   # text_only has no label rate here
    assert "diff" not in table["text_only"]["visual_attr_acc"]
    text = study.study_table(table)
    assert "| videonarrator |" in text and "(n=20, 3 seeds)" in text and "Seed-mean minus `text_only`" in text
    written = study.write_study(tmp_path / "study", tmp_path / "reports")
    assert (tmp_path / "reports/study.md").read_text() == written and "train.seed in {0, 1, 2}" in written
    assert "## Corpus metrics" not in written          # the fake runs' metrics.json hold no corpus metric
    assert "| 0 | (training reports not collected) |" in written


def test_each_rows_own_chance_is_pooled_without_a_difference_to_text_only(tmp_path):
    videos, facts = ["a", "b", "c"], [4, 4, 4]
    for seed, hits in {0: [4, 4, 3], 1: [3, 4, 4]}.items():
        fake_run(tmp_path / f"r{seed}", videos, {
            "videonarrator": {"visual_attr_acc": (hits, facts), "visual_attr_chance": ([1, 1, 1], facts)},
            "text_only": {"visual_attr_acc": ([1, 1, 1], facts), "visual_attr_chance": ([1, 1, 1], facts)}})
        study.collect(seed, tmp_path / f"r{seed}", tmp_path / "study")
    table = study.aggregate(study.load_runs(tmp_path / "study"), n_boot=200)
    above = table["videonarrator"][study.ABOVE_CHANCE]
    assert above["mean"] == pytest.approx(11 / 12 - 3 / 12) and above["seeds"] == 2 and above["n"] == 12
    assert above["lo"] > 0 and "diff" not in above and "diff" not in table["videonarrator"]["visual_attr_chance"]
    assert table["text_only"][study.ABOVE_CHANCE]["mean"] == 0.0
    assert "diff" in table["videonarrator"]["visual_attr_acc"]


def test_training_reports_are_filed_and_shown_per_seed(tmp_path):
    fake_run(tmp_path / "r", ["a"], {"text_only": {"label_acc": ([1], [1])}})
    (tmp_path / "r/train_videonarrator.json").write_text(json.dumps(
        {"system": "videonarrator", "precision": "fp32", "cpu_bf16_speedup": 0.6, "clips_per_s": 1.234,
         "wall_s": 1500.4, "peak_rss_mb": 3700.2}))
    study.collect(3, tmp_path / "r", tmp_path / "study")
    assert (tmp_path / "study/seed_3/train_videonarrator.json").is_file()
    runs = study.load_runs(tmp_path / "study")
    assert runs[3]["train"]["videonarrator"]["precision"] == "fp32"
    assert "| 3 | videonarrator | fp32 | 0.6 | 1.23 | 1500 | 3700 |" in study.runs_table(runs)
    runs[3]["train"]["videonarrator"]["cpu_bf16_speedup"] = 0.0     # train.cpu_bf16_speedup: no native bf16
    assert "| 3 | videonarrator | fp32 | no native bf16 | 1.23 |" in study.runs_table(runs)


def test_corpus_metrics_per_seed_with_mean_and_sd(tmp_path):
    runs = {s: {"metrics": {"videonarrator": {"CIDEr": c}, "text_only": {}}} for s, c in ((0, 1.0), (1, 0.8), (2, 0.9))}
    text = study.corpus_table(runs)
    assert "| videonarrator | 0.900 ± 0.100 (1.000, 0.800, 0.900) |  |  |" in text
    assert "text_only" not in text
    assert study.corpus_table({0: {"metrics": {"text_only": {}}}}) == ""


def test_runs_of_another_dataset_or_missing_files_are_refused(tmp_path):
    fake_run(tmp_path / "r0", ["a", "b"], {"text_only": {"label_acc": ([1, 0], [1, 1])}})
    fake_run(tmp_path / "r1", ["a", "c"], {"text_only": {"label_acc": ([1, 0], [1, 1])}})
    study.collect(0, tmp_path / "r0", tmp_path / "study")
    study.collect(1, tmp_path / "r1", tmp_path / "study")
    with pytest.raises(ValueError, match="different test videos"):
        study.load_runs(tmp_path / "study")
    with pytest.raises(FileNotFoundError, match="video_counts.json missing"):
        study.collect(2, tmp_path / "empty", tmp_path / "study")
    with pytest.raises(FileNotFoundError, match="no runs under"):
        study.load_runs(tmp_path / "nothing")


def test_video_counts_json_holds_what_the_study_needs(tiny_prepared):
    from videonarrator import evaluate as E

    _, videos, _ = tiny_prepared
    train, test = videos[:4], videos[4:]
    outputs = {"retrieval": E.retrieval_narrations(train, test)}
    vocab = [it for v in videos for its in v.product.knowledge.values() for it in its]
    doc = json.loads(json.dumps(E.video_counts_json(outputs, test, vocab)))
    assert doc["videos"] == [v.id for v in test]
    rates = doc["systems"]["retrieval"]
    assert {"visual_attr_acc", "label_acc", "sync_in_window", "hallucination_rate"} <= set(rates)
    m = E.score_system(outputs["retrieval"], test, "en", knowledge_vocab=vocab)
    assert sum(rates["visual_attr_acc"]["counts"]) == m["visual_attr_n"]


def test_the_command_line_says_what_is_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert study.main(["table"]) == 1
    assert "no runs under reports/study" in capsys.readouterr().err


def fake_dvc_exp_run(monkeypatch, root):
    """Stand-ins for `dvc exp run -S train.seed=N` (rewrites params.yaml as DVC does), collect and the
    table; returns the seeds in the order they ran."""
    import subprocess

    import yaml
    ran = []

    def run(cmd, cwd):
        seed = int(cmd[-1].split("=")[1])
        params = yaml.safe_load((root / "params.yaml").read_text())
        params["train"]["seed"] = seed
        (root / "params.yaml").write_text(yaml.safe_dump(params))
        ran.append(seed)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(study.subprocess, "run", run)
    monkeypatch.setattr(study, "collect", lambda seed, reports, dest: None)
    monkeypatch.setattr(study, "write_study", lambda study_dir, reports: "table")
    return ran


def test_the_study_ends_on_the_run_it_started_from(tmp_path, monkeypatch, capsys):
    text = "train:\n  seed: 0                 # a comment DVC's rewrite drops\n  steps: 150\n"
    (tmp_path / "params.yaml").write_text(text)
    ran = fake_dvc_exp_run(monkeypatch, tmp_path)
    assert study.run_study([0, 1, 2, 1], root=tmp_path) == "table"
    assert ran == [1, 2, 0]
    assert (tmp_path / "params.yaml").read_text() == text
    assert "workspace holds" not in capsys.readouterr().out


def test_a_study_without_the_workspace_seed_says_how_to_return(tmp_path, monkeypatch, capsys):
    (tmp_path / "params.yaml").write_text("train:\n  seed: 0\n")
    ran = fake_dvc_exp_run(monkeypatch, tmp_path)
    study.run_study([3, 4], root=tmp_path)
    assert ran == [3, 4]
    assert "seed: 4" in (tmp_path / "params.yaml").read_text()
    assert "the workspace holds seed 4's run; `git checkout params.yaml dvc.lock reports" in capsys.readouterr().out
