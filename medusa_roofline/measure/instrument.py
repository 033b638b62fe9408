"""Instrumentation of a Hugging Face model for per-op timing: timed ``forward`` wrappers on the Linear ops
and on the RMSNorms and the embedding, and a timed attention function.

Every interval is recorded only while an :class:`~.op_timer.OpTimer` is active and inside a
repetition, so the same code runs untimed for warm-up and for the uninstrumented whole-step pass.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, eager_mask

from ..analytic.costmodel import LAYER_LINEAR_OPS
from .eager import eager_pv, eager_qk, eager_softmax
from .op_timer import OpTimer, activate, active_timer, maybe_op
from .timing import Stats

TIMED_ATTENTION = "roofline_timed"


def timed_attention_forward(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """transformers' ``eager_attention_forward`` split into separately timed qk / softmax / pv.

    Shapes: query ``[b, H, n, d]``, key/value ``[b, H_kv, keys, d]`` (already extended by the
    cache). The steps are :mod:`.attention`'s eager ops, which move as little as PyTorch allows:
    ``qk`` = one GEMM writing scaling·Q·Kᵀ (the scale is the GEMM's alpha; transformers scales the
    *scores* in a second pass) plus the additive mask added in place over the columns it changes
    only (none for ar, the tree's last n - 1 for Medusa); ``softmax`` reads and writes the scores
    once in the query dtype (float32 accumulation inside the kernel); ``pv = P @ V``. For GQA
    (H = g * H_kv) K/V are *not* materialised ``g`` times as ``repeat_kv`` does: Q is viewed as
    ``[b, H_kv, g*n, d]`` (query head h = j*g + r uses KV head j, the same grouping as ``repeat_kv``),
    so one matmul per KV head reads K/V once; scores/probabilities are viewed back as
    ``[b, H, n, keys]`` at no cost. Returns ``(attn_output [b, n, H, d], attn_weights)`` like eager;
    the results agree with it to rounding. Each step is timed only while an :class:`OpTimer` is active.
    """
    with maybe_op("qk"):
        scores = eager_qk(query, key, scaling, attention_mask)
    with maybe_op("softmax"):
        probs = eager_softmax(scores)
    probs = nn.functional.dropout(probs, p=dropout, training=module.training)
    with maybe_op("pv"):
        out = eager_pv(probs, value)
    out = out.transpose(1, 2).contiguous()
    return out, probs


def register_timed_attention() -> str:
    """Register :func:`timed_attention_forward` (and eager's mask builder) under ``roofline_timed``."""
    AttentionInterface.register(TIMED_ATTENTION, timed_attention_forward)
    if TIMED_ATTENTION not in ALL_MASK_ATTENTION_FUNCTIONS:
        AttentionMaskInterface.register(TIMED_ATTENTION, eager_mask)
    return TIMED_ATTENTION


class attention_implementation:
    """Context manager: switch a model's attention implementation, restoring it afterwards."""

    def __init__(self, model, name: str):
        self.model, self.name = model, name

    def __enter__(self):
        self.saved = self.model.config._attn_implementation
        self.model.config._attn_implementation = self.name
        return self.model

    def __exit__(self, *exc):
        self.model.config._attn_implementation = self.saved
        return False


class timed_forwards:
    """Context manager: time each given ``(module, op)``'s calls under ``op`` by wrapping its ``forward``.

    Why a wrapper and not ``register_forward_pre_hook``/``register_forward_hook``: any hook sends
    ``nn.Module.__call__`` down its slow path (hook dictionaries walked, arguments re-packed): 3–6 µs per
    call on the 2-core CPU against 1–5 µs for a wrapper (``benchmarks/wrapper_overhead.py``). On a
    few-millisecond step with ~30 timed modules, switching to the wrapper took the instrumented pass's
    excess over the plain step (:func:`~.table.step_closure`) from 15.7 % to 4.7 % for ``ar``. The
    wrapper is an instance attribute shadowing the class's ``forward``; ``__exit__`` restores whatever
    was there before (nothing, or an earlier wrapper).
    """

    def __init__(self, targets):
        self.targets = list(targets)
        self.wrapped: list[tuple[nn.Module, object]] = []

    def __enter__(self):
        for module, op in self.targets:
            self.wrapped.append((module, module.__dict__.get("forward", _NOT_SET)))
            module.forward = _timed_forward(module.forward, op)
        return self

    def __exit__(self, *exc):
        for module, saved in reversed(self.wrapped):
            if saved is _NOT_SET:
                del module.forward
            else:
                module.forward = saved
        self.wrapped.clear()
        return False


def timed_linears(model, ops=LAYER_LINEAR_OPS + ("lm_head",)) -> timed_forwards:
    """:class:`timed_forwards` over the ``nn.Linear`` modules of ``model`` whose name ends in one of ``ops``."""
    ops = set(ops)
    return timed_forwards((module, name.rsplit(".", 1)[-1]) for name, module in model.named_modules()
                          if name.rsplit(".", 1)[-1] in ops and isinstance(module, nn.Linear))


MODULE_OPS = {
    "input_layernorm": "input_norm",
    "post_attention_layernorm": "post_attn_norm",
    "norm": "final_norm",
    "embed_tokens": "embedding",
}
"""Hugging Face Llama module names (last component) -> the cost model's op they run
(:data:`~medusa_roofline.analytic.costmodel.HOOKED_OPS`)."""


def timed_modules(model, modules: dict[str, str] | None = None) -> timed_forwards:
    """:class:`timed_forwards` over the non-Linear modules of :data:`MODULE_OPS` (the RMSNorms, the final norm,
    the embedding lookup), each under its cost-model op name."""
    modules = MODULE_OPS if modules is None else modules
    return timed_forwards((module, modules[name.rsplit(".", 1)[-1]]) for name, module in model.named_modules()
                          if name.rsplit(".", 1)[-1] in modules and not isinstance(module, nn.Linear))


_NOT_SET = object()


def _timed_forward(forward, op):
    """``forward`` between the active timer's ``start(op)`` and ``stop(op)`` (untimed when none is active)."""

    def timed(*args, **kwargs):
        timer = active_timer()
        if timer is None:
            return forward(*args, **kwargs)
        timer.start(op)
        out = forward(*args, **kwargs)
        timer.stop(op)
        return out

    return timed


def instrumented_floor(device, dtype, reps: int, warmup: int, flush_l2: bool | str = True) -> Stats:
    """The smallest interval the instrumented pass records: a 1x1 ``nn.Linear`` timed through the same
    ``forward`` wrapper and :class:`OpTimer` as the model's Linear ops (the wrapper, two marks, one kernel
    launch). Per-op rows close to it are launch- or instrumentation-bound, not bandwidth- or compute-bound."""
    probe = nn.ModuleDict({"probe": nn.Linear(1, 1, bias=False, device=device, dtype=dtype)})
    x = torch.zeros(1, 1, device=device, dtype=dtype)
    timer = OpTimer(device)
    with torch.inference_mode(), timed_linears(probe, ops=("probe",)), activate(timer):
        timer.run(lambda: probe["probe"](x), reps, warmup, flush_l2)
    return timer.stats()["probe"]
