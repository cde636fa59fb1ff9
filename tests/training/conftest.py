import pytest
import torch


@pytest.fixture(autouse=True)
def one_cpu_thread():
    """The tensors here are tiny: with several OpenMP threads the synchronisation costs
    more than the work (a tiny-GPT step measured 17x slower with 2 threads than 1 on a
    shared 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class RecordingKernels:
    """A device's kernel table whose quantize functions record ``(op, kwargs, result)``.

    The training layer calls its kernels through ``lowprec.linear_layer.kernel_table``
    (resolved once per device), so replacing that function sees every kernel a layer
    runs, whatever the backend.
    """

    QUANTIZE_OPS = ("quantize_nvfp4", "quantize_row_col", "quantize_weight_2d",
                    "quantize_fp8", "quantize_fp8_row_col")

    def __init__(self, table, calls):
        self._table, self.calls = table, calls

    def __getattr__(self, op):
        impl = getattr(self._table, op)
        if op not in self.QUANTIZE_OPS:
            return impl

        def call(*args, **kwargs):
            result = impl(*args, **kwargs)
            self.calls.append((op, kwargs, result))
            return result
        return call


@pytest.fixture
def kernel_calls(monkeypatch):
    """Every quantize kernel the training layer runs, in order: ``(op, kwargs, result)``."""
    from lowprec import linear_layer

    calls = []
    table_of = linear_layer.kernel_table
    monkeypatch.setattr(linear_layer, "kernel_table",
                        lambda device: RecordingKernels(table_of(device), calls))
    return calls
