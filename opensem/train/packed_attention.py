"""Attention for padding-free batches that stays within each example.

A padding-free batch is every example of the batch laid end to end in one row, told apart only
by position ids that restart at 0. Stock `sdpa` handles that with one dense block-diagonal mask
over the whole row: for 8 open-book examples of ~290 tokens it computes attention over 2,300 x
2,300 positions, 8x the work of attending within each example, and without the causal shortcut.
Profiled on 2 CPU cores that was half of a training step (docs/measurements/train-speed.md).

`sdpa_per_example` runs the same sdpa kernel once per example, causal, with no mask: the same
numbers (a test checks it against stock sdpa), a fraction of the work.

A batch padded on the right (the preference stage's rows: prompt and answer, then padding) gets
the same treatment: a query at a real token attends only to keys at or before it, all real, so
the causal rule alone is its mask. Given the padded mask, sdpa on a CPU leaves its causal kernel
for the math path, which also keeps [batch, heads, length, length] weights for the backward;
without it, the causal kernel. Queries at padding then see more keys than before, and nothing
reads their outputs (their labels and log-probabilities are masked).

Anything else (a batch padded on the left, as generation pads it; generation with a cache; a
model whose mask holds a sliding window) goes to stock sdpa unchanged. It is registered with
transformers' own AttentionInterface, the documented way to add an attention implementation; no
library provides a CPU varlen kernel (flash-attn's is CUDA only), which is why this exists.
"""

from __future__ import annotations

NAME = "sdpa_per_example"


def example_bounds(position_ids) -> list[int] | None:
    """[0, end of example 1, ..., row length] for one padding-free row of position ids, or None
    when the row holds a single example (positions that never restart)."""
    import torch

    restarts = torch.nonzero(position_ids[1:] != position_ids[:-1] + 1).flatten() + 1
    if restarts.numel() == 0:
        return None
    return [0, *restarts.tolist(), int(position_ids.shape[0])]


def right_padded_only(module, query, key, attention_mask) -> bool:
    """A whole batch (no cache: as many queries as keys) whose mask is causal with padding on the
    right only: every row's first token is a real one (a row padded on the left masks it) and the
    model's layers have no sliding window (whose limit the mask would carry)."""
    import torch

    if attention_mask is None or attention_mask.dim() != 4 or query.shape[2] != key.shape[2] or query.shape[2] < 2:
        return False
    if getattr(module, "sliding_window", None) is not None:
        return False
    first_key_seen = attention_mask[:, :, -1, 0]  # by each row's last query
    visible = first_key_seen if attention_mask.dtype == torch.bool else first_key_seen == 0
    return bool(visible.all())


def sdpa_per_example(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, is_causal=None, **kwargs):
    """transformers' attention-function signature: query [batch, heads, length, head_dim],
    key/value [batch, kv_heads, length, head_dim]; returns ([batch, length, heads, head_dim], None)."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    position_ids = kwargs.pop("position_ids", None)
    if right_padded_only(module, query, key, attention_mask):
        return sdpa_attention_forward(module, query, key, value, None, dropout=dropout, scaling=scaling, is_causal=True, **kwargs)
    bounds = None
    if position_ids is not None and query.shape[0] == 1 and query.shape[2] == key.shape[2] == position_ids.shape[-1]:
        bounds = example_bounds(position_ids.reshape(-1))
    if bounds is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, position_ids=position_ids, **kwargs)
    outputs = [
        sdpa_attention_forward(module, query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], None, dropout=dropout,
                               scaling=scaling, is_causal=True, **kwargs)[0]
        for a, b in zip(bounds, bounds[1:])
    ]
    return torch.cat(outputs, dim=1), None


def use_per_example_attention(model) -> None:
    """Switch a loaded transformers model (sdpa) to per-example attention for padding-free rows;
    its masks stay sdpa's."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    AttentionInterface.register(NAME, sdpa_per_example)
    AttentionMaskInterface.register(NAME, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    model.set_attn_implementation(NAME)
