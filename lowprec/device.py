"""What hardware and software this process runs on: capabilities and device facts.

``facts()`` is recorded beside every benchmark figure and printed by ``lowprec info``:
a figure means little without the GPU's name, clocks and power limit at the time it was
taken. The GPU facts come from NVML (the ``nvidia-ml-py`` package, imported as
``pynvml``); torch supplies the compute capability and the CUDA version it was built with.

Nothing here raises: a missing driver, a missing ``pynvml`` or an NVML call a GPU does
not support becomes ``None`` plus a line in ``facts()["notes"]``, so that ``lowprec info``
and ``lowprec bench`` still run (and say why a fact is missing) on any machine.
"""

import os
import platform

import torch

# (minimum compute capability, what it gives lowprec)
NATIVE_FP8 = (8, 9)     # Ada / Hopper: FP8 tensor cores
NATIVE_FP4 = (10, 0)    # Blackwell: FP4 (E2M1) block-scaled tensor cores


def capabilities(capability):
    """What a compute capability ``(major, minor)`` runs natively; None -> no GPU."""
    if capability is None:
        return {"native_fp8_gemm": False, "native_fp4_gemm": False}
    capability = tuple(capability)
    return {"native_fp8_gemm": capability >= NATIVE_FP8,
            "native_fp4_gemm": capability >= NATIVE_FP4}


def _nvml_call(notes, what, fn, *args):
    """``fn(*args)``, or None with a note: GPUs differ in which queries they support."""
    try:
        return fn(*args)
    except Exception as err:  # pynvml raises NVMLError_* per query; none may escape
        notes.append(f"NVML could not read {what}: {type(err).__name__}: {err}")
        return None


def _as_str(value):
    # Older pynvml releases return bytes, newer ones str.
    return value.decode() if isinstance(value, bytes) else value


def _nvml_handle(pynvml, index, notes):
    """The NVML handle of torch's device ``index``.

    torch numbers devices after CUDA_VISIBLE_DEVICES, NVML does not; the UUID ties the
    two together. Fall back to the same index (right when nothing is masked).
    """
    uuid = None
    try:
        uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    except Exception as err:
        notes.append(f"torch could not read the properties of cuda:{index}: {err}")
    if uuid is not None:
        text = str(uuid)
        text = text if text.startswith(("GPU-", "MIG-")) else "GPU-" + text
        try:
            return pynvml.nvmlDeviceGetHandleByUUID(text)
        except Exception as err:
            notes.append(f"NVML found no device with UUID {text} ({err}); using index {index}")
    return pynvml.nvmlDeviceGetHandleByIndex(index)


