"""Stand-in benchmarks for ``lowprec bench``: a package of small modules in a temporary
folder, run by the command exactly as it runs ``lowprec.bench`` (``python -m``)."""

import os

import pytest

from lowprec.cli import bench as bench_command

STAND_IN = "standin_bench"        # the stand-in package's name


@pytest.fixture
def stand_in_benchmarks(tmp_path, monkeypatch):
    """``make({module: source})``: writes the modules into a package on the subprocesses'
    PYTHONPATH and makes ``lowprec bench`` run them instead of ``lowprec.bench``'s."""
    def make(sources):
        package = tmp_path / "site" / STAND_IN
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("")
        for name, source in sources.items():
            (package / f"{name}.py").write_text(source)
        site = str(tmp_path / "site")
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
            [site, *filter(None, [os.environ.get("PYTHONPATH")])]))
        modules = sorted(f"{STAND_IN}.{name}" for name in sources)
        monkeypatch.setattr(bench_command, "benchmarks", lambda: modules)
        return modules
    return make
