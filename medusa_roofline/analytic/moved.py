"""Bytes the kernels of an op move, beside the paper's count (:mod:`.costmodel`).

The paper's accounting (:mod:`.costmodel`) counts each op's inputs read once and outputs written once, as
the paper defines the op. This module counts the bytes the kernels this project launches for an op actually
read and write: every operand of every kernel it launches, once (re-reads inside one kernel, which caches
absorb or not, are not counted). The formulas mirror medusa_roofline/measure/attention.py,
medusa_roofline/measure/eager.py and the model's modules; tests/test_moved_bytes.py checks them against the
ATen ops launched (medusa_roofline/measure/traffic.py), and docs/bytes.md tabulates them.
"""

from __future__ import annotations

from ..core.errors import ConfigError
from ..models.source import ModelDims
from .costmodel import (FUSED_ATTENTION_OP, LAYER_LINEAR_OPS, MEDUSA_HEAD_LAYERS, NORM_OPS, UNCOUNTED_OPS,
                        attention_fused, linear, measured_ops, op_cost, qk)

UNMODELLED_KERNELS = ("MATH", "not compiled")
"""Fused-backend kernels whose traffic is not modelled (SDPA's unfused MATH path, uncompiled flex): no
moved-byte count is claimed for them."""


UNMODELLED_OPS = ("rotary", "kv_write", "attn_residual", "mlp_residual", "silu_mul")
"""Step ops no measured row times (they run inside module code no hook reaches): their moved bytes are
not modelled (None); the predictor charges them their counted bytes."""


def query_copied(b: int, n: int, heads: int, kv_heads: int) -> bool:
    """Whether the grouped-query GEMM operand ``[b·H_kv, g·n, d]`` needs a copy of Q as the projection
    leaves it (``[b, n, H, d]``-strided): yes for n > 1 unless b = 1 and MHA (then it is a strided view)."""
    return n > 1 and (b > 1 or heads != kv_heads)


def tree_masked_keys(phase: str, n: int) -> int:
    """Key columns the eager path adds the additive mask to: none for ar (its mask hides nothing), the
    tree's last n - 1 for a Medusa step (cached keys and the root are visible to every tree query)."""
    return max(n - 1, 0) if phase == "medusa" else 0


def eager_qk_moved(b: int, n: int, s: int, heads: int, kv_heads: int, d: int, e: int, masked_keys: int = 0) -> int:
    """``eager_qk``: the GEMM reads Q and K and writes the scores (= the counted bytes), plus a copy of Q
    (read + write) when :func:`query_copied`, plus the in-place mask add over ``masked_keys`` columns
    (scores read + written, the mask ``[b, 1, n, ·]`` read)."""
    copy = 2 * b * heads * n * d if query_copied(b, n, heads, kv_heads) else 0
    mask = 2 * b * heads * n * masked_keys + b * n * masked_keys
    return qk(b, n, s, heads, kv_heads, d, e).bytes + e * (copy + mask)


