"""`lowprec info`: backends available here and why not, device facts, versions; with
--dispatch the op -> implementation table."""

import importlib.util
from pathlib import Path

import lowprec
from lowprec import _C, device, dispatch

OPTIONAL_MODULES = (("triton", "Triton kernels"), ("matplotlib", "the demo's plot"),
                    ("transformers", "the Hugging Face integration test"))


def _build_summary():
    """What setup.py built (lowprec/_build_info.json) and what it lacks, in one line."""
    info = _C.build_info()
    if info is None:
        return "no build record (installed without building the extension)"
    built = {"cuda": "the CUDA extension (GPU + CPU kernels)", "cpu": "the CPU extension",
             None: "no extension"}[info.get("extension")]
    if info.get("extension") == "cuda":
        # Optional inside the CUDA build (setup.py _cublaslt); chosen by VALUES_GEMM.
        no_cublaslt = _C.cublaslt_reason()
        built += (", with the cuBLASLt GEMM on values" if no_cublaslt is None
                  else f", without the cuBLASLt GEMM on values ({no_cublaslt})")
    note = _C.build_note()
    return built if note is None else f"{built}; {note}"


def run(args):
    if args.dispatch or args.capability or args.json:
        return dispatch.main(args.capability, args.json)

    print(f"lowprec {lowprec.__version__} ({Path(lowprec.__file__).parent})")
    print(f"build: {_build_summary()}")
    facts = device.facts()
    print("device:")
    print(device.format_facts(facts))
    device_types = ["cuda", "cpu"] if facts["gpu"] is not None else ["cpu"]
    for device_type in device_types:
        print(f"backends for {device_type} tensors (auto picks the first available of "
              f"{', '.join(lowprec.backends.AUTO_ORDER[device_type])}):")
        for name, reason in lowprec.available(return_reason=True,
                                              device_type=device_type).items():
            print(f"  {name:<10} {'available' if reason is None else 'unavailable: ' + reason}")
    print("optional packages:")
    for module, use in OPTIONAL_MODULES:
        found = importlib.util.find_spec(module) is not None
        print(f"  {module:<13} {'installed' if found else 'not installed'} (for {use})")
    return 0


def add_parser(sub):
    info = sub.add_parser("info", help="backends available here, and why not; versions")
    info.add_argument("--dispatch", action="store_true", help="print op -> implementation "
                      "that backend='auto' runs here")
    info.add_argument("--capability", help="with --dispatch: for a GPU of this compute "
                      "capability instead (e.g. 9.0 Hopper, 10.0 Blackwell)")
    info.add_argument("--json", action="store_true", help="with --dispatch: as JSON "
                      "{op: implementation}")
    info.set_defaults(func=run)

