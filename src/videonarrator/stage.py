"""Run one DVC stage: execute its numbered notebook with papermill.

``python -m videonarrator.stage prepare`` validates ``params.yaml``, injects
the ``common`` section and the stage's own section as the notebook's
parameters, and keeps the executed notebook under ``reports/`` so a reader
sees every output.  On failure the executed notebook (with the traceback) is
kept as ``reports/<name>.failed.ipynb``, the stage's outputs are removed so
nothing half-written looks valid (a ``persist: true`` cache is kept: its files are
written one by one, atomically), and the exit status is non-zero.  Progress bars
of long work (training, narration) reach the ``dvc repro`` log as text lines
(``VN_PROGRESS=text``, see :mod:`videonarrator.progress`).
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import sys
from pathlib import Path

import yaml

from .io import atomic_path
from .params import ParamsError, load_params

# stage name -> notebook name (notebooks/<name>.ipynb, executed copy reports/<name>.ipynb;
# a stage run for one system writes reports/<name>_<system>.ipynb)
STAGES: dict[str, str] = {
    "prepare": "01_prepare_data",
    "features": "02_features",
    "train": "03_train",             # a foreach stage: train@<system> for each of systems.trained
    "evaluate": "04_evaluate",
    "visualize": "05_visualize",
    "esyncvidstory_prepare": "06_esyncvidstory_data",
    "esyncvidstory_text": "07_esyncvidstory_text",
}

# The pipeline files that hold the stages: the default pipeline and the real-data profile's.
PIPELINES = ("dvc.yaml", "esyncvidstory/dvc.yaml")

# What the notebook's kernel inherits: nothing loads from a hub, and progress bars are log lines
# (nobody sees the kernel's widgets; see progress.py).
KERNEL_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
              "VN_PROGRESS": "text"}


class StageError(RuntimeError):
    """A stage could not run or its notebook failed; the message says where to look."""


def stage_spec(stage: str, root: Path, system: str | None = None) -> dict:
    """The stage's entry in its pipeline file; for a ``foreach`` stage, resolved for ``system``."""
    for pipeline in PIPELINES:
        path = root / pipeline
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else {}
        if stage in doc.get("stages", {}):
            spec = doc["stages"][stage]
            break
    else:
        raise StageError(f"stage {stage!r} is in none of {', '.join(PIPELINES)}")
    if "do" in spec:  # foreach stage: substitute ${item}
        text = yaml.safe_dump(spec["do"]).replace("${item}", system or "")
        spec = yaml.safe_load(text)
    return spec


def stage_sections(stage: str, root: Path) -> list[str]:
    """The params.yaml sections a stage declares in dvc.yaml, by section or by key (its notebook
    gets exactly these sections, whole)."""
    entries = [p if isinstance(p, str) else next(iter(p)) for p in stage_spec(stage, root).get("params", [])]
    return list(dict.fromkeys(e.split(".")[0] for e in entries))


def stage_outputs(stage: str, root: Path, system: str | None = None, persistent: bool = True) -> list[Path]:
    """The paths dvc.yaml declares as the stage's outs, metrics and plots.

    ``persistent=False`` leaves out ``persist: true`` outs (caches such as
    data/features, whose files are each written atomically and stay valid).
    """
    spec = stage_spec(stage, root, system)
    paths = []
    for kind in ("outs", "metrics", "plots"):
        for entry in spec.get(kind, []):
            name, opts = next(iter(entry.items())) if isinstance(entry, dict) else (entry, None)
            if persistent or not (opts or {}).get("persist"):
                paths.append(root / name)
    return paths