def sdpa_moved(b: int, n: int, s: int, heads: int, kv_heads: int, d: int, e: int, masked: bool) -> int:
    """One fused SDPA call: Q, K, V read, O written, and the additive mask as prepared (``[b, 1, g·n, s]``
    in the query dtype: repeated over the query group for GQA) read once when the point has one. The
    grouped view of Q is made when the point is prepared, outside the timed call."""
    mask = b * (heads // kv_heads) * n * s if masked else 0
    return attention_fused(b, n, s, heads, kv_heads, d, e).bytes + e * mask


def medusa_heads_moved(dims: ModelDims, b: int, n: int, e: int, num_heads: int,
                       head_layers: int = MEDUSA_HEAD_LAYERS) -> int:
    """``MedusaHeads.forward`` on b x n tokens: per head and residual block a biased linear (its counted
    bytes + the bias), SiLU (read + write) and the residual add (two reads, one write), then the vocabulary
    projection (counted); finally ``torch.stack`` copies every head's logits (read + write)."""
    t, h = b * n, dims.hidden
    per_block = linear(b, n, h, h, e).bytes + e * (h + 2 * t * h + 3 * t * h)
    per_head = head_layers * per_block + linear(b, n, h, dims.vocab, e).bytes
    return num_heads * per_head + e * 2 * num_heads * t * dims.vocab


def rms_norm_moved(b: int, n: int, h: int, e: int) -> int:
    """transformers' ``LlamaRMSNorm`` on t = b·n rows of h, computed in float32: a cast up and back when
    e != 4 (each e·t·h + 4·t·h), ``pow`` (8·t·h), ``mean`` (4·t·h + 4·t), ``+ eps`` and ``rsqrt`` (8·t each),
    the row scale (8·t·h + 4·t), then the weight multiply in the model dtype (e·h + 2·e·t·h)."""
    t = b * n
    cast = 2 * (e + 4) * t * h if e != 4 else 0
    return cast + 20 * t * h + 24 * t + e * (h + 2 * t * h)


def embedding_moved(b: int, n: int, h: int, e: int) -> int:
    """``nn.Embedding`` on t = b·n ids: the int64 ids read, the t rows gathered and written (a gather reads
    only its rows, not the whole table)."""
    return 8 * b * n + e * 2 * b * n * h


def moved_bytes(op: str, phase: str, dims: ModelDims, b: int, n: int, s: int, e: int, layers: int, num_heads: int,
                head_layers: int = MEDUSA_HEAD_LAYERS, backend: str = "eager", kernel: str = "",
                heads_tokens: int | None = None) -> int | None:
    """Bytes the kernels of one measured row's op move (see the comment above); None where not modelled.

    Linears (and lm_head): one GEMM, = the counted bytes. Eager ``qk``: :func:`eager_qk_moved`;
    ``softmax`` and ``pv``: one kernel reading and writing what the paper counts (= counted).
    Fused ``attn``: sdpa :func:`sdpa_moved`; compiled flex Q, K, V, O (the block mask's few index
    bytes not counted); SDPA's MATH kernel and uncompiled flex: None. ``medusa_heads``:
    :func:`medusa_heads_moved` on ``heads_tokens`` positions per sequence (default n). The RMSNorms:
    :func:`rms_norm_moved`; ``embedding``: :func:`embedding_moved`. ``step``: every timed op's moved bytes
    times its calls; the ops and glue no op row covers (the ``remainder``: RoPE, residual adds, SiLU·up,
    KV-cache writes, heads glue) are not modelled. The unhooked element-wise ops
    (:data:`UNMODELLED_OPS`: never a measured row): None. Ops in :data:`UNCOUNTED_OPS`: ConfigError, like
    :func:`row_cost`'s ValueError.
    """
    if op in UNMODELLED_OPS:
        return None
    if op in LAYER_LINEAR_OPS or op in ("lm_head", "softmax", "pv"):
        return op_cost(op, dims, b, n, s, e).bytes
    if op == "qk":
        return eager_qk_moved(b, n, s, dims.heads, dims.kv_heads, dims.head_dim, e, tree_masked_keys(phase, n))
    if op == FUSED_ATTENTION_OP:
        if any(k in kernel for k in UNMODELLED_KERNELS):
            return None
        if backend == "sdpa":
            return sdpa_moved(b, n, s, dims.heads, dims.kv_heads, dims.head_dim, e, phase == "medusa")
        return attention_fused(b, n, s, dims.heads, dims.kv_heads, dims.head_dim, e).bytes
    if op == "medusa_heads":
        return medusa_heads_moved(dims, b, n if heads_tokens is None else heads_tokens, e, num_heads, head_layers)
    if op in NORM_OPS:
        return rms_norm_moved(b, n, dims.hidden, e)
    if op == "embedding":
        return embedding_moved(b, n, dims.hidden, e)
    if op == "step":
        ops = [(o, scope) for o, scope in measured_ops(phase) if o != "step" and o not in UNCOUNTED_OPS]
        per = {o: moved_bytes(o, phase, dims, b, n, s, e, layers, num_heads, head_layers, heads_tokens=heads_tokens)
               for o, _ in ops}
        return sum(per[o] * (layers if scope == "layer" else 1) for o, scope in ops)
    raise ConfigError(f"measured rows: no moved-byte count for op {op!r}")
