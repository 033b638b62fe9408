"""A preallocated KV cache that transformers' Llama accepts through ``past_key_values``.

Hugging Face's ``DynamicCache`` appends every step with ``torch.cat``, copying each layer's whole
cache; a timed decode step then measures that copy too, and per-op rows cannot add up to the step.
This cache follows Medusa's reference ``kv_cache.py`` and gpt-fast instead: every layer owns one
``[batch, kv_heads, capacity, head_dim]`` key and value tensor, allocated once; ``update`` writes the
step's new K/V in place at slots ``length .. length + q - 1`` and returns views of the first
``length + q`` slots (no copy), which the model's own attention code reads as if the cache had
grown. ``crop``/:meth:`PreallocatedCache.set_length` only move the length back; nothing is freed or
copied. After a Medusa step, :meth:`PreallocatedCache.compact` moves each row's accepted tree
entries in place to the slots right after that row's valid prefix.

Every layer shares one write offset (``length``): rows of a ragged batch keep their own valid
ranges inside it and hide the rest with the attention mask (:mod:`.medusa`). Capacity is fixed; a
write beyond it raises instead of silently growing. Buffers start zeroed, so a slot that is read
before it is written (a masked pad) holds finite values.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, CacheLayerMixin


class CacheCapacityError(RuntimeError):
    """A write past the preallocated capacity: the caller sized the cache too small."""


class PreallocatedLayer(CacheLayerMixin):
    """One decoder layer's K/V in fixed buffers; ``length`` slots are in use."""

    is_compileable = False
    is_sliding = False
    is_croppable = True

    def __init__(self, keys: torch.Tensor, values: torch.Tensor):
        super().__init__()
        self.keys, self.values = keys, values
        self.dtype, self.device = keys.dtype, keys.device
        self.length = 0
        self.is_initialized = True

    @property
    def capacity(self) -> int:
        return self.keys.shape[-2]

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Nothing to do: the buffers exist from the start (required by ``CacheLayerMixin``)."""

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        """Write ``q`` new positions in place at ``length`` and return views of ``[0, length + q)``."""
        start = self.length
        end = start + key_states.shape[-2]
        if end > self.capacity:
            raise CacheCapacityError(f"KV cache of capacity {self.capacity} cannot take {end - start} more "
                                     f"position(s) after {start}")
        self.keys[:, :, start:end].copy_(key_states)
        self.values[:, :, start:end].copy_(value_states)
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.length + query_length, 0

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return self.capacity

    def crop(self, tokens_to_remove: int) -> None:
        """``DynamicLayer.crop`` semantics (a negative count removes that many positions), without a copy."""
        if tokens_to_remove > 0:
            raise ValueError(f"crop takes a negative count of positions to remove, got {tokens_to_remove}")
        self.length = max(0, self.length + tokens_to_remove)

    def reset(self) -> None:
        self.length = 0


class PreallocatedCache(Cache):
    """K/V buffers for every decoder layer of ``config``, ``capacity`` positions per row.

    ``PreallocatedCache(config, batch, capacity, dtype, device)`` allocates zeroed buffers on
    ``device``. Use it wherever a ``DynamicCache`` would go (``model(..., past_key_values=cache)``).
    """

    def __init__(self, config, batch: int, capacity: int, dtype, device):
        if batch < 1 or capacity < 1:
            raise ValueError(f"a KV cache needs batch >= 1 and capacity >= 1, got {batch} and {capacity}")
        cfg = config.get_text_config(decoder=True)
        kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        shape = (batch, kv_heads, capacity, head_dim)
        layers = [PreallocatedLayer(torch.zeros(shape, dtype=dtype, device=device),
                                    torch.zeros(shape, dtype=dtype, device=device))
                  for _ in range(cfg.num_hidden_layers)]
        super().__init__(layers=layers)

    @property
    def capacity(self) -> int:
        return self.layers[0].capacity

    def set_length(self, length: int) -> None:
        """Put every layer back to ``length`` positions in use (a rollback: nothing moves)."""
        if not 0 <= length <= self.capacity:
            raise ValueError(f"cache length {length} is outside 0..{self.capacity}")
        for layer in self.layers:
            layer.length = length

    def lengths(self) -> set[int]:
        """The distinct lengths of the layers (one value after every complete forward pass)."""
        return {layer.length for layer in self.layers}

    def compact(self, valid: torch.Tensor, base: int, nodes: torch.Tensor, accepted: torch.Tensor) -> torch.Tensor:
        """Move accepted tree K/V next to each row's valid prefix, in place; returns the new ``valid``.

        The tree's n entries sit at slots ``base .. base + n - 1``. ``nodes [b, A]`` are the accepted
        node indices of each row (root first; entries past ``accepted[b]`` are padding with any valid
        index); they go to slots ``valid[b] .. valid[b] + A - 1``. Sources are gathered before any
        write, so overlapping ranges are safe, and padding lands beyond the new valid length. The
        cache length becomes the new ``max(valid)``: stale slots of shorter rows stay hidden by the mask.
        """
        b, width = nodes.shape
        for layer in self.layers:
            src = (base + nodes).to(layer.device)[:, None, :, None]
            dst = (valid.to(layer.device)[:, None] + torch.arange(width, device=layer.device))[:, None, :, None]
            for buf in (layer.keys, layer.values):
                index_shape = (b, buf.shape[1], width, buf.shape[3])
                moved = buf.gather(2, src.expand(index_shape))
                buf.scatter_(2, dst.expand(index_shape), moved)
        new_valid = valid + accepted
        self.set_length(int(new_valid.max()))
        return new_valid