def _module_file(src: Path, module: str) -> Path | None:
    base = src.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imports(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """The videonarrator modules one parsed file imports (every import statement, also inside
    functions: a lazy import runs too when its function does)."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import module`
    return {m for m in found if m.split(".")[0] == "videonarrator"}


def imported_files(root: Path, modules: list[str] = (), notebook: Path | None = None) -> list[Path]:
    """The package's source files that ``modules`` and the code cells of ``notebook`` import,
    directly or through each other (package ``__init__`` files included): what a DVC stage running
    them must depend on.  Static: parsed, never imported."""
    src = root / "src"
    todo = set(modules)
    if notebook is not None:
        for cell in json.loads(notebook.read_text(encoding="utf-8"))["cells"]:
            if cell["cell_type"] == "code":   # IPython magics and shell lines are not Python
                lines = [l for l in "".join(cell["source"]).splitlines() if not l.lstrip().startswith(("%", "!"))]
                todo |= _imports(ast.parse("\n".join(lines)), "", True)
    seen: dict[str, Path] = {}
    while todo:
        module = todo.pop()
        parts = module.split(".")
        for k in range(1, len(parts) + 1):          # a module runs its packages' __init__ first
            name = ".".join(parts[:k])
            path = _module_file(src, name)
            if path is None or name in seen:
                continue
            seen[name] = path
            todo |= _imports(ast.parse(path.read_text(encoding="utf-8")), name, path.name == "__init__.py")
    return sorted(seen.values())


def remove_outputs(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def _source_digest(package: Path) -> str:
    import hashlib
    h = hashlib.sha256()
    for f in sorted(package.rglob("*.py")):
        h.update(str(f.relative_to(package)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def check_package_source(root: Path) -> None:
    """Stop when the imported package's code is not this project's ``src/videonarrator`` (e.g. a
    virtual environment shared by two checkouts points at the other one): the stage would run
    that code, not this project's.  An identical copy (the pipeline tests' project copies) is fine."""
    import videonarrator
    here, ours = Path(videonarrator.__file__).resolve().parent, (root / "src" / "videonarrator").resolve()
    if ours.is_dir() and here != ours and _source_digest(here) != _source_digest(ours):
        raise StageError(f"the videonarrator package is imported from {here}, whose code differs from this "
                         f"project's {ours}; run `scripts/vn setup` here (it reinstalls the package for this "
                         f"checkout) or `pip install --no-deps -e {root}`")


def run_stage(stage: str, root: str | Path = ".", log_output: bool = True, system: str | None = None) -> Path:
    """Execute the stage's notebook; return the executed notebook's path.

    ``system`` (for per-system stages such as ``train``) is passed to the
    notebook as the ``system`` parameter.
    """
    import papermill as pm

    root = Path(root).resolve()
    if stage not in STAGES:
        raise StageError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    check_package_source(root)
    params = load_params(root / "params.yaml")
    parameters = {section: params[section] for section in stage_sections(stage, root)}
    if system is not None:
        parameters["system"] = system
    name = STAGES[stage]
    source = root / "notebooks" / f"{name}.ipynb"
    executed = root / "reports" / (f"{name}_{system}.ipynb" if system else f"{name}.ipynb")
    failed = executed.with_suffix(".failed.ipynb")
    if not source.exists():
        raise StageError(f"notebook {source} is missing")
    for key, value in KERNEL_ENV.items():
        os.environ.setdefault(key, value)
    failed.unlink(missing_ok=True)
    with atomic_path(executed) as tmp:
        try:
            pm.execute_notebook(str(source), str(tmp), parameters=parameters, cwd=str(root),
                                kernel_name="python3", log_output=log_output, progress_bar=True)
        except pm.PapermillExecutionError as err:
            if tmp.exists():
                shutil.copyfile(tmp, failed)
            remove_outputs([p for p in stage_outputs(stage, root, system, persistent=False) if p != executed])
            raise StageError(
                f"stage {stage!r} failed in {source.name} (cell {err.exec_count}): {err.ename}: {err.evalue}\n"
                f"The executed notebook with the full traceback is {failed}; "
                f"the stage's outputs were removed so no half-written result remains.") from None
    return executed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a VideoNarrator DVC stage (its notebook, via papermill).")
    parser.add_argument("stage", choices=sorted(STAGES))
    parser.add_argument("--root", default=".", help="project root (where params.yaml and dvc.yaml are)")
    parser.add_argument("--quiet", action="store_true", help="do not stream the notebook's output")
    parser.add_argument("--system", help="for per-system stages (train): which system, e.g. text_only")
    args = parser.parse_args(argv)
    try:
        out = run_stage(args.stage, args.root, log_output=not args.quiet, system=args.system)
    except (StageError, ParamsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"stage {args.stage}: executed notebook written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
