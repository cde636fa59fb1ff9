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
