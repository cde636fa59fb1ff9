"""What the demo tells its reader: spikes, honest labels, fresh validation numbers."""

import io
import math

import pytest

from lowprec.demo import report
from lowprec.progress import Progress

# Training losses of steps 1-30 of `lowprec demo` (cpu preset, seed 0; measured on this
# project's CPU machine). The NVFP4 run spiked at step 17 (8.22, after ~3.7) and step 23
# (5.48, after ~3.3); the FP32 run did not.
NVFP4_LOSS = [5.49, 5.44, 5.24, 5.16, 5.06, 4.97, 4.83, 4.70, 4.51, 4.26, 4.10, 3.90, 3.79,
              3.63, 3.51, 3.76, 8.22, 3.41, 3.31, 3.26, 3.34, 3.34, 5.48, 3.52, 3.24, 3.23,
              3.24, 3.22, 3.16, 3.19]
FP32_LOSS = [5.49, 5.43, 5.23, 5.16, 5.06, 4.97, 4.83, 4.70, 4.51, 4.27, 4.10, 3.91, 3.79,
             3.76, 3.53, 3.61, 3.44, 3.43, 3.33, 3.29, 3.38, 3.38, 3.22, 3.34, 3.25, 3.30,
             3.28, 3.26, 3.23, 3.27]


def test_the_recorded_spikes_are_found_and_nothing_else():
    """By hand: step 17: 8.22 > 1.3 * median(4.10, 3.90, 3.79, 3.63, 3.51) = 4.93; step
    23: 5.48 > 1.3 * 3.34 = 4.34. FP32's largest rise, 3.38 after a median of 3.33, is
    far from 1.3x."""
    assert report.find_spikes(NVFP4_LOSS) == [[17, 8.22], [23, 5.48]]
    assert report.find_spikes(FP32_LOSS) == []


def test_a_non_finite_loss_is_a_spike():
    assert report.find_spikes([3.0] * 6 + [math.nan]) == [[7, pytest.approx(math.nan,
                                                                            nan_ok=True)]]


def test_the_console_says_which_run_spiked():
    runs = {"bf16": {"label": "fp32", "spikes": []},
            "nvfp4": {"spikes": [[17, 8.2166], [23, 5.4757]]}}
    text = report.spike_summary(runs)
    assert text.splitlines() == [
        "fp32: no training-loss spike",
        "nvfp4: 2 training-loss spike(s) (loss > 1.3x the median of the 5 steps before): "
        "step 17 (8.22), step 23 (5.48)"]


def _run(label, train_loss, final):
    return {"label": label, "train_loss": train_loss, "val": [[0, 5.5], [15, 3.5], [30, 3.2]],
            "final_val_loss": final, "final_train_loss": train_loss[-1], "seconds": 1.0,
            "diverged": False, "nvfp4_share": 0.0, "spikes": report.find_spikes(train_loss)}


def test_loss_table_uses_the_labels():
    runs = {"bf16": _run("fp32", FP32_LOSS, 3.2), "nvfp4": _run("nvfp4", NVFP4_LOSS, 3.1)}
    lines = report.loss_table(runs).splitlines()
    assert "gap vs fp32" in lines[0]
    assert lines[2].startswith("fp32 ") and lines[3].startswith("nvfp4 ")


def test_plot_keeps_spikes_on_a_log_axis(tmp_path, monkeypatch):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    saved = []
    monkeypatch.setattr(plt.Figure, "savefig", lambda fig, path, **kw: saved.append(fig))
    runs = {"fp32": [_run("fp32", FP32_LOSS, 3.2)], "nvfp4": [_run("nvfp4", NVFP4_LOSS, 3.1)]}
    report.plot_losses(runs, tmp_path / "demo.png", "t")
    ax_train = saved[0].axes[0]
    assert ax_train.get_yscale() == "log"
    low, high = ax_train.get_ylim()
    assert low <= min(FP32_LOSS) and high >= 8.22          # the spike is not clipped
    assert "nvfp4 spike" in [t.get_text() for t in ax_train.get_legend().get_texts()]


def test_progress_shows_the_step_of_the_validation_value():
    stream = io.StringIO()
    with Progress("nvfp4", 10, stream=stream) as bar:
        bar.update(7, loss=3.25, **{"val@5": 3.5})
    assert stream.getvalue() == "nvfp4          7/10 0s loss 3.250 val@5 3.500\n"
