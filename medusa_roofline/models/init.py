"""Random weights made where they run: build on the meta device, allocate on the target, fill there.

A model that is only timed needs real, non-degenerate numbers, not a particular distribution, and
initialising Llama-33B's 1.5 B parameters with PyTorch's serial CPU RNG took 15-40 s per job
(issue 11). Here nothing is allocated before the module exists on ``meta``; ``to_empty`` then
allocates it on the target device and :func:`seeded_fill_` writes it there:

* every matrix (Linear and Embedding weights) from one seeded normal block of :data:`FILL_BLOCK`
  values drawn *on the target device*, each tensor starting at its own seeded offset and repeating
  the block. The block length is a prime larger than every hidden size, so no two rows of a weight
  matrix (and no two tensors) are equal; a tensor smaller than the block is plain i.i.d. normal;
* vectors named ``*norm*`` (RMSNorm) are ones, biases zero, the embedding's padding row zero (as
  Hugging Face's own ``_init_weights``);
* buffers are recomputed by the model's own initialiser (RoPE ``inv_freq``); any other buffer is an
  error rather than uninitialised memory.

The cost is one copy of the weights (memory bandwidth), not one RNG draw per parameter.
"""

from __future__ import annotations

import random

import torch
from torch import nn

FILL_BLOCK = 1_000_003
"""Length of the normal block every large tensor is tiled from (prime, > any hidden size)."""


def _generator(device: torch.device, seed: int):
    return None if device.type == "meta" else torch.Generator(device=device).manual_seed(seed)


def seeded_normal_(tensors, std: float, seed: int) -> None:
    """Fill ``tensors`` (all on one device) with seeded N(0, std) values drawn on that device.

    Tensors up to :data:`FILL_BLOCK` elements get independent draws; larger ones repeat the block
    from a per-tensor offset (see the module docstring).
    """
    tensors = list(tensors)
    if not tensors:
        return
    device = tensors[0].device
    block = torch.randn(FILL_BLOCK, generator=_generator(device, seed), device=device, dtype=torch.float32)
    block.mul_(std)
    offsets = random.Random(seed).sample(range(FILL_BLOCK), len(tensors))
    by_dtype: dict[torch.dtype, torch.Tensor] = {}
    for t, off in zip(tensors, offsets):
        if t.device != device:
            raise ValueError(f"seeded_normal_: tensors on {device} and {t.device}; fill one device at a time")
        src = by_dtype.setdefault(t.dtype, block.to(t.dtype))
        flat = t.view(-1)  # element i gets block[(off + i) % FILL_BLOCK]
        head = min(flat.numel(), FILL_BLOCK - off)
        flat[:head].copy_(src[off:off + head])
        full, tail = divmod(flat.numel() - head, FILL_BLOCK)
        if full:
            flat[head:head + full * FILL_BLOCK].view(full, FILL_BLOCK).copy_(src.expand(full, FILL_BLOCK))
        if tail:
            flat[head + full * FILL_BLOCK:].copy_(src[:tail])


@torch.no_grad()
def seeded_fill_(model: nn.Module, seed: int, std: float, zero=lambda name: False) -> nn.Module:
    """Seeded weights for a freshly materialised ``model``, written on its device (see module docstring).

    ``zero(name)`` may mark further parameters to zero (e.g. Medusa heads' residual linears).
    Buffers are recomputed by ``model._init_weights`` for modules that own them (Hugging Face
    models: RoPE); a buffer nobody initialises raises ``RuntimeError``.
    """
    matrices = []
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if zero(name) or leaf == "bias":
            p.zero_()
        elif p.ndim == 1 and "norm" in name:
            p.fill_(1.0)
        elif p.ndim >= 2:
            matrices.append(p)
        else:
            raise RuntimeError(f"seeded_fill_: no rule for parameter {name} of shape {tuple(p.shape)}")
    seeded_normal_(matrices, std, seed)
    for module in model.modules():
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            module.weight[module.padding_idx].zero_()
    owners = {id(m) for m in model.modules() if any(True for _ in m.buffers(recurse=False))}
    init_weights = getattr(model, "_init_weights", None)
    for module in model.modules():
        if id(module) in owners:
            if init_weights is None or "RotaryEmbedding" not in type(module).__name__:
                raise RuntimeError(f"seeded_fill_: no initialiser for the buffers of {type(module).__name__}")
            init_weights(module)
    return model
