"""requirements.txt (pip) and environment.yml (conda) must pin the same packages."""
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def pins(lines):
    return {l.split("#")[0].strip().lower().replace("_", "-") for l in lines if l.split("#")[0].strip()}


def test_environment_yml_matches_requirements():
    pip_pins = pins((ROOT / "requirements.txt").read_text().splitlines())
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pins(pip_section) == pip_pins
    assert "python=3.11" in env["dependencies"]


def test_every_requirement_is_pinned():
    for path in ("requirements.txt", "requirements-weights.txt"):
        for pin in pins((ROOT / path).read_text().splitlines()):
            assert "==" in pin, f"{path}: {pin} is not pinned"
