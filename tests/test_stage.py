"""The stage runner: papermill execution, parameters from params.yaml, clean failure."""
import shutil
from pathlib import Path

import nbformat
import pytest
import yaml

from videonarrator import stage
from videonarrator.params import ParamsError

ROOT = Path(__file__).resolve().parents[1]


def fake_project(tmp_path, body):
    """A project whose `prepare` notebook runs ``body`` (with the injected parameters)."""
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"prepare": {
        "cmd": "python -m videonarrator.stage prepare",
        "params": ["common", "prepare"],
        "outs": ["data/processed", "reports/01_prepare_data.ipynb"],
        "metrics": [{"reports/prepare.json": {"cache": False}}]}}}))
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("common = {}\nprepare = {}")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    (tmp_path / "notebooks").mkdir()
    nbformat.write(nb, tmp_path / "notebooks" / "01_prepare_data.ipynb")
    return tmp_path


@pytest.mark.slow
def test_parameters_come_from_params_yaml(tmp_path):
    root = fake_project(tmp_path, "import json, pathlib\n"
                                  "pathlib.Path('reports').mkdir(exist_ok=True)\n"
                                  "json.dump({'n': prepare['n_videos'], 'seed': common['data_seed']}, open('reports/prepare.json', 'w'))")
    out = stage.run_stage("prepare", root, log_output=False)
    assert out == root / "reports" / "01_prepare_data.ipynb" and out.is_file()
    import json
    params = yaml.safe_load((root / "params.yaml").read_text())
    assert json.loads((root / "reports/prepare.json").read_text()) == {
        "n": params["prepare"]["n_videos"], "seed": params["common"]["data_seed"]}


@pytest.mark.slow
def test_a_failing_notebook_removes_the_outputs_and_keeps_the_traceback(tmp_path):
    root = fake_project(tmp_path, "import pathlib\n"
                                  "pathlib.Path('data/processed').mkdir(parents=True)\n"
                                  "pathlib.Path('data/processed/half.json').write_text('{')\n"
                                  "raise RuntimeError('video syn0003 is broken')")
    with pytest.raises(stage.StageError, match=r"RuntimeError: video syn0003 is broken") as err:
        stage.run_stage("prepare", root, log_output=False)
    assert "01_prepare_data.failed.ipynb" in str(err.value)
    assert not (root / "data/processed").exists()
    assert not (root / "reports/01_prepare_data.ipynb").exists()
    failed = nbformat.read(root / "reports/01_prepare_data.failed.ipynb", as_version=4)
    assert "syn0003" in str(failed.cells[-1].outputs)


def test_bad_params_fail_before_anything_runs(tmp_path):
    root = fake_project(tmp_path, "raise AssertionError('must not run')")
    doc = yaml.safe_load((root / "params.yaml").read_text())
    doc["prepare"]["n_videos"] = "eighty"
    (root / "params.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ParamsError, match="prepare.n_videos"):
        stage.run_stage("prepare", root)
    assert stage.main(["prepare", "--root", str(root)]) == 1
    assert not (root / "reports").exists()


def test_stage_outputs_and_sections_come_from_dvc_yaml():
    outs = stage.stage_outputs("prepare", ROOT)
    assert ROOT / "data/processed" in outs and ROOT / "reports/prepare.json" in outs
    assert stage.stage_sections("train", ROOT) == ["common", "llm", "model", "train"]
    outs = stage.stage_outputs("train", ROOT, system="no_memory")   # a foreach stage, resolved
    assert ROOT / "models/no_memory" in outs and ROOT / "reports/train_no_memory.json" in outs
    assert stage.stage_sections("features", ROOT) == ["common", "features", "model"]   # keys -> whole sections


def test_real_data_stages_come_from_their_own_pipeline_file():
    assert stage.stage_sections("esyncvidstory_text", ROOT) == ["common", "llm", "model", "train", "evaluate",
                                                               "esyncvidstory"]
    outs = stage.stage_outputs("esyncvidstory_prepare", ROOT)
    assert ROOT / "esyncvidstory/data" in outs and ROOT / "reports/esyncvidstory/statistics.json" in outs
    with pytest.raises(stage.StageError, match="in none of dvc.yaml, esyncvidstory/dvc.yaml"):
        stage.stage_spec("nonexistent", ROOT)


def test_a_failed_stage_keeps_its_persistent_cache():
    """data/features is a persist: true cache of atomically written files: a failing features
    notebook must not throw away the videos already encoded."""
    all_outs = stage.stage_outputs("features", ROOT)
    removable = stage.stage_outputs("features", ROOT, persistent=False)
    assert ROOT / "data/features" in all_outs and ROOT / "data/features" not in removable
    assert ROOT / "reports/features.json" in removable


@pytest.mark.slow
def test_a_stage_logs_its_progress_bars_as_text(tmp_path, monkeypatch, caplog):
    # papermill's kernel shows no widgets: the bar must reach the log as it runs
    monkeypatch.delenv("VN_PROGRESS", raising=False)
    monkeypatch.setenv("VN_PROGRESS_INTERVAL", "0")
    root = fake_project(tmp_path, "from videonarrator.progress import progress_bar\n"
                                  "for _ in progress_bar(range(4), desc='counting clips'): pass")
    with caplog.at_level("INFO", logger="papermill"):
        stage.run_stage("prepare", root, log_output=True)
    assert "counting clips" in caplog.text and "4/4" in caplog.text

