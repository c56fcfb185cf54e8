import copy
from pathlib import Path

import nbformat
import pytest
import yaml

from videonarrator.params import ParamsError, config_from, load_params, validate_section
from videonarrator.prepare import PrepareConfig
from videonarrator.stage import STAGES, stage_sections

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
    sections = stage_sections(stage, ROOT)
    assert "common" in sections
    for section in sections:
        assert defaults[section] == params[section], f"{STAGES[stage]}: {section} differs from params.yaml"


def test_paper_profile_validates_and_builds_without_weights():
    """The paper profile is one switch away: its params are valid and its model config
    instantiates (on the meta device: no weights, nothing downloaded)."""
    import torch
    from dataclasses import replace

    from videonarrator.config import Settings
    from videonarrator.model import VisualEncoder

    settings = Settings.load(ROOT / "profiles/paper.yaml")
    cfg, lora = settings.model(vision_shape=(256, 1024)), settings.lora()   # ViT-L/14 @224: 16x16 patches, CLS excluded
    assert (cfg.num_query_tokens, cfg.qformer_hidden, cfg.qformer_layers) == (32, 768, 12)
    assert (lora.r, lora.alpha, lora.dropout, lora.target_modules) == (64, 16, 0.05, "all-linear")
    assert settings.tau() == 0.9 and settings.tower().name == "ViT-L-14"
    with torch.device("meta"):
        enc = VisualEncoder(replace(cfg, llm_dim=4096))
    qf = enc.qformer.config
    assert (qf.hidden_size, qf.num_hidden_layers, qf.encoder_hidden_size) == (768, 12, 1024)
    assert enc.query_tokens.shape == (1, 32, 768) and enc.projector.weight.shape == (4096, 768)
    assert enc.clip_pos.weight.shape == (100, 768) and enc.patch_pos is None
    assert 90e6 < sum(p.numel() for p in enc.parameters()) < 120e6   # BLIP-2's query-side Q-Former ~ 105M


def test_settings_build_every_config_from_params():
    """Each config takes its values from params.yaml (the one source), and the systems differ
    from the full model only where systems.SYSTEMS says."""
    from videonarrator.config import Settings

    params = load_params(ROOT / "params.yaml")
    s = Settings(params)
    assert s.train().steps == params["train"]["steps"] and s.train().seed == params["train"]["seed"]
    assert s.generation().temperature == params["evaluate"]["temperature"]
    assert s.generation().seed == params["train"]["seed"]                       # decoding samples: training's seed
    assert s.synthetic().seed == s.tower().seed == params["common"]["data_seed"]   # the dataset's seed
    assert s.generation(mode="generated").mode == "generated"
    assert s.prepare().shot_threshold == params["prepare"]["shot_threshold"]
    assert s.synthetic().n_videos == params["prepare"]["n_videos"]
    assert s.lora().dropout == params["model"]["lora_dropout"]
    assert s.tower().name == params["features"]["tower"]
    assert s.tau("no_compression") > 1 and s.tau() == params["model"]["tau"]
    assert not s.model("text_only").use_video and not s.model("no_memory", vision_shape=(4, 8)).use_memory
    with pytest.raises(ValueError, match="vision_shape"):
        s.model("videonarrator")
    with pytest.raises(ValueError, match="unknown system"):
        s.model("nope")
    with pytest.raises(ParamsError, match="'evaluate' was not given"):
        Settings.of(common=params["common"]).generation()


def test_no_config_repeats_a_params_default():
    """params.yaml is the one source of every default: a config field that a params key sets has
    no default of its own (config.Settings fills it), so the two can never drift apart."""
    from dataclasses import MISSING, fields

    from videonarrator.features import TowerConfig
    from videonarrator.generate import GenerationConfig
    from videonarrator.llm import LoraSettings
    from videonarrator.model import VideoNarratorConfig
    from videonarrator.train import TrainConfig

    params = load_params(ROOT / "params.yaml")
    lora_keys = {k[len("lora_"):] for k in params["model"] if k.startswith("lora_")} | {"target_modules"}
    owners = {TowerConfig: set(params["features"]) | {"name", "seed"}, PrepareConfig: set(params["prepare"]),
              TrainConfig: set(params["train"]) | {"seed"}, GenerationConfig: set(params["evaluate"]) | {"seed"},
              LoraSettings: lora_keys, VideoNarratorConfig: set(params["model"])}
    for cls, keys in owners.items():
        for f in fields(cls):
            if f.name in keys:
                assert f.default is MISSING and f.default_factory is MISSING, \
                    f"{cls.__name__}.{f.name} has a default of its own; params.yaml is the one source"
