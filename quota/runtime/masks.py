"""Boolean attention masks (True = attend) built per layer from a per-sample key-validity mask.

Layers hold different numbers of tokens after pruning, so each layer gets its own mask, built from
that layer's ``valid`` ``[B, S_l]`` (False on left padding). Causality is by index, which after
compaction is still original order. A padding query attends to itself only, so no row is empty
(an all-masked row would give NaN in SDPA and poison later layers through masked keys).

:func:`check_prompt` is the runtime's check of a prompt batch before any of this: what it can and cannot
detect is in its docstring.
"""

from __future__ import annotations

import torch

from quota.runtime.positions import InputError, PaddingError


def check_prompt(input_ids, attention_mask=None, pad_token_id: int | None = None) -> torch.Tensor:
    """Check a prompt batch and return its attention mask ``[B, S]`` (all ones when none is given).

    Raises :class:`InputError` (a ``ValueError``) naming the argument when ``input_ids`` is not an integer
    tensor ``[B, S]`` with ``B, S >= 1``, or ``attention_mask`` is not ``[B, S]`` of 0/1 values, and
    :class:`PaddingError` (also a ``ValueError``) for padding the runtime would read wrongly. What is
    detectable:

    - with ``attention_mask``: right padding, exactly (a row whose last column is 0);
    - without it, only through ``pad_token_id``: a row ending in the pad id is taken as right-padded (as
      transformers warns), and rows starting with different numbers of pad ids as left-padded without a
      mask; both are refused. Rows that all start alike, or a model without a pad id, cannot be told apart
      from text: such a batch is taken as unpadded. Passing ``attention_mask`` turns the guess off.
    """
    if not torch.is_tensor(input_ids) or input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
        got = f"dtype {input_ids.dtype}" if torch.is_tensor(input_ids) else type(input_ids).__name__
        raise InputError(f"input_ids must be an integer tensor [B, S] of token ids, got {got}")
    if input_ids.dim() != 2 or input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise InputError(f"input_ids must be [B, S] with B >= 1 and S >= 1, got shape {tuple(input_ids.shape)}")
    shape = tuple(input_ids.shape)
    if attention_mask is None:
        _check_unmasked_padding(input_ids, pad_token_id)
        return torch.ones_like(input_ids)
    if not torch.is_tensor(attention_mask) or tuple(attention_mask.shape) != shape:
        got = tuple(attention_mask.shape) if torch.is_tensor(attention_mask) else type(attention_mask).__name__
        raise InputError(f"attention_mask must have input_ids' shape [B, S] = {shape}, got {got}")
    binary = (attention_mask == 0) | (attention_mask == 1)  # [B, S]
    if not bool(binary.all()):
        bad = attention_mask[~binary].unique()[:4].tolist()
        raise InputError(f"attention_mask must hold only 0 and 1 [B, S], got values {bad}")
    last = attention_mask[:, -1] == 1  # [B]
    if not bool(last.all()):
        rows = (~last).nonzero().flatten()[:4].tolist()
        raise PaddingError(
            f"attention_mask rows {rows} end with 0: inputs must be left-padded (the last column a real token in "
            f"every row); right padding is not supported"
        )
    return attention_mask


def _check_unmasked_padding(input_ids: torch.Tensor, pad_token_id: int | None) -> None:
    """Refuse what looks like padding in ``input_ids`` ``[B, S]`` given without a mask (see :func:`check_prompt`)."""
    if pad_token_id is None:
        return
    is_pad = input_ids == int(pad_token_id)  # [B, S]
    ends = is_pad[:, -1]  # [B]
    if bool(ends.any()):
        rows = ends.nonzero().flatten()[:4].tolist()
        raise PaddingError(
            f"input_ids rows {rows} end with the pad token id {int(pad_token_id)}, which looks like right padding: "
            f"left-pad the batch and pass attention_mask [B, S] = {tuple(input_ids.shape)} (a mask also says a "
            f"row is not padded)"
        )
    leading = is_pad.int().cummin(dim=1).values.sum(1)  # [B] pad ids before each row's first other token
    if bool((leading != leading[0]).any()):
        raise PaddingError(
            f"input_ids rows start with {leading[:8].tolist()} pad tokens (id {int(pad_token_id)}) but no "
            f"attention_mask was given: pass attention_mask [B, S] = {tuple(input_ids.shape)}"
        )


def prefill_mask(valid: torch.Tensor) -> torch.Tensor:
    """``[B, 1, S, S]`` bool: query ``i`` attends to key ``j <= i`` if ``valid[j]``, and always to itself."""
    s = valid.shape[1]
    idx = torch.arange(s, device=valid.device)
    causal = idx[None, :] <= idx[:, None]  # [S, S]
    allowed = (causal[None] & valid[:, None, :]) | torch.eye(s, dtype=torch.bool, device=valid.device)[None]
    return allowed[:, None]


def decode_mask(key_valid: torch.Tensor) -> torch.Tensor:
    """``[B, 1, 1, K]`` bool for one new query over a layer's ``K`` cached keys (the new token included)."""
    return key_valid[:, None, None, :]
