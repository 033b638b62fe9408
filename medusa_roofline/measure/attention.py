"""Attention backends for the qk/pv measurements: the paper's eager path beside two fused kernels.

* ``eager`` — three separate steps, what the analytic *unfused* model counts: ``qk`` (Q·Kᵀ, the
  b·H·n·s score matrix written to memory), ``softmax`` and ``pv`` (P·V), each moving as little as
  PyTorch allows: the 1/√d scale is the GEMM's ``alpha`` (no pass over Q or the scores), the additive
  mask is added in place only over the columns it changes (none for ar; the tree's last n - 1 columns
  for Medusa), and softmax reads and writes the scores once in their own dtype (float32 accumulation
  inside the kernel). Hugging Face's eager attention instead scales the *scores* in a second pass,
  adds the mask over every score and runs softmax in float32 with a cast back (in float16 about 20 B
  per score element after the GEMM, against the 4 B softmax is counted for); the results agree to
  rounding. GQA: Q is viewed as ``[b, H_kv, g·n, d]``
  so each KV head is read once, never materialised ``g`` times; that view copies Q once when its
  layout needs it (:func:`.eager.grouped_query`). What each op moves is counted per backend by
  :func:`medusa_roofline.analytic.moved.moved_bytes`.
* ``sdpa`` — :func:`torch.nn.functional.scaled_dot_product_attention` with the tree mask (additive,
  in the query dtype, so no per-call mask conversion) or no mask for ``ar``. The kernel that runs is
  chosen explicitly: the first of :data:`SDPA_PREFERENCE` (FLASH → EFFICIENT → CUDNN → MATH) that
  accepts these inputs, tried one at a time under ``sdpa_kernel([backend])``, is recorded and then
  pinned for the timed calls. FlashAttention takes no arbitrary mask, so Medusa points on CUDA
  usually run EFFICIENT_ATTENTION (or cuDNN); on the CPU FLASH_ATTENTION is PyTorch's fused CPU
  kernel. GQA uses the same grouped-query view as eager (not ``enable_gqa``, which only FLASH and
  MATH support), with the mask repeated over the group once at preparation. The grouped output
  ``[b, H_kv, g·n, d]`` comes back in whatever strides the kernel chose (EFFICIENT_ATTENTION on
  CUDA: ``[b, g·n, H_kv, d]`` in memory), so it is reshaped, never viewed, into ``[b, n, H, d]``.
* ``flex`` — :func:`torch.nn.attention.flex_attention.flex_attention` with a block mask built from
  the Medusa tree by :meth:`FlexState.block_mask`: every cached key visible, tree key j visible to
  tree query i iff ``ancestor_mask[i, j]`` (indexed inside the ``mask_mod``). Compiled with
  ``torch.compile(fullgraph=True, dynamic=False)``: **static shapes, deliberately**. Inductor's
  short-query kernel (``flex_decoding``: query length < 128, a power-of-two GQA ratio) needs a
  static batch and head count; with dynamic shapes batch 1 and batch > 1 silently run different
  Triton kernels under one label, and the CPU flex template does not build with dynamic shapes at
  all. Static shapes compile once per (batch, n, kv_len) point — counted per point (``compiles``,
  from Dynamo's graph counter) and kept outside every timed interval (the first call of a prepared
  point compiles). On CUDA the Triton kernel is not left to Inductor's heuristic: it is chosen by
  the same rule (:func:`flex_triton_kernel`) and forced with ``kernel_options={"BACKEND": ...}``,
  so the ``kernel`` column names the kernel that ran, and a point where it cannot run fails loudly
  instead of switching kernels. Uncompiled flex is a reference implementation that materialises the
  scores (not a fused kernel): it is used only when asked (``compile=False``) or, on the CPU only,
  when compilation fails — the ``kernel`` column then says so. The ``mask_mod`` of one tree size is
  one function object reading ``kv_len`` from a captured tensor.

The fused backends are timed as one op, ``attn`` (qk + softmax + pv in one kernel); the metrics
count it with the fused bound (:func:`medusa_roofline.analytic.costmodel.attention_fused`: Q, K, V read once,
O written once; the mask, ≤ 1 % of K/V for the 33B shapes, is not counted).

:func:`prepare` turns one point's tensors into a :class:`PreparedAttention`: the ops to time as
zero-argument callables over fixed inputs (so each op can be timed on its own, with its own L2
flush), the kernel name, and the output ``[b, n, H, d]`` for checking against eager.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch._dynamo
import torch._dynamo.utils
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import FlexKernelOptions, create_block_mask, flex_attention

from ..analytic.costmodel import FUSED_ATTENTION_OP as FUSED_OP
from ..core.devices import as_device, is_oom
from ..core.errors import ConfigError
from .backends import BACKENDS
from .eager import eager_pv, eager_qk, eager_softmax

log = logging.getLogger(__name__)

SDPA_PREFERENCE = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH")
EAGER_KERNEL = "eager"
FLEX_DECODE_MAX_QUERY = 128
"""Inductor's flex_decoding kernel takes query lengths below this (torch 2.13 ``_use_flex_decoding``)."""
FLEX_TRITON_KERNELS = {"TRITON_DECODE": "Triton flex_decoding kernel", "TRITON": "Triton flex_attention kernel"}
FLEX_FORCES_BACKEND = "BACKEND" in getattr(FlexKernelOptions, "__annotations__", {})
TOLERANCE = {"float32": dict(rtol=1e-4, atol=1e-5), "float16": dict(rtol=2e-3, atol=2e-3),
             "bfloat16": dict(rtol=1.6e-2, atol=1e-2)}
