"""Language-model quality against a reference: perplexity, next-token top-1 agreement and KL."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F


@dataclass
class LMQuality:
    perplexity: float
    top1_agreement: float | None = None  # fraction of positions whose argmax equals the reference's
    kl_to_reference: float | None = None  # mean KL(reference || model) per token, nats

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def next_token_logprobs(model, blocks: torch.Tensor, batch_size: int = 4) -> torch.Tensor:
    """Log-probabilities ``[n_blocks, S - 1, V]`` (float32, CPU) of the next token at each position."""
    device = next(model.parameters()).device
    out = []
    for i in range(0, blocks.shape[0], batch_size):
        ids = blocks[i : i + batch_size].to(device)
        logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()
        out.append(F.log_softmax(logits, dim=-1).cpu())
    return torch.cat(out)


def lm_quality(logprobs: torch.Tensor, blocks: torch.Tensor, reference: torch.Tensor | None = None) -> LMQuality:
    """Perplexity of ``blocks`` under ``logprobs``, and agreement/KL with ``reference`` log-probs."""
    targets = blocks[:, 1:]  # [n, S-1]
    nll = -logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    ppl = float(torch.exp(nll.mean()))
    if reference is None:
        return LMQuality(ppl)
    agree = float((logprobs.argmax(-1) == reference.argmax(-1)).float().mean())
    kl = float((reference.exp() * (reference - logprobs)).sum(-1).mean())
    return LMQuality(ppl, agree, kl)
