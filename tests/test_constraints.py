"""constraints.txt pins the versions behind the README's numbers: it must pin every direct
dependency of setup.py (core and extras) to a version that setup.py accepts."""
from __future__ import annotations

import ast
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _setup_requirements() -> list[Requirement]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "install_requires":
            found += ast.literal_eval(node.value)
        if isinstance(node, ast.keyword) and node.arg == "extras_require":
            for names in ast.literal_eval(node.value).values():
                found += names
    assert found, "setup.py declares no requirements"
    return [Requirement(text) for text in found]


def _pins() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for number, line in enumerate((ROOT / "constraints.txt").read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        assert sep, f"constraints.txt line {number}: {line!r} is not NAME==VERSION"
        pins[canonicalize_name(name)] = Version(version)
    return pins


def test_constraints_pin_every_dependency_within_setup_ranges() -> None:
    pins = _pins()
    for requirement in _setup_requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"constraints.txt does not pin {requirement.name} (setup.py asks for {requirement})"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {name}=={pins[name]}, outside setup.py's {requirement.specifier}")


def test_constraints_pin_the_torch_that_the_readme_installs() -> None:
    readme = (ROOT / "README.md").read_text()
    assert f"torch=={_pins()['torch']}" in readme
