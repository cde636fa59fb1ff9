"""FLOPs and per-device relative precision costs."""

import json

import pytest

from lowprec.planner import cost


def test_gemm_flops_is_2mnk_as_int():
    assert cost.gemm_flops(1000, 4096, 1024) == 2 * 1000 * 4096 * 1024
    assert isinstance(cost.gemm_flops(3.0, 16, 16), int)


def test_blackwell_defaults_and_relative_time():
    dev = cost.device_cost("blackwell")
    assert dev.time == {"bf16": 1.0, "fp8": 0.5, "nvfp4": 0.25}
    assert "datasheet" in dev.source
    assert dev.relative_time({"nvfp4": 300, "bf16": 100}) == pytest.approx(0.4375)


def test_cpu_plans_for_blackwell_and_says_so():
    dev = cost.device_cost(None)
    assert dev.device in ("blackwell", "hopper")
    assert dev.source                     # where the numbers come from is always named


def test_user_costs_are_normalised_to_bf16():
    dev = cost.device_cost({"bf16": 2.0, "fp8": 1.0, "nvfp4": 0.5})
    assert dev.time == {"bf16": 1.0, "fp8": 0.5, "nvfp4": 0.25}
    with pytest.raises(ValueError, match="missing"):
        cost.device_cost({"bf16": 1.0})
    with pytest.raises(ValueError, match="positive"):
        cost.device_cost({"bf16": 1.0, "fp8": 0.0, "nvfp4": 1.0})
    with pytest.raises(ValueError, match="device must be"):
        cost.device_cost("tpu")


def _bench(path, device, rows, benchmark="gemm"):
    path.write_text(json.dumps({"benchmark": benchmark, "device": device, "results": rows}))


def test_hopper_reads_measured_gemm_results(tmp_path):
    rows = []
    for shape, (bf16, fp8, nvfp4) in {(4096, 4096, 4096): (600.0, 1200.0, 400.0),
                                      (8192, 4096, 4096): (640.0, 1280.0, 320.0),
                                      (1024, 1024, 1024): (300.0, 450.0, 300.0)}.items():
        m, n, k = shape
        rows += [{"precision": p, "m": m, "n": n, "k": k, "tflops": v}
                 for p, v in (("bf16", bf16), ("fp8", fp8), ("nvfp4", nvfp4))]
    _bench(tmp_path / "gemm_h100.json", {"name": "NVIDIA H100 80GB HBM3",
                                         "capability": [9, 0]}, rows)
    _bench(tmp_path / "other.json", "NVIDIA H100", rows[:1], benchmark="quantize")
    (tmp_path / "broken.json").write_text("{not json")
    dev = cost.device_cost("hopper", results_dir=tmp_path)
    # medians of bf16/p over the three shapes
    assert dev.time["fp8"] == pytest.approx(0.5)
    assert dev.time["nvfp4"] == pytest.approx(1.5)
    assert "measured: gemm_h100.json" in dev.source


def test_hopper_without_results_falls_back_and_names_the_assumption(tmp_path):
    _bench(tmp_path / "b200.json", {"name": "NVIDIA B200", "capability": [10, 0]},
           [{"precision": "bf16", "m": 1, "n": 1, "k": 1, "tflops": 1.0}])
    dev = cost.device_cost("hopper", results_dir=tmp_path)
    assert dev.time == {"bf16": 1.0, "fp8": 0.5, "nvfp4": 1.0}
    assert "assumed" in dev.source and "not measured" in dev.source


def test_packaged_defaults_come_from_the_package_data_file():
    from importlib import resources
    data = json.loads(resources.files("lowprec.planner").joinpath("device_costs.json")
                      .read_text())
    for kind in ("blackwell", "hopper"):
        assert cost.DEFAULT_COSTS[kind] == (data[kind]["time"], data[kind]["source"])


def test_nothing_is_read_from_the_current_directory_or_a_checkout(tmp_path, monkeypatch):
    """A bench/results directory where the command runs changes nothing (mutation tried:
    reading ``Path.cwd() / "bench" / "results"`` in device_cost fails this test)."""
    rows = [{"precision": p, "m": 64, "n": 64, "k": 64, "tflops": v}
            for p, v in (("bf16", 100.0), ("fp8", 400.0), ("nvfp4", 800.0))]
    (tmp_path / "bench" / "results").mkdir(parents=True)
    _bench(tmp_path / "bench" / "results" / "gemm.json", {"name": "NVIDIA H100",
                                                          "capability": [9, 0]}, rows)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LOWPREC_CACHE_DIR", str(tmp_path / "empty-cache"))
    dev = cost.device_cost("hopper")
    assert dev.time == {"bf16": 1.0, "fp8": 0.5, "nvfp4": 1.0}
    assert "not measured" in dev.source


def test_user_cache_overrides_the_defaults_and_names_itself(tmp_path, monkeypatch):
    monkeypatch.setenv("LOWPREC_CACHE_DIR", str(tmp_path))
    path = cost.write_user_costs("hopper", {"bf16": 2.0, "fp8": 1.0, "nvfp4": 1.5},
                                 "measured: gemm.json")
    assert path == tmp_path / "device_costs.json"
    dev = cost.device_cost("hopper")
    assert dev.time == {"bf16": 1.0, "fp8": 0.5, "nvfp4": 0.75}
    assert dev.source == f"measured: gemm.json (cached in {path})"
    assert cost.device_cost("blackwell").time["nvfp4"] == 0.25      # other kinds: defaults


def test_a_broken_user_cache_is_an_error_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("LOWPREC_CACHE_DIR", str(tmp_path))
    (tmp_path / "device_costs.json").write_text('{"hopper": {"time": {"bf16": 1}}}')
    with pytest.raises(ValueError, match="device_costs.json is unreadable"):
        cost.device_cost("hopper")
