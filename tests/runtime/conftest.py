import pytest
import torch

from quota.quantize.gptq import one_cpu_thread

from tests.runtime.models import left_pad, n_visual, pixels, prompt, tiny_llava


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny matmuls run far faster on one thread than on two contended ones; restored afterwards."""
    with one_cpu_thread(torch.device("cpu")):
        yield


@pytest.fixture(scope="module")
def llava():
    torch.manual_seed(0)
    return tiny_llava()


@pytest.fixture(scope="module")
def batch3(llava):
    """Three left-padded prompts of different lengths, their images, and the unpadded rows."""
    n = n_visual(llava)
    rows = [prompt(n, 3, 5, 0), prompt(n, 1, 2, 1), prompt(n, 4, 9, 2)]
    ids, mask = left_pad(rows)
    return ids, mask, pixels(3, seed=3), rows
