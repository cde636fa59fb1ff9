"""The demo's corpus, model and schedule: small, fast checks of what the demo relies on."""

import builtins
import math

import pytest
import torch
from torch import nn

import lowprec
from lowprec.demo import corpus, model, train


def test_corpus_split_is_deterministic_and_disjoint():
    a, b = corpus.load(), corpus.load()
    assert a.sha256 == b.sha256 and a.name == "pydoc_data.topics"
    assert torch.equal(a.val, b.val)
    total = len(a.train) + len(a.val)
    assert len(a.val) == total - int(total * (1 - corpus.VAL_FRACTION))


def test_batches_are_next_byte_pairs_and_repeat_per_seed():
    c = corpus.load()
    x, y = next(c.train_batches(4, 16, seed=3))
    x2, _ = next(c.train_batches(4, 16, seed=3))
    x3, _ = next(c.train_batches(4, 16, seed=4))
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert torch.equal(x, x2) and not torch.equal(x, x3)
    val = c.val_batches(4, 16, n_batches=3)
    assert len(val) == 3 and all(v[0].shape == (4, 16) for v in val)


def test_fallback_corpus_when_pydoc_data_is_stripped(monkeypatch):
    real_import = builtins.__import__

    def no_pydoc_data(name, *args, **kwargs):
        if name.startswith("pydoc_data"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pydoc_data)
    c = corpus.load()
    assert c.name.startswith("stdlib sources") and len(c.train) > 100_000


def test_corpus_errors_name_the_values():
    with pytest.raises(ValueError, match="seq_len=64 needs at least 66"):
        next(corpus.Corpus("tiny", torch.zeros(600, dtype=torch.uint8)).val_batches(1, 64, 1))
    with pytest.raises(ValueError, match="val_fraction must be in"):
        corpus.Corpus("x", torch.zeros(10, dtype=torch.uint8), val_fraction=1.5)


def test_model_config_rejects_non_nvfp4_widths():
    with pytest.raises(ValueError, match="d_model must be a multiple of 16.*got 40"):
        model.GPTConfig(d_model=40)


def test_model_head_is_tied_and_not_a_linear():
    m = model.GPT(model.GPTConfig(d_model=32, n_layer=2, n_head=2, seq_len=16))
    names = [name for name, mod in m.named_modules() if isinstance(mod, nn.Linear)]
    assert len(names) == 8 and all(name.startswith("blocks.") for name in names)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randint(256, (2, 2, 16), generator=gen)
    assert m(x).shape == (2, 16, 256)
    # N(0, 0.02) weights: near-uniform predictions of random targets, loss ~ ln 256.
    loss = m(x, y)
    assert loss.dim() == 0 and abs(loss.item() - math.log(256)) < 0.1, loss.item()
    # convert's default rule sees the 2 blocks and keeps the last in BF16.
    plan = lowprec.convert(m).lowprec_plan
    assert [layer.precisions()[0] for layer in plan] == ["nvfp4"] * 4 + ["bf16"] * 4


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    cfg = train.TrainConfig(steps=100, lr=1.0, warmup_fraction=0.1, min_lr_fraction=0.1)
    lrs = [train.lr_at(step, cfg) for step in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[-1] == pytest.approx(0.1, abs=1e-3)
