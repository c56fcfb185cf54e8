"""dvc.yaml tells the truth: every stage depends on what it runs, and only on the params it reads."""
import json
import shutil
from pathlib import Path

import pytest
import yaml

from test_pipeline import make_project, run
from videonarrator.stage import STAGES, imported_files, stage_outputs

ROOT = Path(__file__).resolve().parents[1]


def notebook_stages(doc: dict):
    """(stage name, its spec) of every stage that runs a notebook (foreach stages: their template)."""
    for name, spec in doc["stages"].items():
        if name in STAGES:
            yield name, spec.get("do", spec)


def test_every_stage_depends_on_every_module_it_imports():
    doc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    checked = 0
    for name, spec in notebook_stages(doc):
        notebook = ROOT / "notebooks" / f"{STAGES[name]}.ipynb"
        deps = set(spec["deps"])
        needed = {str(p.relative_to(ROOT)) for p in imported_files(ROOT, ["videonarrator.stage"], notebook)}
        assert f"notebooks/{notebook.name}" in deps, name
        missing = sorted(needed - deps)
        assert not missing, f"dvc.yaml stage {name!r} imports {missing} but does not depend on them"
        stale = sorted(d for d in deps if d.startswith("src/") and d not in needed)
        assert not stale, f"dvc.yaml stage {name!r} depends on {stale}, which it does not import"
        checked += 1
    assert checked == 5
    llm_deps = set(doc["stages"]["base_llm"]["deps"])
    assert {str(p.relative_to(ROOT)) for p in imported_files(ROOT, ["videonarrator.llm"])} <= llm_deps


def test_import_closure_follows_lazy_and_relative_imports(tmp_path):
    pkg = tmp_path / "src/videonarrator"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "data/__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from .b import g\n    return g()\n")
    (pkg / "b.py").write_text("from .data import c\n")
    (pkg / "data/c.py").write_text("import json\nfrom ..d import x\n")
    (pkg / "d.py").write_text("x = 1\n")
    (pkg / "unused.py").write_text("")
    files = imported_files(tmp_path, ["videonarrator.a"])
    assert [str(p.relative_to(pkg)) for p in files] == ["__init__.py", "a.py", "b.py", "d.py",
                                                         "data/__init__.py", "data/c.py"]


def status(project: Path) -> dict:
    """`dvc status` of the default pipeline (esyncvidstory/dvc.yaml is another one)."""
    return json.loads(run(["dvc", "status", "--json", "dvc.yaml"], project, stdout_only=True) or "{}")


@pytest.fixture(scope="module")
def committed(tmp_path_factory, tiny_prepared):
    """A project copy whose dvc.lock records every stage as done: real prepared frames and
    features (tiny tower), placeholder files for the other outputs."""
    from videonarrator.config import Settings
    from videonarrator.features import extract_features

    project = make_project(tmp_path_factory.mktemp("dvc") / "p")
    processed, videos, _ = tiny_prepared
    shutil.copytree(processed, project / "data/processed")
    settings = Settings.load(project / "params.yaml")
    extract_features(videos, project / "data/processed", project / "data/features", settings.tower(), progress=False)
    targets = [(s, None) for s in ("prepare", "features", "base_llm", "evaluate", "visualize")]
    targets += [("train", system) for system in settings["systems"]["trained"]]
    for stage, system in targets:
        for path in stage_outputs(stage, project, system):
            if path.exists():
                continue
            if path.suffix:                                  # a file
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("placeholder\n")
            else:                                            # a folder
                path.mkdir(parents=True, exist_ok=True)
                (path / "placeholder.txt").write_text("placeholder\n")
    run(["dvc", "commit", "--force", "--quiet", "dvc.yaml"], project)
    assert status(project) == {}
    return project, videos, settings


@pytest.mark.slow
def test_esyncvidstory_params_leave_the_default_stages_up_to_date(committed):
    project, _, _ = committed
    params = yaml.safe_load((project / "params.yaml").read_text())
    original = (project / "params.yaml").read_text()
    params["esyncvidstory"].update(steps=7, batch_size=2, checkpoint_every=3, eval_every=3, attn_implementation="eager")
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        assert status(project) == {}
        params["model"]["lora_r"] = 4                          # a key train reads (features does not)
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        changed = set(status(project))
        assert {"train@videonarrator", "train@text_only", "evaluate", "visualize"} <= changed
        assert not changed & {"prepare", "features"}
    finally:
        (project / "params.yaml").write_text(original)


@pytest.mark.slow
def test_reencoding_unchanged_frames_leaves_downstream_up_to_date(committed):
    from videonarrator.features import extract_features

    project, videos, settings = committed
    for f in (project / "data/features").glob("*.safetensors"):
        f.unlink()
    s = extract_features(videos, project / "data/processed", project / "data/features", settings.tower(),
                         progress=False)
    assert s["encoded"] == len(videos)
    assert status(project) == {}


@pytest.mark.slow
@pytest.mark.parametrize("module, stages", [
    ("widgets/state.py", {"visualize"}),
    ("compression.py", {"prepare", "features", "train@videonarrator", "train@text_only", "evaluate", "visualize"}),
])
def test_editing_an_imported_module_marks_its_stages(committed, module, stages):
    project, _, _ = committed
    path = project / "src/videonarrator" / module
    original = path.read_text()
    path.write_text(original + "\n# an edit\n")
    try:
        assert set(status(project)) == stages
    finally:
        path.write_text(original)
