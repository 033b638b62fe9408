"""Analytic FLOP and byte counts per op: the Medusa paper's roofline accounting, as pure functions.

Notation: b batch, n query tokens, s keys attended per query, H heads, H_kv KV heads (GQA),
d head dim, e bytes per element. Every count is for ONE decoder layer (lm_head: once).
Bytes are the fewest that must cross device memory: each input read once, each output
written once, weights read once per step (they are shared by the whole batch).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.errors import ConfigError
from ..models.source import ModelDims

SOFTMAX_FLOPS_PER_ELEMENT = 5
"""Softmax convention: max, subtract, exp, sum, divide = 5 FLOPs per score element."""

MEDUSA_HEAD_LAYERS = 1
"""Residual blocks per Medusa head (Medusa-1's, and the default of the heads the sweep builds)."""

LAYER_LINEAR_OPS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ATTENTION_OPS = ("qk", "softmax", "pv")
"""The unfused (eager) attention core, three ops: scores written, softmax, probabilities read."""
LAYER_OPS = LAYER_LINEAR_OPS[:4] + ATTENTION_OPS + LAYER_LINEAR_OPS[4:]
"""The paper's ops of one decoder layer, in the order a layer runs them."""
ALL_OPS = LAYER_OPS + ("lm_head",)
"""The paper's ops: every per-layer op, and the LM head once per step."""
MLP_OPS = LAYER_LINEAR_OPS[4:]
FUSED_ATTENTION_OP = "attn"
"""A measured fused attention kernel (SDPA, FlexAttention): qk + softmax + pv as one op. Not one of the
paper's ops (not in ALL_OPS, not in :func:`op_cost`); counted with :func:`attention_fused`."""
REMAINDER_OP = "remainder"
"""Measured time of a step that no op row covers: embedding, RMSNorms, RoPE, residual adds, SiLU·up,
the in-place KV-cache write, mask handling and the Medusa heads' glue (stacking their outputs).
Timed in the instrumented pass as that pass's whole interval minus every op interval in it; so the
per-op rows (x calls) plus ``remainder`` add up to the instrumented step."""
UNCOUNTED_OPS = {REMAINDER_OP: "a mix of small elementwise ops the paper's accounting does not count; "
                               "no FLOP or byte count is claimed for it"}
"""Measured ops the cost model counts nothing for, with the reason (metrics give them NaN FLOPs/bytes)."""
MODEL_OPS = ("lm_head", "medusa_heads", REMAINDER_OP, "step")
"""Ops that run once per step (not per layer): the LM head, the Medusa heads, the remainder, and the whole step."""


@dataclass(frozen=True)
class Cost:
    flops: int
    bytes: int

    @property
    def oi(self) -> float:
        """Operational intensity in FLOP/byte (inf when nothing must move, e.g. fused softmax)."""
        return self.flops / self.bytes if self.bytes else float("inf")


def linear(b: int, n: int, d_in: int, d_out: int, e: int) -> Cost:
    """y = x W for b*n tokens: weights + input + output traffic."""
    flops = 2 * b * n * d_in * d_out
    return Cost(flops, e * (d_in * d_out + b * n * d_in + b * n * d_out))


def qk(b: int, n: int, s: int, heads: int, kv_heads: int, d: int, e: int, fused: bool = False) -> Cost:
    """Scores Q·Kᵀ. Unfused writes the b·H·n·s score matrix; fused keeps it on chip."""
    flops = 2 * b * heads * n * s * d
    traffic = b * heads * n * d + b * kv_heads * s * d + (0 if fused else b * heads * n * s)
    return Cost(flops, e * traffic)


def softmax(b: int, n: int, s: int, heads: int, e: int, fused: bool = False) -> Cost:
    """Row softmax over the scores: read + write b·H·n·s elements unless fused (then none)."""
    elements = b * heads * n * s
    return Cost(SOFTMAX_FLOPS_PER_ELEMENT * elements, 0 if fused else 2 * e * elements)


def pv(b: int, n: int, s: int, heads: int, kv_heads: int, d: int, e: int, fused: bool = False) -> Cost:
    """P·V: read probabilities (unless fused) and V, write the b·H·n·d output."""
    flops = 2 * b * heads * n * s * d
    traffic = (0 if fused else b * heads * n * s) + b * kv_heads * s * d + b * heads * n * d
    return Cost(flops, e * traffic)


def attention_fused(b: int, n: int, s: int, heads: int, kv_heads: int, d: int, e: int) -> Cost:
    """One fused attention kernel (qk + softmax + pv): all their FLOPs; Q, K, V read once, O written once.

    Equal to fused qk + fused softmax + fused pv: the b·H·n·s score matrix never reaches memory, so
    the OI is no longer capped near n·d/(n+d): for s >> n it tends to 2·n·(H/H_kv)/e FLOP/B (n for
    16-bit MHA). A mask, if any, is not counted.
    """
    parts = (qk(b, n, s, heads, kv_heads, d, e, True), softmax(b, n, s, heads, e, True),
             pv(b, n, s, heads, kv_heads, d, e, True))
    return Cost(sum(c.flops for c in parts), sum(c.bytes for c in parts))


def op_cost(op: str, dims: ModelDims, b: int, n: int, s: int, e: int, fused: bool = False) -> Cost:
    """Cost of one op for b sequences of n query tokens attending to s keys."""
    h, hd = dims.hidden, dims.heads * dims.head_dim
    kv = dims.kv_heads * dims.head_dim
    linears = {
        "q_proj": (h, hd),
        "k_proj": (h, kv),
        "v_proj": (h, kv),
        "o_proj": (hd, h),
        "gate_proj": (h, dims.intermediate),
        "up_proj": (h, dims.intermediate),
        "down_proj": (dims.intermediate, h),
        "lm_head": (h, dims.vocab),
    }
    if op in linears:
        return linear(b, n, *linears[op], e)
    if op == "qk":
        return qk(b, n, s, dims.heads, dims.kv_heads, dims.head_dim, e, fused)
    if op == "softmax":
        return softmax(b, n, s, dims.heads, e, fused)
    if op == "pv":
        return pv(b, n, s, dims.heads, dims.kv_heads, dims.head_dim, e, fused)
    raise ValueError(f"unknown op {op!r}; ops are {', '.join(ALL_OPS)}")


def medusa_heads_cost(dims: ModelDims, b: int, n: int, e: int, num_heads: int,
                      head_layers: int = MEDUSA_HEAD_LAYERS) -> Cost:
    """K Medusa heads on b x n tokens: each ``head_layers`` residual ``hidden x hidden`` linears
    (+ SiLU + add) then a ``hidden x vocab`` projection. Counted as linears (weights read once,
    input read, output written); biases, SiLU and the residual add are not counted (< 0.1 %)."""
    flops = byts = 0
    for _ in range(num_heads):
        for _ in range(head_layers):
            c = linear(b, n, dims.hidden, dims.hidden, e)
            flops, byts = flops + c.flops, byts + c.bytes
        c = linear(b, n, dims.hidden, dims.vocab, e)
        flops, byts = flops + c.flops, byts + c.bytes
    return Cost(flops, byts)


def step_ops(dims: ModelDims, b: int, n: int, s: int, e: int, layers: int, num_heads: int = 0,
             head_layers: int = MEDUSA_HEAD_LAYERS, fused: bool = False, heads_tokens: int | None = None):
    """A whole step as (cost, times run): each per-layer op ``layers`` times, lm_head on n tokens
    once, and (when ``num_heads``) the Medusa heads on ``heads_tokens`` tokens per sequence (default n)."""
    ops = [(op_cost(op, dims, b, n, s, e, fused), layers) for op in LAYER_OPS]
    ops.append((op_cost("lm_head", dims, b, n, s, e, fused), 1))
    if num_heads:
        ops.append((medusa_heads_cost(dims, b, n if heads_tokens is None else heads_tokens, e, num_heads,
                                      head_layers), 1))
    return ops


def step_cost(dims: ModelDims, b: int, n: int, s: int, e: int, layers: int, medusa: bool, num_heads: int,
              head_layers: int = MEDUSA_HEAD_LAYERS, fused: bool = False, heads_tokens: int | None = None) -> Cost:
    """A whole step's FLOPs and bytes (see :func:`step_ops`); Medusa heads only for a medusa step."""
    ops = step_ops(dims, b, n, s, e, layers, num_heads if medusa else 0, head_layers, fused, heads_tokens)
    return Cost(sum(k * c.flops for c, k in ops), sum(k * c.bytes for c, k in ops))


def row_cost(op: str, phase: str, dims: ModelDims, b: int, n: int, s: int, e: int, layers: int,
             num_heads: int, head_layers: int = MEDUSA_HEAD_LAYERS) -> Cost:
    """Cost of one measured row's op at the shapes it ran (ops in :data:`UNCOUNTED_OPS` have none: ValueError)."""
    if op in UNCOUNTED_OPS:
        raise ValueError(f"op {op!r} has no analytic cost: {UNCOUNTED_OPS[op]}")
    if op in ALL_OPS:
        return op_cost(op, dims, b, n, s, e, fused=False)
    if op == FUSED_ATTENTION_OP:
        return attention_fused(b, n, s, dims.heads, dims.kv_heads, dims.head_dim, e)
    if op == "medusa_heads":
        return medusa_heads_cost(dims, b, n, e, num_heads, head_layers)
    if op == "step":
        return step_cost(dims, b, n, s, e, layers, phase == "medusa", num_heads, head_layers)
    raise ConfigError(f"measured rows: unknown op {op!r}; known ops are "
                      f"{', '.join(ALL_OPS + (FUSED_ATTENTION_OP,) + MODEL_OPS[1:])}")


def measured_ops(phase: str) -> list[tuple[str, str]]:
    """(op, scope) of every row a measured decode step yields, in output order: the per-layer ops, the LM
    head, the Medusa heads (medusa phase), the remainder, then the whole step."""
    ops = [(op, "layer") for op in LAYER_OPS] + [("lm_head", "model")]
    if phase == "medusa":
        ops.append(("medusa_heads", "model"))
    return ops + [(REMAINDER_OP, "model"), ("step", "model")]


def phase_shape(phase: str, candidates: int, kv_len: int) -> tuple[int, int]:
    """(query tokens n, keys s) of a phase, in the paper's accounting.

    init: prefill of kv_len tokens (n = s = kv_len); ar: 1 token on a cache of kv_len;
    medusa: n tree tokens on a cache of kv_len (the tree's own keys are not counted).
    """
    if phase == "init":
        return kv_len, kv_len
    if phase == "ar":
        return 1, kv_len
    if phase == "medusa":
        return candidates, kv_len
    raise ValueError(f"unknown phase {phase!r}; phases are init, ar, medusa")


# ---------------------------------------------------------------------------------------------- moved bytes
# The paper's accounting above counts each op's inputs read once and outputs written once, as the paper
# defines the op. What follows counts the bytes the kernels this project launches for an op actually read
# and write: every operand of every kernel it launches, once (re-reads inside one kernel, which caches
# absorb or not, are not counted). The formulas mirror medusa_roofline/measure/attention.py and the
# model's modules; tests/test_costmodel.py checks them against the ATen ops launched
# (medusa_roofline/measure/traffic.py).

UNMODELLED_KERNELS = ("MATH", "not compiled")
"""Fused-backend kernels whose traffic is not modelled (SDPA's unfused MATH path, uncompiled flex): no
moved-byte count is claimed for them."""


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


def moved_bytes(op: str, phase: str, dims: ModelDims, b: int, n: int, s: int, e: int, layers: int, num_heads: int,
                head_layers: int = MEDUSA_HEAD_LAYERS, backend: str = "eager", kernel: str = "") -> int | None:
    """Bytes the kernels of one measured row's op move (see the comment above); None where not modelled.

    Linears (and lm_head): one GEMM, = the counted bytes. Eager ``qk``: :func:`eager_qk_moved`;
    ``softmax`` and ``pv``: one kernel reading and writing what the paper counts (= counted).
    Fused ``attn``: sdpa :func:`sdpa_moved`; compiled flex Q, K, V, O (the block mask's few index
    bytes not counted); SDPA's MATH kernel and uncompiled flex: None. ``medusa_heads``:
    :func:`medusa_heads_moved`. ``step``: every timed op's moved bytes times its calls; the glue no op
    row covers (the ``remainder``: embedding, norms, RoPE, residual adds, SiLU·up, KV-cache writes) is not
    modelled. Ops in :data:`UNCOUNTED_OPS`: ConfigError, like :func:`row_cost`'s ValueError.
    """
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
        return medusa_heads_moved(dims, b, n, e, num_heads, head_layers)
    if op == "step":
        ops = [o for o, _ in measured_ops(phase) if o != "step" and o not in UNCOUNTED_OPS]
        per = {o: moved_bytes(o, phase, dims, b, n, s, e, layers, num_heads, head_layers) for o in ops}
        return sum(v * (layers if o in LAYER_OPS else 1) for o, v in per.items())
    raise ConfigError(f"measured rows: no moved-byte count for op {op!r}")


def attainable_flops(oi: float, peak_flops: float, bandwidth: float) -> float:
    """Roofline: min(compute roof, bandwidth × OI)."""
    return min(peak_flops, bandwidth * oi)


def bound(oi: float, peak_flops: float, bandwidth: float) -> str:
    return "memory" if bandwidth * oi < peak_flops else "compute"
