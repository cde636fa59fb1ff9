"""`lowprec bench`: the no-GPU path, the table it builds from the scripts' JSON, and a
run with a faked GPU over a stand-in bench/ directory."""

import importlib.util
import json
import os
import pathlib
import textwrap

import pytest

from lowprec import cli, device


def test_without_gpu_says_so_and_exits_cleanly(capsys, monkeypatch, tmp_path):
    """Without a GPU only the CPU benchmarks run (tests/cli/test_cli_messages.py); a
    bench/ holding GPU benchmarks alone runs nothing, says so and exits 0."""
    monkeypatch.setattr(device, "facts", lambda: {"gpu": None, "notes": [
        "no GPU: no CUDA device is visible"]})
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "bench_amax.py").write_text("raise SystemExit('a GPU benchmark ran')\n")
    assert cli.main(["bench", "--bench-dir", str(bench), "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "no GPU (no CUDA device is visible) and no CPU benchmark to run" in out
    assert not (tmp_path / "o").exists()


def _bench_common(monkeypatch):
    """bench/common.py, loaded from the checkout (bench/ is not an installed package),
    with smoke mode off so that write_results writes."""
    path = pathlib.Path(__file__).resolve().parents[2] / "bench" / "common.py"
    spec = importlib.util.spec_from_file_location("bench_common_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "SMOKE", False)
    return module


def test_the_record_bench_common_writes_is_the_one_the_cli_reads(tmp_path, monkeypatch):
    """write_results -> JSON -> bench_rows, field by field (mutation tried: swapping
    of_baseline and throughput in bench_rows failed it)."""
    common = _bench_common(monkeypatch)
    rows = [common.row("rowcol_rne", 0.1, impl="cuda", shape="8192x8192", throughput=2.7,
                       unit="TB/s", baseline="copy", of_baseline=0.9, bytes=1),
            common.row("bf16", 250.0, shape="batch 8 x seq 1024")]
    path = common.write_results("bench_x", rows, extra={"iters": 3},
                                path=str(tmp_path / "x.json"))
    data = json.loads(pathlib.Path(path).read_text())
    assert data["schema"] == "lowprec-bench/1" and data["iters"] == 3
    assert data["device"]["gpu"] is None                     # device.facts() on this CPU
    got = cli.bench_rows("x.json", data)
    assert [(r["source"], r["kernel"], r["shape"], r["time_ms"], r["throughput"], r["unit"],
             r["ratio"], r["ratio_to"]) for r in got] == [
        ("bench_x", "rowcol_rne [cuda]", "8192x8192", 0.1, 2.7, "TB/s", 0.9, "copy"),
        ("bench_x", "bf16", "batch 8 x seq 1024", 250.0, None, "", None, None)]
    table = cli.format_bench_table(got)
    assert "90% of copy" in table and "2.7 TB/s" in table


def test_rows_outside_the_schema_are_refused_by_name(monkeypatch):
    common = _bench_common(monkeypatch)
    with pytest.raises(ValueError, match="time_ms must be a number; got '1'"):
        common.row("amax", "1", shape="64x64")
    with pytest.raises(ValueError, match="lacks impl, shape, time_ms"):
        common.write_results("bench_x", [{"name": "amax"}], path="/nonexistent/x.json")
    with pytest.raises(ValueError, match="old.json: not a lowprec-bench/1 benchmark record"):
        cli.bench_rows("old.json", {"results": [{"op": "amax", "cuda_ms": 0.1}]})


def _record(rows):
    return {"schema": "lowprec-bench/1", "script": "bench_ok", "rows": [
        dict(dict.fromkeys(("impl", "throughput", "unit", "baseline", "of_baseline")), **r)
        for r in rows]}


def test_with_a_gpu_runs_every_script_and_tabulates_this_runs_results(tmp_path, capsys,
                                                                      monkeypatch):
    bench = tmp_path / "bench"
    (bench / "results").mkdir(parents=True)
    (bench / "results" / "old.json").write_text(json.dumps(
        _record([{"name": "stale", "shape": "1", "time_ms": 1.0}])))
    os.utime(bench / "results" / "old.json", (0, 0))          # from an earlier run
    record = _record([{"name": "amax", "impl": "cuda", "shape": "64x64", "time_ms": 0.01,
                       "throughput": 1.5, "unit": "TB/s", "baseline": "copy",
                       "of_baseline": 0.75}])
    (bench / "bench_ok.py").write_text(f"RECORD = {record!r}\n" + textwrap.dedent("""
        import json, pathlib
        out = pathlib.Path(__file__).parent / "results" / "ok.json"
        out.write_text(json.dumps(RECORD))
        print("measured")
    """))
    (bench / "bench_broken.py").write_text("raise SystemExit('boom')\n")
    monkeypatch.setattr(device, "facts", lambda: {
        "python": "3", "torch": "t", "torch_cuda": "12.8", "platform": "p", "cpu_count": 1,
        "gpu": {"index": 0, "name": "Fake GPU"}, "notes": []})
    out = tmp_path / "out"
    status = cli.main(["bench", "--bench-dir", str(bench), "--out", str(out)])
    text = capsys.readouterr().out
    assert status == 1                                       # one script failed
    assert "amax [cuda]" in text and "75% of copy" in text and "stale" not in text
    summary = json.loads((out / "bench.json").read_text())
    assert summary["failed"] == ["bench_broken.py"]
    assert summary["device"]["gpu"]["name"] == "Fake GPU"
    assert [row["kernel"] for row in summary["rows"]] == ["amax [cuda]"]
    assert "boom" in (out / "bench_broken.log").read_text()
    assert "measured" in (out / "bench_ok.log").read_text()


def test_without_scripts_says_where_they_are(capsys, monkeypatch, tmp_path):
    """From a wheel there is no bench/: the message says what is needed."""
    monkeypatch.setattr(device, "facts", lambda: {"gpu": None, "notes": []})
    assert cli.main(["bench", "--bench-dir", str(tmp_path / "none")]) == 0
    out = capsys.readouterr().out
    assert "part of the source repository" in out and "--bench-dir" in out
    monkeypatch.setattr(device, "facts", lambda: {
        "python": "3", "torch": "t", "torch_cuda": "12.8", "platform": "p", "cpu_count": 1,
        "gpu": {"index": 0, "name": "Fake GPU"}, "notes": []})
    assert cli.main(["bench", "--bench-dir", str(tmp_path / "none")]) == 1
    assert "nothing to run" in capsys.readouterr().out


def test_measured_gemm_costs_go_to_the_user_cache(tmp_path, capsys, monkeypatch):
    bench = tmp_path / "bench"
    (bench / "results").mkdir(parents=True)
    rows = [{"precision": p, "m": 64, "n": 64, "k": 64, "tflops": v}
            for p, v in (("bf16", 100.0), ("fp8", 200.0), ("nvfp4", 80.0))]
    (bench / "bench_gemm.py").write_text(textwrap.dedent(f"""
        import json, pathlib
        out = pathlib.Path(__file__).parent / "results" / "gemm.json"
        out.write_text(json.dumps({{"benchmark": "gemm", "device": "Fake GPU",
                                   "results": {rows!r}}}))
    """))
    monkeypatch.setattr(device, "facts", lambda: {
        "python": "3", "torch": "t", "torch_cuda": "12.8", "platform": "p", "cpu_count": 1,
        "gpu": {"index": 0, "name": "Fake GPU"}, "notes": []})
    monkeypatch.setenv("LOWPREC_CACHE_DIR", str(tmp_path / "cache"))
    assert cli.main(["bench", "--bench-dir", str(bench), "--out", str(tmp_path / "o")]) == 0
    text = capsys.readouterr().out
    cache = tmp_path / "cache" / "device_costs.json"
    assert f"wrote {cache}" in text
    from lowprec.planner import cost
    kind, _ = cost.detect_device()
    assert cost.device_cost(kind).time == {"bf16": 1.0, "fp8": 0.5, "nvfp4": 1.25}
