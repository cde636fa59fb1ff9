"""NVFP4 share of all weight-matmul MACs under the default plan, for real-size configs.

The models are built on the meta device from transformers configs (no weights, nothing
downloaded): GPT-2 small, T5-small, BART-base, Mixtral 8x7B, Qwen2-MoE A2.7B,
Qwen3-MoE 30B-A3B, Llama 7B. Shares are per-token multiply-adds over every module that
multiplies by a weight it owns (``lowprec.discovery.weight_matmuls``; experts count
top_k of E), so they are FLOP shares when every layer sees the same tokens.

Two steps, so that another lowprec tree (e.g. before this change) can be judged by the
same count:

    PYTHONPATH=<other tree> python lowprec/experiments/matmul_shares.py dump other.json
    python -m lowprec.experiments.matmul_shares compare other.json

(``dump`` runs this file by its path, so that ``lowprec`` is the other tree's, which may
not have this module; the file imports nothing of its own package.)

``dump`` needs only the default plan (``default_plan_of``: ``lowprec.policy``, or
``lowprec.discovery`` / ``lowprec.convert`` in an older tree); ``compare`` prints, per model, the NVFP4 share that the dumped plan
claims over its own layers, its real share over all weight matmuls, and this tree's
default plan's share.
"""

import json
import sys
import warnings

import torch


def configs(t):
    return {
        "gpt2-small": lambda: t.GPT2LMHeadModel(t.GPT2Config()),
        "t5-small": lambda: t.T5ForConditionalGeneration(t.T5Config(
            d_model=512, d_ff=2048, num_layers=6, num_heads=8, d_kv=64)),
        "bart-base": lambda: t.BartForConditionalGeneration(t.BartConfig(
            d_model=768, encoder_layers=6, decoder_layers=6, encoder_ffn_dim=3072,
            decoder_ffn_dim=3072, encoder_attention_heads=12, decoder_attention_heads=12)),
        "mixtral-8x7b": lambda: t.MixtralForCausalLM(t.MixtralConfig()),
        "qwen2-moe-a2.7b": lambda: t.Qwen2MoeForCausalLM(t.Qwen2MoeConfig(
            vocab_size=151936, hidden_size=2048, intermediate_size=5632,
            moe_intermediate_size=1408, shared_expert_intermediate_size=5632,
            num_hidden_layers=24, num_attention_heads=16, num_key_value_heads=16,
            num_experts=60, num_experts_per_tok=4)),
        "qwen3-moe-30b-a3b": lambda: t.Qwen3MoeForCausalLM(t.Qwen3MoeConfig(
            vocab_size=151936, hidden_size=2048, intermediate_size=6144,
            moe_intermediate_size=768, num_hidden_layers=48, num_attention_heads=32,
            num_key_value_heads=4, head_dim=128, num_experts=128, num_experts_per_tok=8)),
        "llama-7b": lambda: t.LlamaForCausalLM(t.LlamaConfig()),
    }


def models():
    import transformers
    for name, make in configs(transformers).items():
        with torch.device("meta"):
            yield name, make()


def nvfp4_macs(plan_layers, macs):
    """NVFP4 MACs of ``{name: [fprop, dgrad, wgrad]}`` (each GEMM a third)."""
    return sum(macs[n] * p.count("nvfp4") / 3 for n, p in plan_layers.items())


def default_plan_of():
    """``model -> its default plan``, in this tree or in an older one that ``dump`` reads
    (there ``default_plan(model)`` sits in lowprec.discovery or lowprec.convert)."""
    try:
        from lowprec.discovery import find_layers
        from lowprec.policy import default_plan as policy_plan
    except ImportError:
        pass
    else:
        return lambda model: policy_plan(find_layers(model))
    try:
        from lowprec.discovery import default_plan
    except ImportError:
        from lowprec.convert import default_plan
    return default_plan


def main(argv):
    default_plan = default_plan_of()
    warnings.simplefilter("ignore")
    if len(argv) != 2 or argv[0] not in ("dump", "compare"):
        print("usage: matmul_shares.py dump FILE | matmul_shares.py compare FILE",
              file=sys.stderr)
        return 2
    if argv[0] == "dump":
        plans = {name: {layer.name: list(layer.precisions()) for layer in default_plan(model)}
                 for name, model in models()}
        with open(argv[1], "w") as f:
            json.dump(plans, f)
        return 0
    from lowprec.discovery import weight_matmuls
    with open(argv[1]) as f:
        other = json.load(f)
    print(f"{'model':18s} {'other claims':>12s} {'other real':>10s} {'this tree':>9s}")
    for name, model in models():
        macs = {e.name: e.macs_per_token for e in weight_matmuls(model)}
        claimed = nvfp4_macs(other[name], macs) / sum(macs[n] for n in other[name])
        real = nvfp4_macs(other[name], macs) / sum(macs.values())
        ours = default_plan(model).summary()["nvfp4"]
        print(f"{name:18s} {100 * claimed:11.1f}% {100 * real:9.1f}% {100 * ours:8.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
