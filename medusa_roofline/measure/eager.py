"""The eager attention ops (qk, softmax, pv), moving as little as the paper counts where PyTorch allows it.

They are the paper's unfused path, timed one op at a time by the micro-benchmark
(:mod:`.attention`'s ``eager`` backend) and inside the model by the sweep's timed attention
(:mod:`.instrument`). What each launches, and so moves, is counted by
:func:`medusa_roofline.analytic.moved.moved_bytes` and checked against the ATen ops they launch
(``tests/test_moved_bytes.py``): ``qk`` is one GEMM with the 1/√d scale as its ``alpha`` (plus a copy
of Q when its grouped view needs one, and the mask added over the columns it changes); ``softmax``
one kernel in the scores' dtype; ``pv`` one GEMM.
"""

from __future__ import annotations

import torch
from torch.utils.weak import WeakIdKeyDictionary

_MASKED_FROM = WeakIdKeyDictionary()
"""mask tensor -> (version, first key column it changes): found once per mask, never inside a timed call."""


def masked_from(mask) -> int | None:
    """First key column where the additive ``mask [.., n, keys]`` is non-zero anywhere (None: adding it
    changes nothing, e.g. ar's all-zero mask).

    Columns before it are exactly zero, so adding only ``mask[..., col:]`` gives the same scores. A
    Medusa step's mask is zero over the cached keys and over the tree root's column, so only the last
    n - 1 columns are added. Computed on the first call for a mask object and remembered while the
    object lives (and its version counter, where it has one, is unchanged): the search never runs
    inside a timed repetition.
    """
    if mask is None:
        return None
    version = None if mask.is_inference() else mask._version
    known = _MASKED_FROM.get(mask)
    if known is not None and known[0] == version:
        return known[1]
    touched = (mask != 0).reshape(-1, mask.shape[-1]).any(dim=0).nonzero()
    col = int(touched[0, 0]) if touched.numel() else None
    _MASKED_FROM[mask] = (version, col)
    return col


def grouped_query(query, kv_heads: int):
    """Q ``[b, H, n, d]`` as the batched GEMM's ``[b·H_kv, g·n, d]`` operand (query head j·g + r uses KV
    head j, ``repeat_kv``'s grouping): a view where the layout allows one (n = 1, or b = 1 with MHA, for
    Q as the projection leaves it, ``[b, n, H, d]``-strided), else one contiguous copy."""
    b, heads, n, d = query.shape
    if heads % kv_heads:
        raise ValueError(f"query heads {heads} is not a multiple of key/value heads {kv_heads}")
    return query.reshape(b * kv_heads, (heads // kv_heads) * n, d)


def eager_qk(query, key, scaling: float, mask=None):
    """Scores ``[b, H, n, s]`` = scaling·Q·Kᵀ (+ the additive ``mask``): one GEMM writes them.

    ``query [b, H, n, d]`` (any strides), ``key [b, H_kv, s, d]``. The scale is the GEMM's ``alpha``
    (``baddbmm_`` with ``beta = 0`` into a fresh buffer: nothing is read from it), so no pass scales Q
    or the scores; K is read once per KV head (grouped-query view, :func:`grouped_query`). The mask is
    added in place only over the columns it changes (:func:`masked_from`: none for ar, the last n - 1
    tree columns for a Medusa step), not as a pass over every score.
    """
    b, heads, n, _ = query.shape
    kv_heads, keys = key.shape[1], key.shape[2]
    q = grouped_query(query, kv_heads)
    k = key.reshape(b * kv_heads, keys, key.shape[3])
    scores = torch.empty((b * kv_heads, q.shape[1], keys), dtype=query.dtype, device=query.device)
    scores.baddbmm_(q, k.transpose(1, 2), beta=0.0, alpha=scaling)
    scores = scores.view(b, heads, n, keys)
    col = masked_from(mask)
    if col is not None:
        scores[..., col:].add_(mask[..., col:])
    return scores


def eager_softmax(scores):
    """Softmax over keys, read once and written once in the scores' dtype: PyTorch's softmax kernels
    accumulate 16-bit inputs in float32 inside the kernel, so no float32 copy of the scores is made."""
    return torch.softmax(scores, dim=-1)


def eager_pv(probs, value):
    """P·V: ``probs [b, H, n, s]`` (contiguous), ``value [b, H_kv, s, d]`` -> ``[b, H, n, d]``."""
    b, heads, n, keys = probs.shape
    kv_heads, d = value.shape[1], value.shape[3]
    groups = heads // kv_heads
    if groups == 1:
        return torch.matmul(probs, value)
    return torch.matmul(probs.reshape(b, kv_heads, groups * n, keys), value).view(b, heads, n, d)
