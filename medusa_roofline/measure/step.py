"""One decode step (ar, or a Medusa tree) of a real model on a fixed KV cache, ready to time again and again.

Everything a step needs (cache, input ids, mask, positions) is built once, outside any timed region.
The cache is a :class:`~medusa_roofline.decoding.kv_cache.PreallocatedCache` of capacity
``kv_len + q_len``: the step writes its q_len new K/V in place at slots ``kv_len ..`` and attends over
the whole buffer (a view, never a copy); ``reset`` only moves the length back to ``kv_len``.
"""

from __future__ import annotations

import torch

from ..analytic.costmodel import step_shape
from ..decoding.kv_cache import PreallocatedCache
from ..decoding.tree_buffers import tree_attention_mask, tree_position_ids
from .grid import Mode
from .op_timer import maybe_op


def fill_cache(model, batch: int, kv_len: int, dtype, device, generator=None, extra: int = 0) -> PreallocatedCache:
    """A preallocated cache of ``kv_len + extra`` slots whose first ``kv_len`` hold random K/V in every layer."""
    cache = PreallocatedCache(model.config, batch, kv_len + extra, dtype, device)
    for layer in cache.layers:
        for buf in (layer.keys, layer.values):
            buf[:, :, :kv_len].normal_(generator=generator)  # in place: no second copy of the cache
    cache.set_length(kv_len)
    return cache


class DecodeStep:
    """One decode step (ar or Medusa tree) of ``model`` on a ``kv_len`` cache; callable.

    ``step()`` runs the step (writing ``q_len`` positions after the cache); ``reset()`` sets the
    cache back to ``kv_len`` and checks it. Everything is built once here, outside any timed region.
    The Medusa heads run on every tree position (``medusa_heads="tree"``) or on one position per
    sequence (``"accepted"``: the accepted token's hidden state; which position does not change the
    cost), as :func:`~medusa_roofline.analytic.costmodel.step_shape` defines the step.
    """

    def __init__(self, model, mode: Mode, batch: int, kv_len: int, heads=None, buffers=None, seed: int = 0,
                 medusa_heads: str = "tree"):
        self.model, self.mode, self.heads = model, mode, heads
        self.batch, self.kv_len, self.q_len = batch, kv_len, mode.q_len
        self.heads_tokens = step_shape(mode.phase, mode.q_len, kv_len, medusa_heads).heads_tokens
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        with torch.inference_mode():
            self._build(model, mode, batch, kv_len, buffers, seed)

    def _build(self, model, mode, batch, kv_len, buffers, seed):
        gen = torch.Generator(device=self.device).manual_seed(seed)
        self.cache = fill_cache(model, batch, kv_len, self.dtype, self.device, gen, extra=self.q_len)
        vocab = model.config.vocab_size
        self.input_ids = torch.randint(0, vocab, (batch, self.q_len), generator=gen, device=self.device)
        if mode.phase == "medusa":
            if buffers is None or buffers.n != self.q_len:
                raise ValueError(f"medusa step needs tree buffers with n={self.q_len}")
            self.mask = tree_attention_mask(buffers, kv_len, batch, self.dtype, self.device)
            self.position_ids = tree_position_ids(buffers, kv_len, batch).to(self.device)
        else:
            self.mask = torch.zeros(batch, 1, 1, kv_len + 1, dtype=self.dtype, device=self.device)
            self.position_ids = torch.full((batch, 1), kv_len, dtype=torch.long, device=self.device)
        expected = (batch, 1, self.q_len, kv_len + self.q_len)
        if tuple(self.mask.shape) != expected:
            raise ValueError(f"attention mask has shape {tuple(self.mask.shape)}, expected {expected}")

    def step(self):
        with torch.inference_mode():
            out = self.model.model(
                input_ids=self.input_ids, attention_mask=self.mask, position_ids=self.position_ids,
                past_key_values=self.cache, use_cache=True,
            )
            hidden = out.last_hidden_state
            logits = self.model.lm_head(hidden)
            if self.heads is None:
                return logits
            with maybe_op("medusa_heads"):
                medusa_logits = self.heads(hidden[:, :self.heads_tokens])
            return logits, medusa_logits

    __call__ = step

    def seq_length(self) -> int:
        return self.cache.get_seq_length()

    def reset(self) -> None:
        """Back to ``kv_len`` positions; refuses a cache a step left anywhere but ``kv_len + q_len`` (or untouched)."""
        lengths = self.cache.lengths()
        if not lengths <= {self.kv_len, self.kv_len + self.q_len} or len(lengths) != 1:
            raise RuntimeError(f"KV cache has layer lengths {sorted(lengths)} before reset; a step leaves "
                               f"{self.kv_len + self.q_len} in every layer (kv_len={self.kv_len}, q_len={self.q_len})")
        self.cache.set_length(self.kv_len)
