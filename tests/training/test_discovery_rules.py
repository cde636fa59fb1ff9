"""The default plan's structural rules (``lowprec.discovery``, ``lowprec.policy``), one
small model each (issue 22, mutants #5): a tied LM head names its embedding; a block
list's name is a whole path component (``blocks`` does not hold ``blocks2``); a block
list's children share one class; the linear router of a ``ModuleList``-of-experts
layout stays BF16.

Mutants caught (each applied by hand to a copy of discovery.py, each fails one test):
the tied-to-embedding reason never set; the block-list prefix without its dot; the
one-class check of a block list removed; ``_is_linear_router`` without its
``ModuleList`` branch.
"""

from torch import nn

from lowprec.discovery import find_layers
from lowprec.moe import ROUTER_REASON
from lowprec.policy import default_plan

D = 32


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(D, D)


class OtherBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(D, D)


def test_a_tied_lm_head_names_its_embedding():
    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(64, D)
            self.blocks = nn.ModuleList([Block() for _ in range(4)])
            self.lm_head = nn.Linear(D, 64, bias=False)
            self.lm_head.weight = self.embed.weight            # tied

    plan = default_plan(find_layers(LM()))
    head = plan["lm_head"]
    assert head.precisions() == ("bf16",) * 3
    assert head.reason.endswith("; weight tied to embedding 'embed'"), head.reason
    assert "tied" not in plan["blocks.0.fc"].reason


def test_a_block_list_name_is_a_whole_path_component():
    """``blocks2.fc`` is not in block 2 of ``blocks`` (3 blocks, so block 2 is the BF16
    tail): it lies outside every block list."""
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([Block() for _ in range(3)])
            self.blocks2 = Block()

    plan = default_plan(find_layers(Model()))
    outside = plan["blocks2.fc"]
    assert outside.block_list is None
    assert outside.reason == "outside the repeated block lists (e.g. LM head)"
    assert plan["blocks.2.fc"].block_list == "blocks"
    assert plan["blocks.0.fc"].precisions() == ("nvfp4",) * 3


def test_a_list_of_blocks_of_different_classes_is_no_block_list():
    """Children of two classes are not repeated blocks: no block list, so every layer
    takes the recipe (none is a BF16 tail)."""
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([Block(), Block(), OtherBlock()])

    plan = default_plan(find_layers(Model()))
    assert plan.meta["block_lists"] == {}
    for layer in plan:
        assert layer.block_list is None
        assert layer.reason == "default recipe (no repeated blocks found)"
        assert layer.precisions() == ("nvfp4",) * 3
    # the same list with one class is a block list with a BF16 tail
    same = nn.Module()
    same.layers = nn.ModuleList([Block(), Block(), Block()])
    assert default_plan(find_layers(same))["layers.2.fc"].precisions() == ("bf16",) * 3


def test_the_linear_router_of_a_module_list_of_experts_stays_bf16():
    """Older MoE layouts: ``gate = nn.Linear(H, E)`` beside ``experts = ModuleList`` of E
    expert MLPs. The router's N is E (16, a multiple of 16, so nothing else forces it)."""
    class Expert(nn.Module):
        def __init__(self):
            super().__init__()
            self.w1 = nn.Linear(D, 64)
            self.w2 = nn.Linear(64, D)

    class MoE(nn.Module):
        def __init__(self, e=16):
            super().__init__()
            self.gate = nn.Linear(D, e, bias=False)
            self.experts = nn.ModuleList([Expert() for _ in range(e)])

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([MoE() for _ in range(4)])

    plan = default_plan(find_layers(Model()))
    router = plan["blocks.0.gate"]
    assert router.reason == ROUTER_REASON
    assert router.precisions() == ("bf16",) * 3
    assert plan["blocks.0.experts.0.w1"].precisions() == ("nvfp4",) * 3
    # not a router: a linear of the same shape whose parent holds no experts
    plain = nn.Module()
    plain.blocks = nn.ModuleList([nn.Sequential(nn.Linear(D, 16)) for _ in range(4)])
    assert default_plan(find_layers(plain))["blocks.0.0"].reason == "default recipe"
