"""Analytic FLOP and byte counts per op: the Medusa paper's roofline accounting, as pure functions.

Notation: b batch, n query tokens, s keys attended per query, H heads, H_kv KV heads (GQA),
d head dim, h hidden size, I intermediate size, e bytes per element. Every count is for ONE decoder
layer (lm_head, embedding, final norm: once per step). Bytes are the fewest that must cross device
memory: each input read once, each output written once, weights read once per step (they are
shared by the whole batch).

Two op sets: the **paper's ops** (:data:`ALL_OPS`: the linears, qk/softmax/pv and the LM head; the
analytic tables and the paper-style charts) and the **step's ops** (:data:`STEP_LAYER_OPS` and
:data:`STEP_MODEL_OPS`: every op a Llama decoder step launches, the paper's plus the element-wise
ones — RMSNorms, rotary embedding, the KV-cache write, residual adds, SiLU·up, the embedding
lookup). Step totals (:func:`step_ops`, :func:`step_cost`) and every prediction use the step's ops.
The step itself is defined once, by :func:`step_shape`: what the real step runs (query tokens,
keys, positions the Medusa heads run on).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from ..core.errors import ConfigError
from ..models.source import ModelDims

SOFTMAX_FLOPS_PER_ELEMENT = 5
"""Softmax convention: max, subtract, exp, sum, divide = 5 FLOPs per score element."""

RMSNORM_FLOPS_PER_ELEMENT = 4
"""RMSNorm convention: square, sum, scale by the row's 1/rms, multiply by the weight = 4 FLOPs per element
(the per-row mean, epsilon and rsqrt are O(rows), not counted)."""
SILU_MUL_FLOPS_PER_ELEMENT = 5
"""SiLU·up convention: silu(g) = g / (1 + exp(-g)) is exp, add, divide, multiply (4), times up (1)."""
ROTARY_FLOPS_PER_ELEMENT = 3
"""Rotary embedding convention: x·cos + rotate_half(x)·sin = 2 multiplies + 1 add per element."""

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
"""Measured time of a step that no op row covers: RoPE, residual adds, SiLU·up, the in-place KV-cache
write (the step ops no hook reaches), mask handling and the Medusa heads' glue (stacking their outputs).
Timed in the instrumented pass as that pass's whole interval minus every op interval in it; so the
per-op rows (x calls) plus ``remainder`` add up to the instrumented step."""
UNCOUNTED_OPS = {REMAINDER_OP: "a mix of the step's unhooked element-wise ops and glue; no FLOP or byte count "
                               "is claimed for it (the predictor predicts its unhooked ops' time)"}
"""Measured ops the cost model counts nothing for, with the reason (metrics give them NaN FLOPs/bytes)."""
MODEL_OPS = ("lm_head", "medusa_heads", REMAINDER_OP, "step")
"""Ops that run once per step (not per layer): the LM head, the Medusa heads, the remainder, and the whole step."""

NORM_OPS = ("input_norm", "post_attn_norm", "final_norm")
"""The RMSNorms: before attention and before the MLP in every layer, and the final norm once per step."""
ELEMENTWISE_LAYER_OPS = ("input_norm", "rotary", "kv_write", "attn_residual", "post_attn_norm", "silu_mul",
                         "mlp_residual")
"""Per-layer ops the paper does not count; all element-wise (OI well below 1 FLOP/B), none in :data:`ALL_OPS`."""
STEP_LAYER_OPS = ("input_norm", "q_proj", "k_proj", "v_proj", "rotary", "kv_write", "qk", "softmax", "pv", "o_proj",
                  "attn_residual", "post_attn_norm", "gate_proj", "up_proj", "silu_mul", "down_proj", "mlp_residual")
"""Every op of one Llama decoder layer, in the order the layer runs them."""
STEP_MODEL_OPS = ("embedding", "final_norm", "lm_head")
"""Every once-per-step op of the base model: the embedding lookup before the layers, the final norm and
the LM head after them (the Medusa heads come on top, :func:`medusa_heads_cost`)."""
HOOKED_OPS = ("input_norm", "post_attn_norm", "final_norm", "embedding")
"""Step ops beyond the paper's that the measured sweep times with forward hooks on their modules; the
others (rotary, kv_write, residual adds, silu_mul) run inside module code no hook reaches and stay in
the step's unhooked remainder."""
MEDUSA_HEADS_CHOICES = ("tree", "accepted")
"""Where the Medusa step runs its heads (:func:`step_shape`): on every tree token (Medusa's reference
``tree_decoding``; the default) or on the accepted token only (one position per sequence)."""


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


def rms_norm(b: int, n: int, h: int, e: int) -> Cost:
    """RMSNorm of b·n rows of h: read the rows and the weight, write the rows."""
    return Cost(RMSNORM_FLOPS_PER_ELEMENT * b * n * h, e * (2 * b * n * h + h))


def residual_add(b: int, n: int, h: int, e: int) -> Cost:
    """x + f(x) over b·n rows of h: read two, write one."""
    return Cost(b * n * h, e * 3 * b * n * h)


