"""quota: joint low-bit quantization (W4A4 linears, 4-bit KV cache) and solver-scheduled visual-token
pruning for vision-language models."""

__version__ = "0.1.0"

from quota.quant.config import QuantConfig  # noqa: E402
from quota.quant.quantize import quantize_model  # noqa: E402

__all__ = ["QuantConfig", "quantize_model", "__version__"]
