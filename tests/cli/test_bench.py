"""`lowprec bench`: the benchmarks it finds (the modules of the package lowprec.bench, so
it runs the same from a wheel), the no-GPU path, the table it builds from the records,
and runs with a faked GPU over stand-in benchmark modules (tests/cli/conftest.py)."""

import importlib.util
import json
import os
import textwrap
from pathlib import Path

import pytest

import lowprec.bench
from lowprec import cli, device
from lowprec.bench import common
from lowprec.cli import bench as bench_command

FAKE_GPU = {"python": "3", "torch": "t", "torch_cuda": "12.8", "platform": "p",
            "cpu_count": 1, "gpu": {"index": 0, "name": "Fake GPU"}, "notes": []}


def test_the_benchmarks_are_modules_of_the_installed_package(capsys):
    """What `lowprec bench` runs is found through the package lowprec.bench (importable
    modules run with ``python -m``), not through a folder of the source checkout: it is
    the same list from a wheel. Mutation tried: ``benchmarks()`` globbing
    ``bench/bench_*.py`` beside the package, as the command did before, fails it."""
    modules = bench_command.benchmarks()
    names = [m.rpartition(".")[2] for m in modules]
    assert modules and all(m.startswith("lowprec.bench.bench_") for m in modules), modules
    assert {"bench_train_step_cpu", "bench_nvfp4_gemm", "bench_launches"} <= set(names)
    assert set(bench_command.CPU_BENCHMARKS) <= set(names)
    package_dir = Path(lowprec.bench.__file__).parent
    for module in modules:
        spec = importlib.util.find_spec(module)
        assert spec is not None and Path(spec.origin).parent == package_dir, module
    with pytest.raises(SystemExit):                   # no option names a source folder
        cli.main(["bench", "--help"])
    help_text = capsys.readouterr().out
    assert "--out" in help_text and "--bench-dir" not in help_text


def test_a_real_cpu_benchmark_runs_outside_the_checkout_into_out(tmp_path, capsys,
                                                                  monkeypatch):
    """One real module, started the way `lowprec bench` starts them (``python -m``, in
    the --out folder, not the checkout), writes its record into --out."""
    monkeypatch.setattr(device, "facts", lambda: {"gpu": None, "notes": [
        "no GPU: no CUDA device is visible"], "python": "3", "torch": "t",
        "torch_cuda": None, "platform": "p", "cpu_count": 1})
    monkeypatch.setattr(bench_command, "CPU_BENCHMARKS", {"bench_train_step_cpu": (
        "--layers", "1", "--d-model", "32", "--heads", "2", "--batch", "1", "--seq", "16",
        "--steps", "1", "--warmup", "0")})
    out = tmp_path / "out"
    assert cli.main(["bench", "--out", str(out)]) == 0, (out / "bench_train_step_cpu.log")
    text = capsys.readouterr().out
    assert "running python -m lowprec.bench.bench_train_step_cpu --layers 1" in text
    summary = json.loads((out / "bench.json").read_text())
    assert [row["kernel"] for row in summary["rows"]] == ["plain [cpu]", "converted [cpu]"]
    [record] = summary["files"]
    assert Path(record["file"]).parent == out.resolve()
    assert record["data"]["script"] == "bench_train_step_cpu"


