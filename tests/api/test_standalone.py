"""The repository stands alone: nothing reads files beside the checkout.

The spec lives in docs/numerics.md and the golden vectors in tests/data; code, tests,
benchmarks and CI must not reach outside the repository for either. Mutation tried: a
GOLDEN_PATH pointing at the former sibling directory makes
``test_nothing_reads_beside_the_checkout`` fail.
"""

import hashlib
import os
import re
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
SKIP_DIRS = {".git", ".venv", "build", "dist", "__pycache__", ".pytest_cache",
             ".hypothesis", "lowprec-demo", "lowprec-bench"}
# A path into a directory beside the checkout, written as a string or joined parts.
# Built from pieces so that this file does not match itself.
SIBLING = re.compile(r"\.\./" + "shared" + r"|[\"']" + "shared" + r"[\"']\s*,\s*[\"']golden")


def _text_files():
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        for name in filenames:
            if name.endswith((".py", ".sh", ".md", ".toml", ".cfg", ".in", ".txt")) \
                    or name == "run":
                yield Path(dirpath) / name


def test_nothing_reads_beside_the_checkout():
    offenders = []
    for path in _text_files():
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if SIBLING.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "files that point outside the repository:\n" + "\n".join(offenders)


def test_golden_vectors_are_the_in_tree_file_its_readme_describes(golden):
    path = ROOT / "tests" / "data" / "nvfp4_public_v1.pt"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest in (ROOT / "tests" / "data" / "README.md").read_text()
    on_disk = torch.load(path)
    assert sorted(golden["cases"]) == sorted(on_disk["cases"])
    for name, entry in on_disk["cases"].items():
        for key, value in entry.items():
            assert torch.equal(golden["cases"][name][key], value), (name, key)


def test_spec_is_in_the_repository_with_the_cited_sections():
    """Code cites "NUMERICS n" for n in 1..10; each section must exist in docs/numerics.md."""
    text = (ROOT / "docs" / "numerics.md").read_text()
    for n in range(1, 11):
        assert re.search(rf"^## {n}\. ", text, re.MULTILINE), f"section {n} missing"


def _readme_block(marker):
    """The fenced block after ``<!-- ci: marker -->`` in README.md, read here in Python."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = lines.index(f"<!-- ci: {marker} -->") + 1
    assert lines[start].startswith("```")
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("```"))
    return "\n".join(lines[start + 1:end])


def test_ci_runs_the_readme_install_and_test_blocks():
    """.ci/run extracts the README's blocks with its own shell function; both readings
    must agree, and the blocks must install the test dependencies and run pytest."""
    import subprocess
    script = (ROOT / ".ci" / "run").read_text()
    function = script[script.index("readme_block() {"):]
    function = function[:function.index("\n}\n") + 3]
    for marker in ("install", "test"):
        done = subprocess.run(["bash", "-c", f"{function}\nreadme_block {marker}"], cwd=ROOT,
                              capture_output=True, text=True, check=True)
        assert done.stdout.rstrip("\n") == _readme_block(marker)
    assert "pip install --no-build-isolation -e '.[dev]'" in _readme_block("install")
    assert "torch==2.13.0" in _readme_block("install")
    assert _readme_block("test").split("#")[0].strip() == "python -m pytest"
    commands = [line for line in script.splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in commands if "--system-site-packages" in line]


# Import name -> distribution name, where they differ.
DISTRIBUTIONS = {"pynvml": "nvidia-ml-py"}


def test_dev_extra_brings_every_third_party_test_import():
    import sys
    import tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=!~ \[]", d)[0].lower()
             for d in project["dependencies"] + project["optional-dependencies"]["dev"]}
    local = {"lowprec", "tests", "conftest", "csrc_helpers", "tinygpt", "dist_worker"}
    imported = set()
    for path in (ROOT / "tests").rglob("*.py"):
        for match in re.finditer(r"^\s*(?:import|from)\s+([A-Za-z_]\w*)|importorskip\(\"(\w+)",
                                 path.read_text(), re.MULTILINE):
            imported.add(match[1] or match[2])
    third_party = {m for m in imported - local if m not in sys.stdlib_module_names}
    missing = {m for m in third_party if DISTRIBUTIONS.get(m, m).lower() not in names}
    assert not missing, f"test imports without a dependency or [dev] extra: {missing}"
