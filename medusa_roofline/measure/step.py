"""One decode step (ar, or a Medusa tree) of a real model on a fixed KV cache, ready to time again and again.

Everything a step needs (cache, input ids, mask, positions) is built once, outside any timed region;
``reset`` puts the cache back to ``kv_len`` tokens after each repetition.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

from ..decoding.tree_buffers import tree_attention_mask, tree_position_ids
from .grid import Mode
from .op_timer import maybe_op


def fill_cache(model, batch: int, kv_len: int, dtype, device, generator=None):
    """A DynamicCache holding ``kv_len`` random K/V tokens in every instantiated layer."""
    cfg = model.config
    kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    cache = DynamicCache(config=cfg)
    shape = (batch, kv_heads, kv_len, head_dim)
    for layer in range(cfg.num_hidden_layers):
        k = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        v = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        cache.update(k, v, layer)
    return cache


class DecodeStep:
    """One decode step (ar or Medusa tree) of ``model`` on a ``kv_len`` cache; callable.

    ``step()`` runs the step (extending the cache by ``q_len``); ``reset()`` crops the cache back
    to ``kv_len`` and checks it. Everything is built once here, outside any timed region.
    """

    def __init__(self, model, mode: Mode, batch: int, kv_len: int, heads=None, buffers=None, seed: int = 0):
        self.model, self.mode, self.heads = model, mode, heads
        self.batch, self.kv_len, self.q_len = batch, kv_len, mode.q_len
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        with torch.inference_mode():
            self._build(model, mode, batch, kv_len, buffers, seed)

    def _build(self, model, mode, batch, kv_len, buffers, seed):
        gen = torch.Generator(device=self.device).manual_seed(seed)
        self.cache = fill_cache(model, batch, kv_len, self.dtype, self.device, gen)
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
                medusa_logits = self.heads(hidden)
            return logits, medusa_logits

    __call__ = step

    def seq_length(self) -> int:
        return self.cache.get_seq_length()

    def reset(self) -> None:
        extra = self.cache.get_seq_length() - self.kv_len
        if extra > 0:
            self.cache.crop(-extra)
        length = self.cache.get_seq_length()
        if length != self.kv_len:
            raise RuntimeError(f"KV cache has {length} tokens after crop, expected kv_len={self.kv_len}")
