"""The README's install commands pin what the tests run with (constraints.txt).

An unpinned ``[dev]`` let transformers bring in a package named ``kernels`` the suite had
never met, on users' machines first: CI's environment drifted with the day's releases.
"""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _name(requirement):
    return re.split(r"[<>=!;\[\s]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _readme_block(marker):
    text = (ROOT / "README.md").read_text()
    block = text.split(f"<!-- ci: {marker} -->", 1)[1].split("```", 2)[1]
    return [line for line in block.splitlines()[1:] if line.strip()]


def _constraints():
    pinned = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement, _, marker = line.partition(";")
            name, _, version = requirement.partition("==")
            assert version, f"constraints.txt pins exact versions; got {line!r}"
            pinned.setdefault(_name(name), []).append(marker.strip())
    return pinned


def test_every_pip_install_of_the_readme_uses_the_constraints():
    installs = [line for line in _readme_block("install") if "pip install" in line]
    assert installs
    for line in installs:
        assert "-c constraints.txt" in line.split("#")[0], line


def test_every_dependency_and_test_dependency_is_pinned():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["dev"]
    pinned = _constraints()
    missing = sorted({_name(r) for r in wanted} - {"torch"} - set(pinned))
    assert not missing, f"not pinned in constraints.txt: {missing}"


def test_a_package_pinned_per_python_version_covers_every_version():
    """Two pins of one package must be split by python_version, both sides."""
    for name, markers in _constraints().items():
        if len(markers) > 1:
            assert sorted(markers) == ['python_version < "3.12"',
                                       'python_version >= "3.12"'], (name, markers)