"""Output agreement of a fused backend with eager, by dtype (fused kernels sum in another order)."""


def tolerance(dtype) -> dict:
    name = str(dtype).removeprefix("torch.")
    return TOLERANCE.get(name, TOLERANCE["float16"])


# ------------------------------------------------------------------------------ prepared backends


@dataclass
class PreparedAttention:
    """One point's attention, ready to time: ``calls[op]()`` runs op ``op`` on fixed inputs.

    Hold :meth:`context` while calling (SDPA: the pinned kernel). ``output`` is the attention output
    ``[b, n, H, d]`` of the preparation run (the layout the model's o_proj reads). ``compiles``: graphs
    ``torch.compile`` built while preparing this point (None: nothing is compiled for this backend)."""

    backend: str
    kernel: str
    calls: dict[str, Callable[[], object]]
    output: object
    note: str = ""
    compiles: int | None = None
    _context: Callable[[], contextlib.AbstractContextManager] = field(default=contextlib.nullcontext, repr=False)

    @property
    def ops(self) -> tuple[str, ...]:
        return tuple(self.calls)

    def context(self):
        return self._context()


def prepare_eager(query, key, value, mask, scaling: float) -> PreparedAttention:
    """The three eager ops on fixed inputs: qk from Q/K, softmax from the stored scores, pv from the
    stored probabilities (so each can be timed alone)."""
    scores = eager_qk(query, key, scaling, mask)
    probs = eager_softmax(scores)
    out = eager_pv(probs, value).transpose(1, 2).contiguous()
    calls = {
        "qk": lambda: eager_qk(query, key, scaling, mask),
        "softmax": lambda: eager_softmax(scores),
        "pv": lambda: eager_pv(probs, value),
    }
    return PreparedAttention("eager", EAGER_KERNEL, calls, out)


def _visible_mask(mask):
    """None when an additive mask hides nothing (ar: all keys visible), else the mask itself."""
    if mask is None:
        return None
    return mask if bool((mask < 0).any()) else None


def grouped_output(out, b: int, heads: int, n: int, d: int):
    """SDPA's output over the grouped-query view ``[b, H_kv, g·n, d]`` (any strides) as ``[b, n, H, d]``.

    ``reshape``, not ``view``: EFFICIENT_ATTENTION returns it ``[b, g·n, H_kv, d]``-strided, which no
    view can regroup into ``H = H_kv·g`` heads (the copy is the preparation run's, never timed)."""
    if out.dim() != 4 or out.shape[0] != b or out.shape[3] != d or out.numel() != b * heads * n * d:
        raise RuntimeError(f"SDPA output has shape {tuple(out.shape)}; expected {b * heads * n * d} elements "
                           f"as [b={b}, H_kv, g*n, d={d}] for H={heads}, n={n}")
    return out.reshape(b, heads, n, d).transpose(1, 2).contiguous()


