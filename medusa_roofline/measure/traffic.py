"""Bytes a piece of PyTorch code moves, counted from the ATen ops it launches.

The cost model's moved-byte formulas (:func:`medusa_roofline.analytic.moved.moved_bytes`) say what
the kernels of an op read and write; this module checks them against what actually runs. It runs a
callable under a ``TorchDispatchMode``, which sees every ATen op at the dispatcher, after composite
ops (``matmul``, ``reshape``, ``softmax``) have been decomposed into the kernels that execute, and adds
per op the bytes of its tensor operands:

* each tensor input is read once and each fresh output written once, at its *footprint*: distinct
  elements x element size (a broadcast, stride-0 dimension counts once);
* an argument the op mutates (in-place ops, ``out=``) is written; it is also read, unless the op
  overwrites it without looking (``copy_``, ``fill_``, ``zero_``, an ``out=`` argument, a GEMM with
  ``beta = 0``);
* views (an output sharing an input's storage) and allocations (``empty*``) move nothing.

What it cannot see: traffic inside one kernel beyond its operands (tiles re-read from DRAM when the
cache does not hold them, register spills), and copies a kernel makes internally without going back
through the dispatcher. Use it on CPU tensors in tests and in the byte table of ``docs/bytes.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

WRITE_ONLY = ("copy_", "fill_", "zero_", "masked_fill_")
"""In-place ops that overwrite their destination (masked_fill_ writes only where the mask is set, but the
kernel streams the whole destination: counted as a write)."""
BETA_OPS = ("baddbmm", "addmm", "addbmm", "addmv")
"""GEMM-like ops whose destination is read only when ``beta != 0``."""
ALLOCATIONS = ("empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided")


def footprint(t: torch.Tensor) -> int:
    """Bytes of the distinct elements a strided tensor addresses (stride-0 dimensions count once)."""
    if t.numel() == 0:
        return 0
    elements = 1
    for size, stride in zip(t.shape, t.stride()):
        if stride != 0:
            elements *= size
    return elements * t.element_size()


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


@dataclass
class Traffic:
    """What :func:`count_traffic` saw: one ``(op, bytes read, bytes written)`` per moving ATen op."""

    ops: list[tuple[str, int, int]] = field(default_factory=list)

    @property
    def read(self) -> int:
        return sum(r for _, r, _ in self.ops)

    @property
    def written(self) -> int:
        return sum(w for _, _, w in self.ops)

    @property
    def total(self) -> int:
        return self.read + self.written

    def names(self) -> list[str]:
        return [name for name, _, _ in self.ops]


class _Counter(TorchDispatchMode):
    def __init__(self, traffic: Traffic):
        super().__init__()
        self.traffic = traffic

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func._schema.name.split("::")[-1]
        if name in ALLOCATIONS:
            return out
        schema = func._schema.arguments
        values = list(args) + [kwargs.get(a.name) for a in schema[len(args):]]
        operands = [(arg, t) for arg, value in zip(schema, values)
                    for t in tree_leaves(value) if isinstance(t, torch.Tensor)]
        mutated = [(arg, t) for arg, t in operands if arg.alias_info is not None and arg.alias_info.is_write]
        inputs = {_storage(t) for _, t in operands}
        fresh = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor) and _storage(t) not in inputs]
        if not mutated and not fresh and any(isinstance(t, torch.Tensor) for t in tree_leaves(out)):
            return out  # a view: every output shares an input's storage
        read = sum(footprint(t) for arg, t in operands if (arg, t) not in mutated)
        written = sum(footprint(t) for t in fresh)
        beta_zero = name.rstrip("_") in BETA_OPS and float(kwargs.get("beta", 1)) == 0.0
        for arg, t in mutated:
            written += footprint(t)
            if not (name in WRITE_ONLY or arg.is_out or beta_zero):
                read += footprint(t)
        if read or written:
            self.traffic.ops.append((name, read, written))
        return out


def count_traffic(fn, *args, **kwargs) -> tuple[object, Traffic]:
    """Run ``fn(*args, **kwargs)`` once (gradients off), counting the bytes of every ATen op it launches;
    returns ``(result, Traffic)``. Views and allocations count nothing (see the module docstring).

    Not in inference mode: there composite ops (``matmul``, ``reshape``) reach the counter undecomposed,
    hiding the copies they make."""
    if torch.is_inference_mode_enabled():
        raise ValueError("count_traffic: call it outside inference mode (composite ops are not decomposed there)")
    traffic = Traffic()
    with torch.no_grad(), _Counter(traffic):
        result = fn(*args, **kwargs)
    return result, traffic
