"""`lowprec bench`: the no-GPU path, the table it builds from the scripts' JSON, and a
run with a faked GPU over a stand-in bench/ directory."""

import json
import os
import textwrap

from lowprec import cli, device


def test_without_gpu_says_so_and_exits_cleanly(capsys, monkeypatch):
    monkeypatch.setattr(device, "facts", lambda: {"gpu": None, "notes": [
        "no GPU: no CUDA device is visible"]})
    assert cli.main(["bench"]) == 0
    assert "no GPU (no CUDA device is visible)" in capsys.readouterr().out


def test_rows_from_per_backend_bandwidth_results():
    data = {"results": [{"op": "rowcol_rne", "shape": [8192, 8192], "bytes": 1,
                         "copy_tbps": 3.0, "cuda_ms": 0.1, "cuda_tbps": 2.7,
                         "cuda_of_copy": 0.9, "triton_ms": 0.2, "triton_tbps": 1.35,
                         "triton_of_copy": 0.45}]}
    rows = cli.bench_rows("quantize_cuda", data)
    assert [(r["kernel"], r["shape"], r["time_ms"], r["throughput"], r["unit"], r["ratio"],
             r["ratio_to"]) for r in rows] == [
        ("rowcol_rne [cuda]", "8192x8192", 0.1, 2.7, "TB/s", 0.9, "copy"),
        ("rowcol_rne [triton]", "8192x8192", 0.2, 1.35, "TB/s", 0.45, "copy")]
    table = cli.format_bench_table(rows)
    assert "90% of copy" in table and "2.7 TB/s" in table


def test_rows_from_named_results_and_gemm_ratios():
    data = {"results": {"bf16": {"step_s": 0.25, "tokens_per_s": 32768.0},
                        "gemm": {"kernel": "nvfp4_gemm", "shape": "4096x4096x4096",
                                 "us": 500.0, "tflops": 275.0, "of_mm": 0.4},
                        "skipped": "torchao missing"}}
    rows = {r["kernel"]: r for r in cli.bench_rows("mixed", data)}
    assert rows["bf16"]["time_ms"] == 250.0 and rows["bf16"]["unit"] == "tok/s"
    assert rows["nvfp4_gemm"]["time_ms"] == 0.5 and rows["nvfp4_gemm"]["ratio_to"] == "bf16 mm"
    assert cli.bench_rows("empty", {"device": {}}) == []


def test_rows_from_bench_common_records():
    """bench/common.py's write_results: {"script": ..., "rows": [...]} with M/N/K."""
    data = {"script": "bench_nvfp4_gemm", "rows": [
        {"M": 8192, "N": 4096, "K": 4096, "impl": "torch.mm bf16", "ms": 2.0,
         "tflops": 137.4, "of_mm": 1.0},
        {"M": 8192, "N": 4096, "K": 4096, "impl": "fused", "ms": 4.0, "tflops": 68.7,
         "of_mm": 0.5, "scratch_mb": 0.0}]}
    rows = cli.bench_rows("bench_nvfp4_gemm_H100_20260101T000000Z", data)
    assert [(r["source"], r["kernel"], r["shape"], r["unit"], r["ratio"]) for r in rows] == [
        ("bench_nvfp4_gemm", "nvfp4_gemm torch.mm bf16", "M8192 N4096 K4096", "TFLOP/s", 1.0),
        ("bench_nvfp4_gemm", "nvfp4_gemm fused", "M8192 N4096 K4096", "TFLOP/s", 0.5)]
    assert "50% of bf16 mm" in cli.format_bench_table(rows)


def test_with_a_gpu_runs_every_script_and_tabulates_this_runs_results(tmp_path, capsys,
                                                                      monkeypatch):
    bench = tmp_path / "bench"
    (bench / "results").mkdir(parents=True)
    (bench / "results" / "old.json").write_text(json.dumps(
        {"results": [{"op": "stale", "ms": 1.0}]}))
    os.utime(bench / "results" / "old.json", (0, 0))          # from an earlier run
    (bench / "bench_ok.py").write_text(textwrap.dedent("""
        import json, pathlib
        out = pathlib.Path(__file__).parent / "results" / "ok.json"
        out.write_text(json.dumps({"results": [{"op": "amax", "shape": [64, 64],
                                                "cuda_ms": 0.01, "cuda_tbps": 1.5,
                                                "cuda_of_copy": 0.75}]}))
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
