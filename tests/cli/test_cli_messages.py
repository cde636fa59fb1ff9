"""What the command says (issue 19, "Mistakes that are silent today"; issue 22's plan
path): the help's high-precision wording, the demo's backend on its first line and
the batch counts of its validation figures, ``lowprec bench`` on a CPU, ``lowprec plan
--json`` to a path that cannot be written, and library messages through ``logging``.

Each test failed on the code before the fix (run there).
"""

import importlib.util
import io
import json
import logging
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import lowprec
from lowprec import cli, device
from lowprec.cli import bench as bench_command
from lowprec.demo import train

NO_GPU = {"gpu": None, "notes": ["no GPU: no CUDA device is visible"], "python": "3",
          "torch": "t", "torch_cuda": None, "platform": "p", "cpu_count": 2}


def test_help_says_the_high_precision_run_is_fp32_on_a_cpu():
    text = " ".join(cli.build_parser().format_help().split())
    assert "FP32 on a CPU" in text and "BF16 autocast on a GPU" in text
    assert "in BF16, the NVFP4 recipe" not in text       # the old, untrue wording


# -- demo ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def quick_demo_output(tmp_path_factory):
    """``lowprec demo --quick`` with its progress lines (on stderr, as in a log)."""
    capture = pytest.MonkeyPatch()
    out, err = io.StringIO(), io.StringIO()
    capture.setattr(sys, "stdout", out)
    capture.setattr(sys, "stderr", err)
    try:
        status = cli.main(["demo", "--quick", "--out", str(tmp_path_factory.mktemp("d"))])
    finally:
        capture.undo()
    return status, out.getvalue(), err.getvalue()


def test_demo_names_its_backend_on_the_first_line(quick_demo_output):
    status, out, _ = quick_demo_output
    assert status == 0
    backend = train.auto_backend(torch.device("cpu"))
    first = out.splitlines()[0]
    last = next(line for line in out.splitlines() if line.startswith("total "))
    assert first.startswith("lowprec demo: ") and f"quantization backend {backend}" in first
    assert f"quantization backend {backend}" in last           # as before, at the end too


def test_demo_says_how_many_batches_each_validation_figure_is_on(quick_demo_output):
    _, out, err = quick_demo_output
    _, cfg = train.PRESETS["quick"]
    progress = [line for line in err.splitlines() if "val@" in line]
    assert progress and all(f"on {cfg.eval_batches} batches" in line for line in progress)
    assert (f"final val loss on {cfg.final_eval_batches} batches of the held-out last 10%, "
            f"where the progress lines' val is on {cfg.eval_batches}") in out


def test_the_first_line_says_why_the_preferred_backend_is_not_used(monkeypatch):
    monkeypatch.setattr(train, "auto_backend", lambda device: "reference")
    monkeypatch.setattr(lowprec, "available", lambda **kw: {
        "cpu": "the compiled extension failed to build: no compiler", "reference": None})
    assert cli.demo.backend_words("cpu") == ("quantization backend reference (cpu unavailable: "
                                         "the compiled extension failed to build: no "
                                         "compiler)")


# -- bench on a CPU --------------------------------------------------------------------

RECORDING_MODULE = textwrap.dedent("""
    import json, os, pathlib, sys
    name = __spec__.name.rpartition(".")[2]
    record = {"schema": "lowprec-bench/1", "script": name, "rows": [dict(
        name=name + " " + " ".join(sys.argv[1:]), impl="cpu", shape="s", time_ms=1.5,
        throughput=None, unit=None, baseline=None, of_baseline=None)]}
    out = pathlib.Path(os.environ["LOWPREC_BENCH_RESULTS"]) / (name + ".json")
    out.write_text(json.dumps(record))
    print("measured", name)
""")


@pytest.fixture
def stand_in_bench(stand_in_benchmarks):
    """The CPU benchmarks recording what they were asked, plus a GPU benchmark that must
    not run on a CPU (it would write a record if it did)."""
    def make(broken=()):
        sources = {name: "raise SystemExit('boom')\n" if name in broken else
                   RECORDING_MODULE for name in bench_command.CPU_BENCHMARKS}
        return stand_in_benchmarks(dict(sources, bench_amax=RECORDING_MODULE))
    return make


def test_bench_without_a_gpu_runs_the_cpu_benchmarks_with_short_settings(
        tmp_path, capsys, monkeypatch, stand_in_bench):
    monkeypatch.setattr(device, "facts", lambda: NO_GPU)
    stand_in_bench()
    out = tmp_path / "out"
    assert cli.main(["bench", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "no GPU (no CUDA device is visible): running the 3 CPU benchmarks" in text
    summary = json.loads((out / "bench.json").read_text())
    ran = sorted(row["kernel"] for row in summary["rows"])
    assert ran == sorted(f"{name} {' '.join(args)} [cpu]"
                         for name, args in bench_command.CPU_BENCHMARKS.items())
    assert not (out / "bench_amax.json").exists()
    assert "measured bench_grouped_linear" in text           # each module's own last line
    assert summary["failed"] == []


def test_bench_without_a_gpu_reports_a_failed_cpu_benchmark(tmp_path, capsys, monkeypatch,
                                                            stand_in_bench):
    monkeypatch.setattr(device, "facts", lambda: NO_GPU)
    stand_in_bench(broken=("bench_cpu_quantize_memory",))
    out = tmp_path / "out"
    assert cli.main(["bench", "--out", str(out)]) == 1
    assert json.loads((out / "bench.json").read_text())["failed"] == [
        "bench_cpu_quantize_memory"]
    assert "FAILED" in capsys.readouterr().out


def test_the_real_cpu_benchmarks_exist_and_take_the_short_options():
    """The names and options in CPU_BENCHMARKS are those of lowprec.bench's modules (a
    renamed module or option would make ``lowprec bench`` fail on every CPU)."""
    for name, args in bench_command.CPU_BENCHMARKS.items():
        spec = importlib.util.find_spec(f"lowprec.bench.{name}")
        assert spec is not None, name
        text = Path(spec.origin).read_text()
        for option in args[::2]:
            assert f'"{option}"' in text, (name, option)


# -- plan --json to a path that cannot be written ----------------------------------------

@pytest.mark.parametrize("where, says", [
    ("missing/p.json", "does not exist"),
    (".", "is a directory"),
])
def test_plan_checks_its_json_path_before_planning(tmp_path, capsys, where, says):
    path = tmp_path / where
    assert cli.main(["plan", "--quick", "--json", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""                                     # nothing planned, nothing printed
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"lowprec plan: error: --json {path}: ") and says in err


# -- logging ---------------------------------------------------------------------------

def test_demo_messages_go_to_the_lowprec_logger_not_stdout(caplog, capsys):
    with caplog.at_level(logging.INFO, logger="lowprec"):
        train.run_demo("quick", progress=False, configs=("planned",))
    assert capsys.readouterr().out == ""
    records = [r for r in caplog.records if "planning at budget" in r.getMessage()]
    assert [r.name for r in records] == ["lowprec.demo.train"]