def silu_mul(b: int, n: int, inter: int, e: int) -> Cost:
    """silu(gate) · up over b·n rows of I: read gate and up, write the product."""
    return Cost(SILU_MUL_FLOPS_PER_ELEMENT * b * n * inter, e * 3 * b * n * inter)


def rotary(b: int, n: int, heads: int, kv_heads: int, d: int, e: int) -> Cost:
    """Rotary embedding of q (H heads) and k (H_kv heads): read and write both, read cos and sin (b·n·d each)."""
    elements = b * n * (heads + kv_heads) * d
    return Cost(ROTARY_FLOPS_PER_ELEMENT * elements, e * (2 * elements + 2 * b * n * d))


def kv_write(b: int, n: int, kv_heads: int, d: int, e: int) -> Cost:
    """The step's new K and V (n tokens) read and written into the cache in place; no arithmetic."""
    return Cost(0, e * 2 * 2 * b * n * kv_heads * d)


def embedding(b: int, n: int, h: int, e: int) -> Cost:
    """Embedding lookup: b·n rows of h gathered and written (the int64 ids, 8·b·n bytes, not counted)."""
    return Cost(0, e * 2 * b * n * h)


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
    if op in NORM_OPS:
        return rms_norm(b, n, h, e)
    if op in ("attn_residual", "mlp_residual"):
        return residual_add(b, n, h, e)
    if op == "silu_mul":
        return silu_mul(b, n, dims.intermediate, e)
    if op == "rotary":
        return rotary(b, n, dims.heads, dims.kv_heads, dims.head_dim, e)
    if op == "kv_write":
        return kv_write(b, n, dims.kv_heads, dims.head_dim, e)
    if op == "embedding":
        return embedding(b, n, h, e)
    raise ValueError(f"unknown op {op!r}; ops are {', '.join(STEP_LAYER_OPS + STEP_MODEL_OPS)}")


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


class StepTerm(NamedTuple):
    """One op of a step: its name, its cost (one run) and how many times the step runs it."""

    op: str
    cost: Cost
    times: int


class StepShape(NamedTuple):
    """What one decode step runs, per sequence: query tokens, keys each query attends, and the positions
    the Medusa heads run on (0: no heads)."""

    q_len: int
    keys: int
    heads_tokens: int


def step_shape(phase: str, candidates: int, kv_len: int, medusa_heads: str = "tree") -> StepShape:
    """The one definition of a decode step, shared by the analytic and the measured speedup, the
    predictor and the best-tree search (the paper's tables keep :func:`phase_shape`).

    ``ar``: 1 query token on a cache of ``kv_len``; ``medusa``: ``candidates`` tree tokens. Either way the
    queries attend the cache *and the step's own tokens* (keys = kv_len + q_len), as the real step does
    (the new K/V are written before attention; the tree mask hides non-ancestors, it does not skip
    them). The Medusa heads run on every tree token (``medusa_heads="tree"``, Medusa's reference
    ``tree_decoding``) or on the accepted token only (``"accepted"``: one position per sequence, the
    hidden state the next proposals are made from); ``ar`` runs no heads.
    """
    if medusa_heads not in MEDUSA_HEADS_CHOICES:
        raise ValueError(f"medusa_heads must be one of {', '.join(MEDUSA_HEADS_CHOICES)}, got {medusa_heads!r}")
    if phase == "ar":
        return StepShape(1, kv_len + 1, 0)
    if phase == "medusa":
        return StepShape(candidates, kv_len + candidates, candidates if medusa_heads == "tree" else 1)
    raise ValueError(f"unknown step phase {phase!r}; phases are ar, medusa")


def step_ops(dims: ModelDims, b: int, n: int, s: int, e: int, layers: int, num_heads: int = 0,
             head_layers: int = MEDUSA_HEAD_LAYERS, fused: bool = False, heads_tokens: int | None = None
             ) -> list[StepTerm]:
    """A whole step as :class:`StepTerm`\\ s: every op of :data:`STEP_LAYER_OPS` ``layers`` times, every op
    of :data:`STEP_MODEL_OPS` once (on n tokens), and (when ``num_heads``) the Medusa heads on
    ``heads_tokens`` tokens per sequence (default n)."""
    ops = [StepTerm(op, op_cost(op, dims, b, n, s, e, fused), layers) for op in STEP_LAYER_OPS]
    ops += [StepTerm(op, op_cost(op, dims, b, n, s, e, fused), 1) for op in STEP_MODEL_OPS]
    if num_heads:
        tokens = n if heads_tokens is None else heads_tokens
        ops.append(StepTerm("medusa_heads", medusa_heads_cost(dims, b, tokens, e, num_heads, head_layers), 1))
    return ops


def step_cost(dims: ModelDims, b: int, n: int, s: int, e: int, layers: int, medusa: bool, num_heads: int,
              head_layers: int = MEDUSA_HEAD_LAYERS, fused: bool = False, heads_tokens: int | None = None) -> Cost:
    """A whole step's FLOPs and bytes (see :func:`step_ops`); Medusa heads only for a medusa step."""
    ops = step_ops(dims, b, n, s, e, layers, num_heads if medusa else 0, head_layers, fused, heads_tokens)
    return Cost(sum(t.times * t.cost.flops for t in ops), sum(t.times * t.cost.bytes for t in ops))


