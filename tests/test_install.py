"""`pip install .` in an empty virtual environment gives a package whose every module imports.

Slow (minutes: pip resolves and installs torch and the rest from its index or cache); it checks
what the pins in requirements.txt cannot: that pyproject.toml's dependencies alone suffice.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

IMPORT_ALL = """
import importlib, pkgutil, videonarrator
names = [m.name for m in pkgutil.walk_packages(videonarrator.__path__, "videonarrator.")]
for name in names:
    importlib.import_module(name)
assert "site-packages" in videonarrator.__file__, videonarrator.__file__
print(len(names), "modules")
"""


@pytest.mark.slow
def test_pip_install_in_an_empty_venv_brings_every_runtime_dependency(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    # the outer environment's PYTHONPATH (a checkout's src/) would hide a broken install
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    # from a copy of what the package is built from: pip builds a local folder in place (build/)
    pkg = tmp_path / "pkg"
    shutil.copytree(ROOT / "src" / "videonarrator", pkg / "src" / "videonarrator",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, pkg / name)
    proc = subprocess.run([py, "-m", "pip", "install", "-q", str(pkg)], env=env, capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = subprocess.run([py, "-c", IMPORT_ALL], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "modules" in proc.stdout
    proc = subprocess.run([py, "-m", "pip", "check"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