def prepare_sdpa(query, key, value, mask, scaling: float) -> PreparedAttention:
    """SDPA with the first kernel of :data:`SDPA_PREFERENCE` that runs these inputs, pinned."""
    b, heads, n, d = query.shape
    kv_heads = key.shape[1]
    groups = heads // kv_heads
    attn_mask = _visible_mask(mask)
    if groups > 1:  # grouped-query view: every SDPA kernel takes it (enable_gqa: FLASH and MATH only)
        q = query.reshape(b, kv_heads, groups * n, d)
        if attn_mask is not None:
            attn_mask = attn_mask.expand(b, 1, n, attn_mask.shape[-1]).repeat(1, 1, groups, 1)
    else:
        q = query
    if attn_mask is not None:
        attn_mask = attn_mask.to(query.dtype)

    def run():
        return torch.nn.functional.scaled_dot_product_attention(q, key, value, attn_mask=attn_mask, scale=scaling)

    reasons = {}
    for name in SDPA_PREFERENCE:
        backend = getattr(SDPBackend, name, None)
        if backend is None:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "Flash attention kernel not used because ..." per miss
                with sdpa_kernel([backend]):
                    out = run()
            out = grouped_output(out, b, heads, n, d)
        except RuntimeError as exc:
            if is_oom(exc):
                raise
            reasons[name] = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            continue
        note = "; ".join(f"{k} unavailable" for k in reasons)
        return PreparedAttention("sdpa", name, {FUSED_OP: run}, out, note,
                                 _context=lambda backend=backend: sdpa_kernel([backend]))
    raise RuntimeError(f"no SDPA kernel runs these inputs: {reasons}")


class FlexState:
    """Compiled flex_attention and one ``mask_mod`` per tree, shared by the points of a run.

    Points are prepared and timed one after another: :meth:`block_mask` sets the tree's captured
    ``kv_len`` tensor for the point it builds, so a point's block mask is valid until the next point
    of the same tree is prepared.
    """

    def __init__(self, device, compile: bool | None = None):
        self.device = as_device(device)
        self.compile = True if compile is None else bool(compile)
        self._trees: dict[bytes, tuple] = {}
        self._compiled = None
        self.fallback: str = ""  # why compiled flex is not used on this CPU run (set on failure)
        self.compiles = 0  # graphs compiled for this run's points so far

    def block_mask(self, ancestor, kv_len: int):
        """BlockMask ``[1, 1, n, kv_len + n]`` for the tree ``ancestor [n, n]`` (bool) on ``kv_len`` cached keys."""
        anc = ancestor.to(device=self.device, dtype=torch.bool)
        n = int(anc.shape[0])
        tag = np.asarray(anc.cpu()).tobytes() + n.to_bytes(4, "little")
        if tag not in self._trees:
            kv_len_t = torch.zeros((), dtype=torch.int64, device=self.device)
            last = n - 1

            def mask_mod(b, h, q_idx, kv_idx):
                tree = kv_idx - kv_len_t  # < 0: a cached key, always visible
                return (tree < 0) | anc[q_idx.clamp(0, last), tree.clamp(0, last)]

            self._trees[tag] = (kv_len_t, mask_mod)
        kv_len_t, mask_mod = self._trees[tag]
        kv_len_t.fill_(int(kv_len))
        return create_block_mask(mask_mod, None, None, n, int(kv_len) + n, device=self.device)

    def function(self):
        """flex_attention, compiled unless compilation is off or failed (CPU only)."""
        if not self.compile or self.fallback:
            return flex_attention
        if self._compiled is None:
            self._compiled = torch.compile(flex_attention, dynamic=False, fullgraph=True)
        return self._compiled

    @property
    def compiled(self) -> bool:
        return self.compile and not self.fallback

    def kernel_options(self, n: int, heads: int, kv_heads: int) -> dict | None:
        """CUDA + compiled: force the Triton kernel :func:`flex_triton_kernel` picks; else None."""
        if self.device.type != "cuda" or not self.compiled or not FLEX_FORCES_BACKEND:
            return None
        return {"BACKEND": flex_triton_kernel(n, heads, kv_heads)}

    def kernel_name(self, n: int = 1, heads: int = 1, kv_heads: int = 1) -> str:
        """What ran: the compiled kernel and shape regime, or the uncompiled reference and why."""
        if self.compiled:
            if self.device.type != "cuda":
                return "flex_attention (torch.compile, static shapes, CPU template)"
            kernel = FLEX_TRITON_KERNELS[flex_triton_kernel(n, heads, kv_heads)]
            how = "" if FLEX_FORCES_BACKEND else ", chosen by Inductor's heuristic: this torch cannot force it"
            return f"flex_attention (torch.compile, static shapes, {kernel}{how})"
        why = f"compile failed: {self.fallback}" if self.fallback else "compile off"
        return f"flex_attention (not compiled, {why}: unfused reference, scores materialised)"