def test_without_gpu_says_so_and_exits_cleanly(capsys, monkeypatch, tmp_path,
                                               stand_in_benchmarks):
    """Without a GPU only the CPU benchmarks run (tests/cli/test_cli_messages.py); GPU
    benchmarks alone run nothing, say so and exit 0."""
    monkeypatch.setattr(device, "facts", lambda: {"gpu": None, "notes": [
        "no GPU: no CUDA device is visible"]})
    stand_in_benchmarks({"bench_amax": "raise SystemExit('a GPU benchmark ran')\n"})
    assert cli.main(["bench", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "no GPU (no CUDA device is visible) and no CPU benchmark to run" in out
    assert not (tmp_path / "o").exists()


def test_the_record_bench_common_writes_is_the_one_the_cli_reads(tmp_path, monkeypatch):
    """write_results -> JSON -> bench_rows, field by field (mutation tried: swapping
    of_baseline and throughput in bench_rows failed it)."""
    monkeypatch.setattr(common, "SMOKE", False)          # so that write_results writes
    rows = [common.row("rowcol_rne", 0.1, impl="cuda", shape="8192x8192", throughput=2.7,
                       unit="TB/s", baseline="copy", of_baseline=0.9, bytes=1),
            common.row("bf16", 250.0, shape="batch 8 x seq 1024")]
    path = common.write_results("bench_x", rows, extra={"iters": 3},
                                path=str(tmp_path / "x.json"))
    data = json.loads(Path(path).read_text())
    assert data["schema"] == "lowprec-bench/1" and data["iters"] == 3
    assert data["device"]["gpu"] is None                     # device.facts() on this CPU
    got = bench_command.bench_rows("x.json", data)
    assert [(r["source"], r["kernel"], r["shape"], r["time_ms"], r["throughput"], r["unit"],
             r["ratio"], r["ratio_to"]) for r in got] == [
        ("bench_x", "rowcol_rne [cuda]", "8192x8192", 0.1, 2.7, "TB/s", 0.9, "copy"),
        ("bench_x", "bf16", "batch 8 x seq 1024", 250.0, None, "", None, None)]
    table = bench_command.format_bench_table(got)
    assert "90% of copy" in table and "2.7 TB/s" in table


def test_rows_outside_the_schema_are_refused_by_name(monkeypatch):
    monkeypatch.setattr(common, "SMOKE", False)          # so that write_results writes
    with pytest.raises(ValueError, match="time_ms must be a number; got '1'"):
        common.row("amax", "1", shape="64x64")
    with pytest.raises(ValueError, match="lacks impl, shape, time_ms"):
        common.write_results("bench_x", [{"name": "amax"}], path="/nonexistent/x.json")
    with pytest.raises(ValueError, match="old.json: not a lowprec-bench/1 benchmark record"):
        bench_command.bench_rows("old.json", {"results": [{"op": "amax", "cuda_ms": 0.1}]})


def _record(rows):
    return {"schema": "lowprec-bench/1", "script": "bench_ok", "rows": [
        dict(dict.fromkeys(("impl", "throughput", "unit", "baseline", "of_baseline")), **r)
        for r in rows]}


def test_with_a_gpu_runs_every_module_and_tabulates_this_runs_results(
        tmp_path, capsys, monkeypatch, stand_in_benchmarks):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.json").write_text(json.dumps(
        _record([{"name": "stale", "shape": "1", "time_ms": 1.0}])))
    os.utime(out / "old.json", (0, 0))                       # from an earlier run
    record = _record([{"name": "amax", "impl": "cuda", "shape": "64x64", "time_ms": 0.01,
                       "throughput": 1.5, "unit": "TB/s", "baseline": "copy",
                       "of_baseline": 0.75}])
    stand_in_benchmarks({
        "bench_ok": f"RECORD = {record!r}\n" + textwrap.dedent("""
            import json, os, pathlib
            out = pathlib.Path(os.environ["LOWPREC_BENCH_RESULTS"]) / "ok.json"
            out.write_text(json.dumps(RECORD))
            print("measured")
        """),
        "bench_broken": "raise SystemExit('boom')\n"})
    monkeypatch.setattr(device, "facts", lambda: FAKE_GPU)
    status = cli.main(["bench", "--out", str(out)])
    text = capsys.readouterr().out
    assert status == 1                                       # one benchmark failed
    assert "amax [cuda]" in text and "75% of copy" in text and "stale" not in text
    assert "running python -m standin_bench.bench_ok ..." in text
    summary = json.loads((out / "bench.json").read_text())
    assert summary["failed"] == ["bench_broken"]
    assert summary["device"]["gpu"]["name"] == "Fake GPU"
    assert [row["kernel"] for row in summary["rows"]] == ["amax [cuda]"]
    assert "boom" in (out / "bench_broken.log").read_text()
    assert "measured" in (out / "bench_ok.log").read_text()


def test_with_a_gpu_and_no_benchmark_says_so(capsys, monkeypatch, stand_in_benchmarks):
    monkeypatch.setattr(device, "facts", lambda: FAKE_GPU)
    stand_in_benchmarks({})
    assert cli.main(["bench"]) == 1
    assert "nothing to run" in capsys.readouterr().out


def test_measured_gemm_costs_go_to_the_user_cache(tmp_path, capsys, monkeypatch,
                                                  stand_in_benchmarks):
    rows = [{"precision": p, "m": 64, "n": 64, "k": 64, "tflops": v}
            for p, v in (("bf16", 100.0), ("fp8", 200.0), ("nvfp4", 80.0))]
    stand_in_benchmarks({"bench_gemm": textwrap.dedent(f"""
        import json, os, pathlib
        out = pathlib.Path(os.environ["LOWPREC_BENCH_RESULTS"]) / "gemm.json"
        out.write_text(json.dumps({{"benchmark": "gemm", "device": "Fake GPU",
                                   "results": {rows!r}}}))
    """)})
    monkeypatch.setattr(device, "facts", lambda: FAKE_GPU)
    monkeypatch.setenv("LOWPREC_CACHE_DIR", str(tmp_path / "cache"))
    assert cli.main(["bench", "--out", str(tmp_path / "o")]) == 0
    text = capsys.readouterr().out
    cache = tmp_path / "cache" / "device_costs.json"
    assert f"wrote {cache}" in text
    from lowprec.planner import cost
    kind, _ = cost.detect_device()
    assert cost.device_cost(kind).time == {"bf16": 1.0, "fp8": 0.5, "nvfp4": 1.25}
