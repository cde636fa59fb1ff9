"""Recipe ablation of the NVFP4 training recipe on the demo GPT; writes
experiments/ablation/results/ (run from the repository root).

    python -m lowprec.experiments.ablation --seeds 3     # what produced the results (CPU)
    python -m lowprec.experiments.ablation --from-json experiments/ablation/results/ablation.json
                                                         # redraw only

Same training as `lowprec demo --ablation` (lowprec/demo/ablation.py); this module only
fixes where the results go: ablation.{json,md,png} in experiments/ablation/results/ (the
raw record ablation.json is not committed; the table and plot are).
"""

import argparse
import json
import sys
from pathlib import Path

from lowprec import device
from lowprec.demo import ablation, report, train

RESULTS = Path("experiments", "ablation", "results")


def _markdown(record, summary):
    model, cfg, corpus = record["model_config"], record["train_config"], record["corpus"]
    seeds = ", ".join(str(s) for s in record["seeds"])
    return (
        f"# NVFP4 recipe ablation ({record['preset']} preset, {cfg['steps']} steps, "
        f"seeds {seeds})\n\n"
        f"Produced by `{record['command']}` in {record['seconds']:.0f} s "
        f"({record['device_type']}, {record['threads']} thread(s), quantization backend "
        f"`{record['backend']}`).\n\n"
        f"Model: byte-level GPT, d_model {model['d_model']}, {model['n_layer']} blocks, "
        f"{model['n_head']} heads, seq {model['seq_len']}. Training: batch "
        f"{cfg['batch_size']}, AdamW lr {cfg['lr']} (warmup, cosine), final validation "
        f"loss on {cfg['final_eval_batches']} batches of the held-out split. Corpus: "
        f"{corpus['name']}, {corpus['bytes']} bytes, sha256 {corpus['sha256'][:16]}.\n\n"
        f"Device:\n\n```\n{device.format_facts(record['device'])}\n```\n\n"
        f"Final validation loss (nats per byte); gaps are paired by seed:\n\n"
        f"```\n{summary}\n```\n")


def write_results(record, out):
    """ablation.json (unless it is the source), ablation.md and ablation.png in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    summary = ablation.format_summary(record)
    print("\n" + summary)
    report.write_json(record, out / "ablation.json")
    seeds = ", ".join(str(s) for s in record["seeds"])
    png, why_not = ablation.plot(
        record, out / "ablation.png",
        f"NVFP4 recipe ablation: demo GPT, {record['preset']} preset, "
        f"{record['train_config']['steps']} steps, seeds {seeds}")
    (out / "ablation.md").write_text(_markdown(record, summary))
    print(f"wrote {out}/ablation.json, ablation.md" + (", ablation.png" if png else
                                                       f"; {why_not}"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(train.PRESETS),
                        default=train.default_preset())
    parser.add_argument("--seeds", type=int, default=2, help="seeds 0 .. N-1 (default 2)")
    parser.add_argument("--steps", type=int, help="default: the preset's")
    parser.add_argument("--configs", nargs="+", choices=list(ablation.CONFIGS))
    parser.add_argument("--threads", type=int, help="CPU threads (default 1)")
    parser.add_argument("--out", type=Path, default=RESULTS,
                        help=f"default: {RESULTS} under the current directory")
    parser.add_argument("--from-json", type=Path, help="redraw the table and plot of an "
                        "earlier run's ablation.json instead of training")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)

    if args.from_json:
        write_results(json.loads(args.from_json.read_text()), args.out)
        return 0
    record = ablation.run_ablation(args.preset, seeds=tuple(range(args.seeds)),
                                   steps=args.steps, configs=args.configs,
                                   threads=args.threads)
    record.update(device=device.facts(),
                  command=" ".join(["python -m lowprec.experiments.ablation"] + argv))
    write_results(record, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
