"""Rewrite the package-file deps of every notebook stage in the pipeline files from its imports.

    python scripts/sync_dvc_deps.py          # after adding an import to a notebook or a module

Each stage keeps its other deps (notebook, data, models) in place; its ``src/`` lines become
exactly the files :func:`videonarrator.stage.imported_files` finds, the list that
tests/test_dvc.py checks.  Only the ``src/`` lines are touched, so comments survive.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from videonarrator.stage import PIPELINES, STAGES, imported_files  # noqa: E402


def stage_files(name: str) -> list[str]:
    notebook = ROOT / "notebooks" / f"{STAGES[name]}.ipynb"
    return [str(p.relative_to(ROOT)) for p in imported_files(ROOT, ["videonarrator.stage"], notebook)]


def sync(pipeline: Path) -> bool:
    text = pipeline.read_text(encoding="utf-8")
    stages = yaml.safe_load(text)["stages"]
    lines, out, current = text.splitlines(keepends=True), [], None
    for line in lines:
        m = re.match(r"^  (\w+):\s*$", line)
        if m:
            current = m.group(1)
        dep = re.match(r"^(\s+)- src/videonarrator/\S+\s*$", line)
        if dep and current in STAGES and current in stages:
            indent = dep.group(1)
            if out and out[-1].startswith(f"{indent}- src/"):
                continue                               # the stage's block is written at its first src line
            out.extend(f"{indent}- {f}\n" for f in stage_files(current))
            continue
        out.append(line)
    new = "".join(out)
    if new != text:
        pipeline.write_text(new, encoding="utf-8")
    return new != text


if __name__ == "__main__":
    for name in PIPELINES:
        print(f"{name}: {'updated' if sync(ROOT / name) else 'up to date'}")
