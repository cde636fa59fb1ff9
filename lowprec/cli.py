"""The ``lowprec`` command: ``info`` (what runs here) and ``demo`` (the main job)."""

import argparse
import platform
import sys

import torch


def _info(args):
    import lowprec

    print(f"lowprec {lowprec.__version__}, torch {torch.__version__}, "
          f"python {platform.python_version()}")
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    if device_type == "cuda":
        print(f"device: {torch.cuda.get_device_name()} "
              f"(sm_{''.join(map(str, torch.cuda.get_device_capability()))})")
    else:
        print("device: CPU only (no CUDA device visible)")
    print(f"backends for {device_type} tensors:")
    for name, reason in lowprec.available(return_reason=True, device_type=device_type).items():
        print(f"  {name:<10} {'available' if reason is None else 'unavailable: ' + reason}")
    return 0


def _demo(args):
    from lowprec import quant_report

    x, w = quant_report.make_inputs(m=args.m, k=args.k, n=args.n, seed=args.seed)
    print(f"Quantization error on a generated activation X [{args.m}, {args.k}] "
          f"(Gaussian, 1/64 of channels x20) and weight W [{args.n}, {args.k}]:\n")
    print(quant_report.format_table(quant_report.error_rows(x, w, backend=args.backend)))
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="lowprec", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="backends available here, and why not; versions")
    info.set_defaults(func=_info)
    demo = sub.add_parser("demo", help="the main job: quantization error table of each format")
    demo.add_argument("--m", type=int, default=512, help="tokens (rows of X)")
    demo.add_argument("--k", type=int, default=1024, help="contraction dim (multiple of 16)")
    demo.add_argument("--n", type=int, default=512, help="output features (rows of W)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--backend", default="auto")
    demo.set_defaults(func=_demo)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
