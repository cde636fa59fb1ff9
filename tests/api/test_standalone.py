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
