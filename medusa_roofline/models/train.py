"""Train a tiny Llama-style base model on the synthetic language, and save it as a local HF checkpoint.

Seeded and deterministic on a given machine and thread count: weights come from
``torch.manual_seed(seed)``, batches from ``numpy.random.default_rng(seed + 1)``; nothing is
downloaded. The checkpoint is what :func:`.load.build_model` loads: ``config.json`` +
``model.safetensors`` (+ the character tokenizer), via ``save_pretrained``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ..core.errors import ConfigError
from . import synthetic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BaseSpec:
    """Shape and training budget of the demo's base model."""

    hidden: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 128
    max_positions: int = 1024
    steps: int = 120
    batch: int = 32
    seq_len: int = 64
    lr: float = 3e-3
    seed: int = 0


def llama_config(spec: BaseSpec, vocab: int) -> LlamaConfig:
    if spec.hidden % spec.heads or spec.heads % spec.kv_heads:
        raise ConfigError(f"demo.base: hidden {spec.hidden} must be a multiple of heads {spec.heads}, and heads "
                          f"a multiple of kv_heads {spec.kv_heads}")
    if spec.seq_len > spec.max_positions:
        raise ConfigError(f"demo.base: seq_len {spec.seq_len} exceeds max_positions {spec.max_positions}")
    return LlamaConfig(
        vocab_size=vocab, hidden_size=spec.hidden, intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers, num_attention_heads=spec.heads, num_key_value_heads=spec.kv_heads,
        max_position_embeddings=spec.max_positions, rms_norm_eps=1e-6, tie_word_embeddings=False,
        bos_token_id=synthetic.BOS, pad_token_id=synthetic.PAD, eos_token_id=None,
        architectures=["LlamaForCausalLM"],
    )


def lr_at(step: int, steps: int, peak: float) -> float:
    """Linear warm-up over the first 10 % of steps, then linear decay to 10 % of ``peak``."""
    warm = max(1, steps // 10)
    if step < warm:
        return peak * (step + 1) / warm
    return peak * (1.0 - 0.9 * (step - warm) / max(1, steps - warm))


def train_base(lang: synthetic.Language, spec: BaseSpec = BaseSpec()) -> tuple[LlamaForCausalLM, list[float]]:
    """Next-token training on freshly sampled text; returns the model (eval mode) and the loss per step."""
    if spec.steps < 1 or spec.batch < 1 or spec.seq_len < 2:
        raise ConfigError(f"demo.base: steps, batch must be >= 1 and seq_len >= 2, got {spec.steps}, "
                          f"{spec.batch}, {spec.seq_len}")
    cfg = llama_config(spec, lang.vocab_size)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(spec.seed)
    model = LlamaForCausalLM(cfg)
    model.train()
    rng = np.random.default_rng(spec.seed + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.0)
    losses = []
    for step in range(spec.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, spec.steps, spec.lr)
        ids = torch.from_numpy(synthetic.sample_batch(lang, rng, spec.batch, spec.seq_len))
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % 50 == 0 or step == spec.steps - 1:
            log.info("base step %d/%d: loss %.4f", step + 1, spec.steps, losses[-1])
    model.config._attn_implementation = "eager"
    return model.eval(), losses


def save_base(model, directory, tokenizer=None) -> list[Path]:
    """``save_pretrained`` (safetensors weights + config.json), plus the tokenizer when given."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    return sorted(p for p in directory.iterdir() if p.is_file())
