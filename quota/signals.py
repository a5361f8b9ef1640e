"""Token-score signals by name: what each measures and where it exists. The runtime computes them
(:mod:`quota.runtime.scoring`); recipes and profiles name them, so their names live here, below both."""

from __future__ import annotations

SIGNALS: dict[str, str] = {
    "magnitude": "L2 norm of the hidden state entering the layer",
    "attn_last": "attention received from the last prompt token in the previous layer (mean over heads)",
    "attn_text": "attention received from the text tokens after the image in the previous layer",
    "risk": "relative error of the token's normalized input under the next q_proj's activation quantizer",
    "outlier": "max|x| / rms(x) of the token's normalized input to the next layer",
    "vision_attn": "vision-tower attention (CLS query, or mean received), once per image, at every layer",
    "random": "seeded uniform random numbers, one per original visual index and layer",
}
ATTENTION_SIGNALS: tuple[str, ...] = ("attn_last", "attn_text")
EMBEDDING_SIGNALS: tuple[str, ...] = ("magnitude", "risk", "outlier", "vision_attn", "random")
LAYER_SIGNALS: tuple[str, ...] = ("magnitude", "attn_last", "attn_text", "risk", "outlier", "vision_attn", "random")
NORMALIZATIONS: tuple[str, ...] = ("minmax", "rank")


def available_signals(layer: int) -> tuple[str, ...]:
    """Signals that exist when pruning before decoder layer ``layer`` (before layer 0: no attention yet)."""
    return EMBEDDING_SIGNALS if layer == 0 else LAYER_SIGNALS
