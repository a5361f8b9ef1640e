"""Token-score signals and selection rules by name: what each measures and where it exists. The runtime computes
them (:mod:`quota.runtime.scoring`, :mod:`quota.runtime.prune`); recipes and profiles name them, so their names
live here, below both."""

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
SELECTIONS: dict[str, str] = {
    "topk": "the k best combined scores (ties to the lower index)",
    "divprune": "max-min diversity: greedy farthest point in cosine distance of the hidden states, seeded with "
                "the best-scored token",
    "cdpruner": "conditional DPP: greedy MAP of L = diag(q) S diag(q), S the cosine similarity of the hidden "
                "states, q the min-max normalized combined score",
}
MERGE_RULES: dict[str, str] = {
    "context": "VisionZip's contextual tokens: every dropped token joins the most similar of c targets spread over "
               "the dropped ones (cosine of hidden states); each contextual token is its target plus its group's mean",
    "recycle": "SparseVLM's recycling: the top 30% of the dropped tokens by score are clustered (DPC-KNN) into "
               "min(merge, (int(0.3 (n - k)) + 1) // 10 + 1) tokens, each its cluster's mean",
}


def available_signals(layer: int) -> tuple[str, ...]:
    """Signals that exist when pruning before decoder layer ``layer`` (before layer 0: no attention yet)."""
    return EMBEDDING_SIGNALS if layer == 0 else LAYER_SIGNALS
