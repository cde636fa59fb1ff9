"""`lowprec info` and the device facts behind it (lowprec.device), GPU paths faked."""

import types

import pytest
import torch

from lowprec import cli, device


def test_info_runs_and_names_every_backend(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    for name in ("reference", "triton", "cuda", "cpu"):
        assert f"  {name} " in out
    assert torch.__version__ in out
    assert "optional packages:" in out


def test_facts_without_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    facts = device.facts()
    assert facts["gpu"] is None
    assert any(note.startswith("no GPU") for note in facts["notes"])
    assert "GPU: none" in device.format_facts(facts)


class _NVMLError(Exception):
    pass


def _fake_pynvml(broken=()):
    """A stand-in for nvidia-ml-py; queries named in ``broken`` raise like NVML does."""
    def query(name, value):
        def fn(*args):
            if name in broken:
                raise _NVMLError(f"{name}: Not Supported")
            return value(*args) if callable(value) else value
        return fn
    handle = object()
    clocks = {(0, 1): 1755, (1, 1): 1980, (0, 2): 2619, (1, 2): 2619}  # (is_max, clock)
    return types.SimpleNamespace(
        NVML_CLOCK_SM=1, NVML_CLOCK_MEM=2,
        nvmlInit=query("init", None), nvmlShutdown=query("shutdown", None),
        nvmlDeviceGetHandleByUUID=query("uuid", lambda uuid: handle),
        nvmlDeviceGetHandleByIndex=query("index", lambda i: handle),
        nvmlDeviceGetName=query("name", b"NVIDIA B200"),
        nvmlSystemGetDriverVersion=query("driver", "575.51.03"),
        nvmlSystemGetCudaDriverVersion=query("cuda", 12090),
        nvmlDeviceGetClockInfo=query("clock", lambda h, kind: clocks[(0, kind)]),
        nvmlDeviceGetMaxClockInfo=query("maxclock", lambda h, kind: clocks[(1, kind)]),
        nvmlDeviceGetEnforcedPowerLimit=query("power", 1_000_000),
        nvmlDeviceGetMemoryInfo=query("memory", types.SimpleNamespace(total=192 * 2**30)),
    )


@pytest.fixture
def fake_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=None: (10, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=None: "NVIDIA B200")
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda i=None: types.SimpleNamespace(uuid="1234-abcd"))

    def install(broken=()):
        monkeypatch.setitem(__import__("sys").modules, "pynvml", _fake_pynvml(broken))
    return install


def test_facts_of_a_gpu_through_nvml(fake_gpu):
    fake_gpu()
    gpu = device.facts()["gpu"]
    assert gpu["name"] == "NVIDIA B200" and gpu["nvml_name"] == "NVIDIA B200"
    assert gpu["capability"] == "10.0"
    assert gpu["native_fp4_gemm"] and gpu["native_fp8_gemm"]
    assert gpu["driver"] == "575.51.03" and gpu["driver_cuda"] == "12.9"
    assert (gpu["sm_clock_mhz"], gpu["sm_clock_max_mhz"]) == (1755, 1980)
    assert (gpu["mem_clock_mhz"], gpu["mem_clock_max_mhz"]) == (2619, 2619)
    assert gpu["power_limit_w"] == 1000.0
    assert gpu["memory_total_gib"] == 192.0
    text = device.format_facts(device.facts())
    assert "1000 W" in text and "192 GiB" in text and "SM 1755/1980 MHz" in text


def test_unsupported_nvml_queries_become_notes_not_errors(fake_gpu):
    fake_gpu(broken=("power", "uuid"))
    facts = device.facts()
    assert facts["gpu"]["power_limit_w"] is None
    assert facts["gpu"]["sm_clock_mhz"] == 1755          # found by index instead
    assert any("power limit" in note for note in facts["notes"])
    assert any("UUID" in note for note in facts["notes"])


def test_nvml_that_fails_to_start_never_raises(fake_gpu):
    fake_gpu(broken=("init",))
    facts = device.facts()
    assert facts["gpu"]["capability"] == "10.0"          # torch's facts remain
    assert "driver" not in facts["gpu"]
    assert any("failed to initialise" in note for note in facts["notes"])


@pytest.mark.parametrize("capability, fp8, fp4", [(None, False, False), ((8, 0), False, False),
                                                  ((9, 0), True, False), ((10, 0), True, True),
                                                  ((12, 0), True, True)])
def test_capabilities(capability, fp8, fp4):
    assert device.capabilities(capability) == {"native_fp8_gemm": fp8, "native_fp4_gemm": fp4}


@pytest.mark.parametrize("reason, says", [
    (None, "the CUDA extension (GPU + CPU kernels), with the cuBLASLt GEMM on values"),
    ("no cublasLt.h (test)", "without the cuBLASLt GEMM on values (no cublasLt.h (test))")])
def test_the_build_line_says_whether_the_cublaslt_gemm_was_built(monkeypatch, reason, says):
    from lowprec.cli import info
    monkeypatch.setattr(info._C, "build_info", lambda: {"extension": "cuda"})
    monkeypatch.setattr(info._C, "build_note", lambda: None)
    monkeypatch.setattr(info._C, "cublaslt_reason", lambda: reason)
    assert says in info._build_summary()

