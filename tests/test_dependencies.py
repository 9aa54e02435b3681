"""What installing audioguide pulls in is what it runs on: every runtime dependency in
pyproject.toml is imported by the package, and a render runs where the tests' own references
(scipy) cannot be imported at all."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import audioguide

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(audioguide.__file__).resolve().parent


def imported_top_levels() -> set[str]:
    """The top-level names every module of the package imports, anywhere in it (a function's
    own imports too: most heavy ones are made only where they are needed)."""
    names: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def runtime_requirements() -> list[Requirement]:
    """pyproject.toml's dependencies that apply to this Python and platform."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = [Requirement(text) for text in project["dependencies"]]
    return [r for r in requirements if r.marker is None or r.marker.evaluate()]


# Declared for another dependency's sake, which needs it and does not say so.
FOR_ANOTHER = {"audioop-lts": "pydub imports audioop, which Python 3.13 no longer ships"}


def test_every_runtime_dependency_is_one_the_package_imports():
    # A dependency nothing imports only makes the install larger and slower (scipy was 143 MB
    # installed after the package stopped importing it).
    provides: dict[str, set[str]] = {}
    for module, distributions in importlib.metadata.packages_distributions().items():
        for distribution in distributions:
            provides.setdefault(canonicalize_name(distribution), set()).add(module)
    imported = imported_top_levels()
    unused = [
        str(requirement)
        for requirement in runtime_requirements()
        if requirement.name not in FOR_ANOTHER
        and not provides.get(canonicalize_name(requirement.name), set()) & imported
    ]
    assert unused == [], f"declared in pyproject.toml but never imported: {unused}"


def test_no_module_of_the_package_imports_scipy():
    # scipy is the tests' reference for the numpy filters, not a dependency.
    assert "scipy" not in imported_top_levels()


# Found ahead of the installed scipy by every Python process of a render (PYTHONPATH is
# inherited by espeak-ng's worker), and failing as an uninstalled package does.
NO_SCIPY = "raise ImportError('scipy is not installed')\n"


@pytest.mark.parametrize(
    "command",
    [
        ["render", "back-pain-quick", "-o", "out", "-q"],
        # Every synthesized sound: the noise breath, a bed, the interval chime.
        ["render", "back-pain-quick", "-o", "out", "-q", "--breath-sound", "noise"],
        ["render", "back-pain-quick", "-o", "out", "-q", "--ambient", "drone", "--seed", "3"],
        ["plan", "back-pain-quick"],
        ["list"],
    ],
    ids=["render", "noise breath", "bed", "plan", "list"],
)
def test_renders_and_plans_run_without_scipy(tmp_path, command):
    blocked = tmp_path / "blocked"
    (blocked / "scipy").mkdir(parents=True)
    (blocked / "scipy" / "__init__.py").write_text(NO_SCIPY, encoding="utf-8")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(blocked), os.environ.get("PYTHONPATH")])),
        "AUDIOGUIDE_VOICE": "gmw/en-us",
        "AUDIOGUIDE_CACHE_DIR": str(tmp_path / "cache"),  # empty: every cue synthesized
    }
    check = subprocess.run(
        [sys.executable, "-c", "import scipy"], env=env, capture_output=True, text=True
    )
    assert "scipy is not installed" in check.stderr  # the block holds
    proc = subprocess.run(
        [sys.executable, "-m", "audioguide", *command],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    if command[0] == "render":
        assert len(list((tmp_path / "out" / "back-pain-quick").glob("*.mp3"))) >= 2