def row_cost(op: str, phase: str, dims: ModelDims, b: int, n: int, s: int, e: int, layers: int,
             num_heads: int, head_layers: int = MEDUSA_HEAD_LAYERS, heads_tokens: int | None = None) -> Cost:
    """Cost of one measured row's op at the shapes it ran (``heads_tokens``: positions per sequence the
    Medusa heads ran on; default n, all of them). Ops in :data:`UNCOUNTED_OPS` have none: ValueError."""
    if op in UNCOUNTED_OPS:
        raise ValueError(f"op {op!r} has no analytic cost: {UNCOUNTED_OPS[op]}")
    if op in STEP_LAYER_OPS or op in STEP_MODEL_OPS:
        return op_cost(op, dims, b, n, s, e, fused=False)
    if op == FUSED_ATTENTION_OP:
        return attention_fused(b, n, s, dims.heads, dims.kv_heads, dims.head_dim, e)
    if op == "medusa_heads":
        return medusa_heads_cost(dims, b, n if heads_tokens is None else heads_tokens, e, num_heads, head_layers)
    if op == "step":
        return step_cost(dims, b, n, s, e, layers, phase == "medusa", num_heads, head_layers,
                         heads_tokens=heads_tokens)
    raise ConfigError(f"measured rows: unknown op {op!r}; known ops are "
                      f"{', '.join(STEP_LAYER_OPS + STEP_MODEL_OPS + (FUSED_ATTENTION_OP,) + MODEL_OPS[1:])}")


MEASURED_LAYER_OPS = tuple(op for op in STEP_LAYER_OPS if op in LAYER_OPS or op in HOOKED_OPS)
"""The per-layer ops the measured sweep times, in run order."""


def measured_ops(phase: str) -> list[tuple[str, str]]:
    """(op, scope) of every row a measured decode step yields, in output order: the per-layer ops it
    times, the embedding, the final norm, the LM head, the Medusa heads (medusa phase), the remainder,
    then the step."""
    ops = [(op, "layer") for op in MEASURED_LAYER_OPS] + [(op, "model") for op in STEP_MODEL_OPS]
    if phase == "medusa":
        ops.append(("medusa_heads", "model"))
    return ops + [(REMAINDER_OP, "model"), ("step", "model")]


LAUNCHES = {
    **dict.fromkeys(LAYER_LINEAR_OPS + ("lm_head",), 1),  # one GEMM
    "qk": 1,  # one batched GEMM, the scale as its alpha (measure/eager.py); see below for the extras
    "softmax": 1,  # one kernel in the scores' dtype
    "pv": 1,
    FUSED_ATTENTION_OP: 1,
    **dict.fromkeys(NORM_OPS, 6),  # pow, mean, add eps, rsqrt, mul, mul weight (+ 2 casts in 16-bit)
    "rotary": 10,  # per q and k: mul cos, neg, cat (rotate_half), mul sin, add
    "kv_write": 2,  # K and V
    "attn_residual": 1,
    "mlp_residual": 1,
    "silu_mul": 2,  # silu, mul
    "embedding": 1,
}
"""Kernels the eager Llama path (transformers' modules, this package's eager attention) launches per op in
float32; 16-bit adds the casts of :func:`launches`. Counted from the code, pinned by tests/test_costmodel.py
against the installed transformers; used only for the predictor's launch term (launches x per_launch_s). Not
counted: the eager ``qk``'s in-place add of the tree mask (one more kernel in a Medusa step, none for ar) and
its copy of Q where the grouped-query view needs one (n > 1 and batch > 1 or GQA): at most two launches
per layer."""
CAST_LAUNCHES = dict.fromkeys(NORM_OPS, 2)
"""Extra kernels in 16-bit: the norm's cast up to float32 and back."""


def launches(op: str, e: int, num_heads: int = 0, head_layers: int = MEDUSA_HEAD_LAYERS) -> int:
    """Kernels one run of ``op`` launches on the eager path (``e`` bytes per element; Medusa heads: each
    head's residual blocks — linear, SiLU, add — and vocabulary projection, then one stack)."""
    if op == "medusa_heads":
        return num_heads * (3 * head_layers + 1) + 1
    if op not in LAUNCHES:
        raise ValueError(f"no launch count for op {op!r}; ops are {', '.join(LAUNCHES)}, medusa_heads")
    return LAUNCHES[op] + (CAST_LAUNCHES.get(op, 0) if e != 4 else 0)


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


def attainable_flops(oi: float, peak_flops: float, bandwidth: float) -> float:
    """Roofline: min(compute roof, bandwidth × OI)."""
    return min(peak_flops, bandwidth * oi)


def bound(oi: float, peak_flops: float, bandwidth: float) -> str:
    return "memory" if bandwidth * oi < peak_flops else "compute"