def flex_triton_kernel(n: int, heads: int, kv_heads: int) -> str:
    """The Triton kernel for a static-shape flex call: ``TRITON_DECODE`` (flex_decoding, split over the
    keys) where Inductor's own rule takes it (torch 2.13: query shorter than
    :data:`FLEX_DECODE_MAX_QUERY`, power-of-two GQA ratio g) *and* its query tile fits the block
    mask's 128-row blocks (``next_pow2(n·g) <= 128``; past that flex_decoding has no valid config and
    fails), else ``TRITON`` (flex_attention). The block masks here have one head, which
    flex_decoding also needs."""
    ratio = heads // kv_heads if kv_heads else 0
    if not (0 < n < FLEX_DECODE_MAX_QUERY and ratio > 0 and ratio & (ratio - 1) == 0):
        return "TRITON"
    tile = 1 << max(n * ratio - 1, 0).bit_length()
    return "TRITON_DECODE" if tile <= FLEX_DECODE_MAX_QUERY else "TRITON"


def compiled_graphs() -> int:
    """Graphs Dynamo has compiled in this process (each recompile for a new shape adds one)."""
    return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])


@contextlib.contextmanager
def compile_settings():
    """Dynamo settings for a run of many shapes: a high recompile limit, and an error (never a
    silent eager fallback) if it is still hit."""
    wanted = {"recompile_limit": 1024, "accumulated_recompile_limit": 65536, "fail_on_recompile_limit_hit": True}
    known = {k: v for k, v in wanted.items() if hasattr(torch._dynamo.config, k)}
    with torch._dynamo.config.patch(**known):
        yield


def prepare_flex(query, key, value, ancestor, kv_len: int, scaling: float, state: FlexState) -> PreparedAttention:
    """flex_attention with the tree block mask (``ancestor`` None: no mask, every key visible).

    The preparation run is the first call, so it compiles (static shapes: once per new shape);
    the graphs it compiled are counted in ``compiles`` and the timed calls reuse them."""
    b, heads, n, d = query.shape
    kv_heads = key.shape[1]
    gqa = heads != kv_heads
    block_mask = None if ancestor is None else state.block_mask(ancestor, kv_len)

    def call(fn, options=None):
        extra = {} if options is None else {"kernel_options": options}
        return lambda: fn(query, key, value, block_mask=block_mask, scale=scaling, enable_gqa=gqa, **extra)

    before = compiled_graphs()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
        try:
            run = call(state.function(), state.kernel_options(n, heads, kv_heads))
            out = run()
        except Exception as exc:  # noqa: BLE001 - CPU: fall back to the reference path, with a note
            if is_oom(exc) or state.device.type == "cuda" or not state.compile or state.fallback:
                raise
            first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
            state.fallback = f"{type(exc).__name__}: {first}"
            log.warning("flex_attention does not compile on %s (%s); timing the uncompiled reference path",
                        state.device, state.fallback)
            run = call(state.function())
            out = run()
    compiles = None
    if state.compiled:
        compiles = compiled_graphs() - before
        state.compiles += compiles
    else:
        run = _quiet_reference(run)  # the reference path warns on every call
    return PreparedAttention("flex", state.kernel_name(n, heads, kv_heads), {FUSED_OP: run},
                             out.transpose(1, 2).contiguous(), state.fallback, compiles)


def _quiet_reference(run):
    def quiet():
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
            return run()

    return quiet


def prepare(backend: str, query, key, value, scaling: float, *, mask=None, ancestor=None, kv_len: int | None = None,
            flex: FlexState | None = None) -> PreparedAttention:
    """One point's attention for ``backend``.

    ``query [b, H, n, d]``, ``key``/``value [b, H_kv, kv_len + n, d]`` (the cache with the step's own n
    tokens appended); ``mask`` the additive mask ``[b, 1, n, kv_len + n]`` (eager, sdpa); ``ancestor``
    the tree's ``ancestor_mask [n, n]`` and ``kv_len`` (flex; None for ar: every key visible).
    """
    if backend == "eager":
        return prepare_eager(query, key, value, mask, scaling)
    if backend == "sdpa":
        return prepare_sdpa(query, key, value, mask, scaling)
    if backend == "flex":
        if flex is None:
            flex = FlexState(query.device)
        if ancestor is not None and kv_len is None:
            kv_len = key.shape[2] - ancestor.shape[0]
        return prepare_flex(query, key, value, ancestor, kv_len or 0, scaling, flex)
    raise ConfigError(f"attention_backends: unknown attention backend {backend!r}; allowed are {', '.join(BACKENDS)}")


def check_output(prepared: PreparedAttention, reference, where: str = "") -> None:
    """Raise if a fused backend's output differs from eager's beyond :func:`tolerance` of its dtype."""
    try:
        torch.testing.assert_close(prepared.output, reference, **tolerance(reference.dtype))
    except AssertionError as exc:
        first = str(exc).strip().splitlines()
        raise RuntimeError(f"attention backend {prepared.backend} ({prepared.kernel}) disagrees with eager"
                           f"{' at ' + where if where else ''}: {' '.join(first[:3])}") from None
