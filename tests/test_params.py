import copy
from pathlib import Path

import nbformat
import pytest
import yaml

from videonarrator.params import ParamsError, config_from, load_params, validate_section
from videonarrator.prepare import PrepareConfig
from videonarrator.stage import STAGES

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def params():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def write(tmp_path, doc):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_the_shipped_params_are_valid():
    load_params(ROOT / "params.yaml")


@pytest.mark.parametrize("key, value, message", [
    ("n_videos", "many", r"prepare.n_videos must be an integer >= 3 .*, got 'many' \(str\)"),
    ("n_videos", True, r"prepare.n_videos must be .* got True \(bool\)"),
    ("n_videos", 2, "prepare.n_videos must be an integer >= 3"),
    ("n_videos", 10.0, r"got 10.0 \(float\)"),
    ("fps", 0, r"prepare.fps must be an integer in \[5, 60\]"),
    ("test_fraction", 1.5, r"prepare.test_fraction must be a number in \[0, 1\)"),
    ("shot_threshold", "12", "prepare.shot_threshold must be a number > 0"),
])
def test_wrong_values_name_the_key(tmp_path, params, key, value, message):
    params["prepare"][key] = value
    with pytest.raises(ParamsError, match=message):
        load_params(write(tmp_path, params))


def test_missing_unknown_and_inconsistent_keys(tmp_path, params):
    p = copy.deepcopy(params)
    del p["prepare"]["fps"]
    with pytest.raises(ParamsError, match="missing key prepare.fps"):
        load_params(write(tmp_path, p))
    p = copy.deepcopy(params)
    p["prepare"]["n_vidoes"] = 3
    with pytest.raises(ParamsError, match="unknown key prepare.n_vidoes"):
        load_params(write(tmp_path, p))
    p = copy.deepcopy(params)
    p["prepare"].update(min_clips=6, max_clips=4)
    with pytest.raises(ParamsError, match="min_clips must be <= prepare.max_clips"):
        load_params(write(tmp_path, p))
    p = copy.deepcopy(params)
    del p["common"]
    with pytest.raises(ParamsError, match="missing section 'common'"):
        load_params(write(tmp_path, p))
    (tmp_path / "params.yaml").write_text("prepare: [unclosed")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(tmp_path / "params.yaml")


def test_config_from_picks_the_declared_fields(params):
    cfg = config_from(PrepareConfig, params["prepare"])
    assert cfg.shot_threshold == params["prepare"]["shot_threshold"]
    with pytest.raises(ParamsError, match="unknown section 'nonsense'"):
        validate_section("nonsense", {})


def notebook_defaults(name):
    """Execute a notebook's `parameters` cell alone and return what it defines."""
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{name} needs exactly one cell tagged 'parameters'"
    scope = {}
    exec(cells[0].source, scope)
    return scope


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_notebook_defaults_equal_params_yaml(stage, params):
    """A student running a notebook by hand gets the same defaults as `dvc repro`."""
    defaults = notebook_defaults(STAGES[stage])
    assert defaults["common"] == params["common"]
    assert defaults[stage] == params[stage]
