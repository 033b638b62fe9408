"""Medusa-1 head training by self-distillation: the base model stays frozen and the heads learn to
predict the base model's *own* greedy continuations.

Data: the base model decodes each prompt greedily (``new_tokens`` tokens); one more forward pass over
the whole sequence gives the final hidden states, computed once (the base never changes). Loss: for
head i, cross-entropy of its logits at position t against token t+2+i, for every t from the last
prompt token on (so every target is a token the base model generated), summed over heads as in the
reference ``medusa_lm_head`` training. Initialisation as in the reference: residual linears zero,
vocabulary projections copied from the base LM head (head i starts out predicting token t+1).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..core.errors import ConfigError
from .heads import MedusaHeads
from .medusa import greedy_generate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeadsSpec:
    """Heads shape and self-distillation budget: greedy tokens per prompt, optimizer steps, batch, lr."""

    num_heads: int = 4
    num_layers: int = 1
    new_tokens: int = 64
    steps: int = 120
    batch: int = 64
    lr: float = 3e-3
    seed: int = 0


@torch.inference_mode()
def distillation_data(model, prompts: torch.Tensor, new_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(tokens [n, P + new_tokens], hidden [n, P + new_tokens, hidden])`` of the base model's greedy runs."""
    tokens, _ = greedy_generate(model, prompts, new_tokens)
    hidden = model.model(input_ids=tokens).last_hidden_state
    return tokens, hidden


def heads_loss(logits: torch.Tensor, tokens: torch.Tensor, prompt_len: int) -> tuple[torch.Tensor, list[float]]:
    """Sum over heads of the mean cross-entropy of head i at t against token t+2+i (t >= prompt_len - 1)."""
    num_heads, _, length, vocab = logits.shape
    total, per_head = logits.new_zeros(()), []
    for i in range(num_heads):
        if length - 2 - i <= prompt_len - 1:
            raise ConfigError(f"heads: sequences of {length} tokens leave head {i} no target after a "
                              f"{prompt_len}-token prompt; generate more new tokens")
        pred = logits[i, :, prompt_len - 1: length - 2 - i]
        target = tokens[:, prompt_len + 1 + i:]
        loss = F.cross_entropy(pred.reshape(-1, vocab), target.reshape(-1))
        total = total + loss
        per_head.append(loss.item())
    return total, per_head


def train_heads(model, prompts: torch.Tensor, spec: HeadsSpec = HeadsSpec()) -> tuple[MedusaHeads, list[float]]:
    """Heads trained on the frozen ``model``'s greedy continuations of ``prompts [n, P]``; returns
    the heads (eval mode, float32, on the model's device) and the summed loss per step."""
    if spec.steps < 1 or spec.batch < 1:
        raise ConfigError(f"heads: steps and batch must be >= 1, got {spec.steps} and {spec.batch}")
    tokens, hidden = distillation_data(model, prompts, spec.new_tokens)
    tokens, hidden = tokens.clone(), hidden.clone().float()  # leave inference mode for autograd
    cfg = model.config
    device = hidden.device
    heads = MedusaHeads(cfg.hidden_size, cfg.vocab_size, spec.num_heads, spec.num_layers, seed=spec.seed,
                        zero_residual=True, dtype=torch.float32, device=device)
    with torch.no_grad():
        for head in heads.medusa_head:
            head[-1].weight.copy_(model.lm_head.weight.float())
    heads.train()
    opt = torch.optim.AdamW(heads.parameters(), lr=spec.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(spec.seed)
    losses = []
    for step in range(spec.steps):
        rows = torch.randint(0, tokens.shape[0], (min(spec.batch, tokens.shape[0]),), generator=gen).to(device)
        loss, per_head = heads_loss(heads(hidden[rows]), tokens[rows], prompts.shape[1])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % 50 == 0 or step == spec.steps - 1:
            log.info("heads step %d/%d: loss per head %s", step + 1, spec.steps, [round(v, 3) for v in per_head])
    return heads.eval(), losses