def _gpu_facts(index, notes):
    """NVML facts of torch's cuda:``index``, or {} with a note when NVML is unusable."""
    try:
        import pynvml
    except ImportError:
        notes.append("nvidia-ml-py is not installed (pip install nvidia-ml-py): "
                     "no driver, clock or power facts")
        return {}
    try:
        pynvml.nvmlInit()
    except Exception as err:
        notes.append(f"NVML failed to initialise: {type(err).__name__}: {err}")
        return {}
    try:
        handle = _nvml_handle(pynvml, index, notes)
        sm, mem = pynvml.NVML_CLOCK_SM, pynvml.NVML_CLOCK_MEM
        power_mw = _nvml_call(notes, "the power limit",
                              pynvml.nvmlDeviceGetEnforcedPowerLimit, handle)
        memory = _nvml_call(notes, "the memory size", pynvml.nvmlDeviceGetMemoryInfo, handle)
        cuda_driver = _nvml_call(notes, "the driver's CUDA version",
                                 pynvml.nvmlSystemGetCudaDriverVersion)
        return {
            "nvml_name": _as_str(_nvml_call(notes, "the name", pynvml.nvmlDeviceGetName,
                                            handle)),
            "driver": _as_str(_nvml_call(notes, "the driver version",
                                         pynvml.nvmlSystemGetDriverVersion)),
            "driver_cuda": (None if cuda_driver is None
                            else f"{cuda_driver // 1000}.{cuda_driver % 1000 // 10}"),
            "sm_clock_mhz": _nvml_call(notes, "the SM clock", pynvml.nvmlDeviceGetClockInfo,
                                       handle, sm),
            "sm_clock_max_mhz": _nvml_call(notes, "the max SM clock",
                                           pynvml.nvmlDeviceGetMaxClockInfo, handle, sm),
            "mem_clock_mhz": _nvml_call(notes, "the memory clock",
                                        pynvml.nvmlDeviceGetClockInfo, handle, mem),
            "mem_clock_max_mhz": _nvml_call(notes, "the max memory clock",
                                            pynvml.nvmlDeviceGetMaxClockInfo, handle, mem),
            "power_limit_w": None if power_mw is None else power_mw / 1000.0,
            "memory_total_gib": None if memory is None else memory.total / 2**30,
        }
    except Exception as err:
        notes.append(f"NVML query failed: {type(err).__name__}: {err}")
        return {}
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def facts(index=None):
    """A JSON-ready dict describing this machine and (if any) its GPU ``index``.

    Keys: ``python``, ``torch``, ``torch_cuda`` (the CUDA torch was built with, or None),
    ``platform``, ``cpu_count``, ``gpu`` (None without a visible CUDA device, else a dict:
    ``index``, ``name``, ``capability`` "major.minor", ``native_fp8_gemm``,
    ``native_fp4_gemm`` and the NVML facts: ``driver``, ``driver_cuda``, ``sm_clock_mhz``,
    ``sm_clock_max_mhz``, ``mem_clock_mhz``, ``mem_clock_max_mhz``, ``power_limit_w``,
    ``memory_total_gib``, each None when unreadable), and ``notes``: why facts are missing.
    """
    notes = []
    out = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "gpu": None,
        "notes": notes,
    }
    try:
        has_gpu = torch.cuda.is_available()
    except Exception as err:
        notes.append(f"torch.cuda.is_available() failed: {err}")
        has_gpu = False
    if not has_gpu:
        why = ("this torch was built without CUDA" if torch.version.cuda is None
               else "no CUDA device is visible")
        notes.append(f"no GPU: {why}")
        return out
    try:
        index = torch.cuda.current_device() if index is None else index
        capability = torch.cuda.get_device_capability(index)
        gpu = {"index": index, "name": torch.cuda.get_device_name(index),
               "capability": f"{capability[0]}.{capability[1]}"}
        gpu.update(capabilities(capability))
    except Exception as err:
        notes.append(f"torch could not describe cuda:{index}: {type(err).__name__}: {err}")
        gpu = {"index": index}
    gpu.update(_gpu_facts(index, notes))
    out["gpu"] = gpu
    return out


def _fmt(value, unit=""):
    if value is None:
        return "?"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        value = f"{value:.1f}" if value % 1 else f"{value:.0f}"
    return f"{value}{unit}"


def format_facts(f):
    """The facts of ``facts()`` as indented lines for a terminal."""
    lines = [f"  python {f['python']}, torch {f['torch']} "
             f"(CUDA {f['torch_cuda'] or 'none: CPU build'}), {f['cpu_count']} CPUs, "
             f"{f['platform']}"]
    gpu = f["gpu"]
    if gpu is None:
        lines.append("  GPU: none")
    else:
        lines.append(f"  GPU {gpu.get('index')}: {gpu.get('name', '?')}, compute capability "
                     f"{gpu.get('capability', '?')} (native FP8 GEMM: "
                     f"{_fmt(gpu.get('native_fp8_gemm'))}, native FP4 GEMM: "
                     f"{_fmt(gpu.get('native_fp4_gemm'))})")
        lines.append(f"    driver {_fmt(gpu.get('driver'))} (CUDA "
                     f"{_fmt(gpu.get('driver_cuda'))}), memory "
                     f"{_fmt(gpu.get('memory_total_gib'), ' GiB')}, power limit "
                     f"{_fmt(gpu.get('power_limit_w'), ' W')}")
        lines.append(f"    clocks now/max: SM {_fmt(gpu.get('sm_clock_mhz'))}/"
                     f"{_fmt(gpu.get('sm_clock_max_mhz'))} MHz, memory "
                     f"{_fmt(gpu.get('mem_clock_mhz'))}/{_fmt(gpu.get('mem_clock_max_mhz'))} MHz")
    lines.extend(f"  note: {note}" for note in f["notes"])
    return "\n".join(lines)
