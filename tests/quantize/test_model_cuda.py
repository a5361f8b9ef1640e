"""Calibration on a GPU: GPTQ and the activation-clip search run where the model lives and choose what they
choose on the CPU."""

import torch

from quota.quant.config import QuantConfig
from quota.quantize.model import quantize_model
from tests.kernels.kernel_checks import requires_cuda
from tests.runtime.models import left_pad, n_visual, pixels, prompt, tiny_llava


@requires_cuda
def test_gptq_with_clip_search_on_cuda_matches_cpu():
    torch.manual_seed(0)
    model = tiny_llava()
    n = n_visual(model)
    ids, mask = left_pad([prompt(n, 3, 5, 0), prompt(n, 1, 2, 1)])
    batch = {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels(2, seed=3)}
    config = QuantConfig(weight_method="gptq", a_clip_search=True, kv_group_size=16, impl="reference")
    cpu = quantize_model(model, config, [batch])
    gpu = quantize_model(model.cuda(), config, [{k: v.cuda() for k, v in batch.items()}])
    ratios = lambda m: [x.a_clip_ratio for x in m.modules() if hasattr(x, "a_clip_ratio")]  # noqa: E731
    assert ratios(cpu) and len(ratios(cpu)) == len(ratios(gpu))
    agree = sum(a == b for a, b in zip(ratios(cpu), ratios(gpu))) / len(ratios(cpu))
    assert agree >= 0.8  # float32 reductions differ between devices; the grid choice rarely does
    assert all(p.is_cuda for p in gpu.parameters()) and all(b.is_cuda for b in gpu.buffers())
