"""One real Medusa decoding step on a Hugging Face Llama model, and greedy generation with it.

A step (batch b, tree of n nodes, node 0 = root):

1. ``propose``: the heads read the hidden state that produced the pending *root* token (the base
   model's greedy token, not yet in the KV cache) and give their top-k tokens.
2. ``tree_candidates``: lay the root and those proposals out as the tree's n tokens.
3. ``verify_forward``: ONE forward pass of the n tokens through the base model on its DynamicCache,
   with a 4-D additive tree mask and depth-based position ids (each node attends to the cache,
   itself and its ancestors, at position ``valid_len + depth``).
4. ``evaluate_tree``: greedy acceptance - along every root-to-leaf path, keep nodes while the node's
   token equals the base model's argmax at its parent; take the longest.
5. ``compact_cache``: move the accepted nodes' K/V to the slots right after the row's valid prefix
   and crop the stale tree entries. The base model's argmax at the last accepted node is the bonus
   token, the next step's root, with that node's hidden state feeding the heads.

Batch > 1, ragged rows: rows accept different numbers of tokens, so each row keeps its own valid
length ``valid[b]`` inside one right-padded cache of length ``max(valid)``. Slots ``valid[b]..`` of a
row are stale and hidden by the tree mask; position ids are per row. Compaction writes each row's
accepted K/V at ``valid[b]..valid[b]+accepted[b]-1``, then the cache is cropped to the new
``max(valid)``. Every row therefore sees exactly its own greedy prefix, so output is token-identical
to greedy decoding for every row (up to float rounding in near-tie logits). Finished rows stay in
the batch (fixed shape for timing) but commit nothing until all rows are done.

transformers 5.x passes a 4-D ``attention_mask`` through ``create_causal_mask`` unchanged and the
eager kernel adds it to the scores as-is, so the key length must equal cache length + n exactly;
RoPE is computed from the ``position_ids`` given.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from ..core.devices import synchronize
from ..core.errors import ConfigError
from .tree_buffers import TreeBuffers, tree_attention_mask, tree_buffers, tree_position_ids


@dataclass
class VerifyOutput:
    logits: torch.Tensor  # [b, n, vocab]
    hidden: torch.Tensor  # [b, n, hidden], final-norm output (what the heads read)


@dataclass
class DecodeState:
    """Per-row decoding state between steps; ``root`` is decided but not yet in ``cache``."""

    cache: DynamicCache
    valid: torch.Tensor  # LongTensor [b]: tokens of each row held in the cache
    root: torch.Tensor  # LongTensor [b]
    hidden: torch.Tensor  # [b, hidden]: the hidden state whose logits gave ``root``


@dataclass
class GenerationStats:
    steps: int
    mean_accepted: float  # tokens committed per step and row (root + accepted candidates), >= 1
    wall_s: float
    accept_lengths: list[list[int]] = field(default_factory=list)  # per step, per row

    def to_dict(self) -> dict:
        return {"steps": self.steps, "mean_accepted": self.mean_accepted, "wall_s": self.wall_s}


# --------------------------------------------------------------------------- cache helpers

def new_cache(model) -> DynamicCache:
    return DynamicCache(config=model.config)


def crop_cache(cache: DynamicCache, length: int) -> None:
    """Truncate every layer to ``length`` positions (transformers 5 ``crop`` takes a negative count)."""
    extra = cache.get_seq_length() - length
    if extra < 0:
        raise ValueError(f"cannot crop a cache of {cache.get_seq_length()} positions to {length}")
    if extra:
        cache.crop(-extra)


def compact_cache(cache: DynamicCache, valid: torch.Tensor, cache_len: int, nodes: torch.Tensor,
                  accepted: torch.Tensor) -> torch.Tensor:
    """Gather accepted tree K/V into place after each row's valid prefix, crop, return new ``valid``.

    The cache holds ``cache_len`` prefix slots followed by the n tree entries. ``nodes [b, A]`` are
    accepted node indices (root first, padded with any valid index), ``accepted [b]`` how many of
    them count. Sources are read before writing, and the padding writes land beyond the new valid
    length, so overlapping ranges are safe.
    """
    b, width = nodes.shape
    device = nodes.device
    offs = torch.arange(width, device=device)
    src = cache_len + nodes  # [b, A]
    dst = valid[:, None] + offs[None, :]  # [b, A]
    for layer in cache.layers:
        for name in ("keys", "values"):
            t = getattr(layer, name)
            kvh, d = t.shape[1], t.shape[3]
            s = src.to(t.device)[:, None, :, None].expand(b, kvh, width, d)
            moved = t.gather(2, s)
            t.scatter_(2, dst.to(t.device)[:, None, :, None].expand(b, kvh, width, d), moved)
    new_valid = valid + accepted
    crop_cache(cache, int(new_valid.max()))
    return new_valid


# --------------------------------------------------------------------------- step pieces

def propose(heads, hidden: torch.Tensor, top_k: int) -> torch.Tensor:
    """Top-k token ids of each head, ``[b, num_heads, top_k]``, from hidden states ``[b, hidden]``."""
    params = getattr(heads, "parameters", None)
    p = next(params(), None) if params is not None else None
    x = hidden[:, None, :] if p is None else hidden[:, None, :].to(p.dtype)
    logits = heads(x)  # [K, b, 1, vocab]
    return logits[:, :, 0, :].topk(top_k, dim=-1).indices.transpose(0, 1)


def tree_candidates(root: torch.Tensor, proposals: torch.Tensor, buffers: TreeBuffers) -> torch.Tensor:
    """Tree tokens ``[b, n]``: node 0 is the root, node i is head(i)'s rank(i) proposal."""
    b = root.shape[0]
    head = buffers.head[1:].to(proposals.device)
    rank = buffers.rank[1:].to(proposals.device)
    rest = proposals[:, head, rank]  # [b, n-1]
    return torch.cat([root.view(b, 1), rest], dim=1)


def verify_inputs(model, buffers: TreeBuffers, cache: DynamicCache, past_len, batch: int, device):
    """The 4-D tree mask and position ids ``verify_forward`` needs, for precomputing outside a timer."""
    dtype = next(model.parameters()).dtype
    mask = tree_attention_mask(buffers, past_len, batch, dtype, device, cache_len=cache.get_seq_length())
    return mask, tree_position_ids(buffers, past_len, batch).to(device)


def verify_forward(model, input_ids: torch.Tensor, buffers: TreeBuffers, cache: DynamicCache, past_len,
                   mask: torch.Tensor | None = None, position_ids: torch.Tensor | None = None) -> VerifyOutput:
    """The verification pass alone: n tree tokens through the model with tree mask and positions.

    Appends the n tokens' K/V to ``cache`` (undo with ``crop_cache(cache, cache_len_before)``).
    ``past_len`` is an int or LongTensor ``[b]`` of valid cache lengths; the cache itself may be longer
    (ragged rows, stale slots hidden). ``mask``/``position_ids`` from ``verify_inputs`` may be passed
    in so a timing loop measures only the forward.
    """
    if mask is None or position_ids is None:
        mask, position_ids = verify_inputs(model, buffers, cache, past_len, input_ids.shape[0], input_ids.device)
    out = model.model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids,
                      past_key_values=cache, use_cache=True)
    hidden = out.last_hidden_state
    return VerifyOutput(logits=model.lm_head(hidden), hidden=hidden)


def evaluate_tree(tokens: torch.Tensor, logits: torch.Tensor, buffers: TreeBuffers):
    """Greedy acceptance: returns ``(accepted [b] >= 1 incl. root, nodes [b, max_depth+1])``.

    ``nodes`` is the chosen root-to-leaf node path (-1 padding replaced by 0); its first
    ``accepted[b]`` entries are the accepted nodes. The first longest path wins ties; distinct
    nodes cannot both be accepted at one depth since a head's top-k tokens are distinct.
    """
    preds = logits.argmax(dim=-1)  # [b, n]
    ridx = buffers.retrieve_indices.to(tokens.device)  # [L, D+1]
    safe = ridx.clamp(min=0)
    cand = tokens[:, safe]  # [b, L, D+1]
    parent_pred = preds[:, safe[:, :-1]]  # [b, L, D]
    match = (cand[:, :, 1:] == parent_pred) & (ridx[None, :, 1:] >= 0)
    accepted = 1 + match.long().cumprod(dim=-1).sum(dim=-1)  # [b, L]
    best = accepted.argmax(dim=-1)  # first max
    return accepted.gather(1, best[:, None]).squeeze(1), safe[best]


@torch.inference_mode()
def prefill(model, input_ids: torch.Tensor) -> DecodeState:
    """Run the prompt; the greedy next token becomes the pending root."""
    cache = new_cache(model)
    out = model.model(input_ids=input_ids, past_key_values=cache, use_cache=True)
    hidden = out.last_hidden_state[:, -1]
    root = model.lm_head(hidden).argmax(dim=-1)
    valid = torch.full((input_ids.shape[0],), input_ids.shape[1], dtype=torch.long, device=input_ids.device)
    return DecodeState(cache=cache, valid=valid, root=root, hidden=hidden)


@torch.inference_mode()
def medusa_step(model, heads, state: DecodeState, buffers: TreeBuffers, active: torch.Tensor | None = None):
    """One Medusa step; returns ``(committed [b, max_depth+1], accepted [b])`` and updates ``state``.

    ``committed[b, :accepted[b]]`` are the tokens now appended to row b's cache (old root plus
    accepted candidates); the bonus token is the new ``state.root``. Rows where ``active`` is False
    still run through the forward (the batch shape stays fixed) but commit nothing: accepted 0,
    cache, root and hidden unchanged.
    """
    proposals = propose(heads, state.hidden, buffers.top_k)
    tokens = tree_candidates(state.root, proposals, buffers)
    cache_len = state.cache.get_seq_length()
    out = verify_forward(model, tokens, buffers, state.cache, state.valid)
    accepted, nodes = evaluate_tree(tokens, out.logits, buffers)
    rows = torch.arange(tokens.shape[0], device=tokens.device)
    last = nodes[rows, accepted - 1]
    committed = tokens.gather(1, nodes)
    if active is not None:
        accepted = torch.where(active.to(accepted.device), accepted, torch.zeros_like(accepted))
    keep = accepted > 0
    state.root = torch.where(keep, out.logits[rows, last].argmax(dim=-1), state.root)
    state.hidden = torch.where(keep[:, None], out.hidden[rows, last], state.hidden)
    state.valid = compact_cache(state.cache, state.valid, cache_len, nodes, accepted)
    return committed, accepted


def _check_lengths(model, input_ids, max_new_tokens: int, extra: int) -> None:
    if max_new_tokens < 1:
        raise ConfigError(f"max-new-tokens: must be >= 1, got {max_new_tokens}")
    limit = getattr(model.config, "max_position_embeddings", None)
    need = input_ids.shape[1] + max_new_tokens + extra
    if limit and need > limit:
        raise ConfigError(f"max-new-tokens: prompt {input_ids.shape[1]} + {max_new_tokens} new tokens "
                          f"(+{extra} tree-depth slots) exceeds the model's {limit} positions")


def medusa_generate(model, heads, input_ids: torch.Tensor, tree_paths, max_new_tokens: int):
    """Greedy Medusa generation: ``(tokens [b, prompt + max_new_tokens], GenerationStats)``.

    ``heads`` is any callable mapping ``[b, 1, hidden]`` to ``[K, b, 1, vocab]`` logits with K at least
    the tree depth. Lossless: the output equals ``greedy_generate`` for every row.
    """
    buffers = tree_buffers(tree_paths, device=input_ids.device)
    k = getattr(heads, "num_heads", None)
    if k is not None and buffers.num_heads > k:
        raise ConfigError(f"candidates: tree depth {buffers.num_heads} needs more Medusa heads than the {k} given")
    _check_lengths(model, input_ids, max_new_tokens, 2 * buffers.num_heads + 1)
    b = input_ids.shape[0]
    synchronize(input_ids.device)
    t0 = time.perf_counter()
    state = prefill(model, input_ids)
    out = [[] for _ in range(b)]
    history: list[list[int]] = []
    while min(len(o) for o in out) + 1 < max_new_tokens:
        active = torch.tensor([len(o) + 1 < max_new_tokens for o in out], device=input_ids.device)
        committed, accepted = medusa_step(model, heads, state, buffers, active)
        acc = accepted.tolist()
        history.append(acc)
        rows = committed.tolist()
        for i in range(b):
            out[i].extend(rows[i][: acc[i]])
    for i in range(b):
        out[i].append(int(state.root[i]))
    synchronize(input_ids.device)
    wall = time.perf_counter() - t0
    new = torch.tensor([o[:max_new_tokens] for o in out], dtype=input_ids.dtype, device=input_ids.device)
    counted = [a for step in history for a in step if a > 0]
    stats = GenerationStats(steps=len(history), mean_accepted=sum(counted) / len(counted) if counted else 1.0,
                            wall_s=wall, accept_lengths=history)
    return torch.cat([input_ids, new], dim=1), stats


@torch.inference_mode()
def greedy_generate(model, input_ids: torch.Tensor, max_new_tokens: int):
    """Plain autoregressive greedy decoding with a DynamicCache: ``(tokens, GenerationStats)``."""
    _check_lengths(model, input_ids, max_new_tokens, 0)
    synchronize(input_ids.device)
    t0 = time.perf_counter()
    cache = new_cache(model)
    logits = model(input_ids=input_ids, past_key_values=cache, use_cache=True, logits_to_keep=1).logits
    tok = logits[:, -1].argmax(dim=-1, keepdim=True)
    new = [tok]
    for _ in range(max_new_tokens - 1):
        logits = model(input_ids=tok, past_key_values=cache, use_cache=True, logits_to_keep=1).logits
        tok = logits[:, -1].argmax(dim=-1, keepdim=True)
        new.append(tok)
    synchronize(input_ids.device)
    wall = time.perf_counter() - t0
    stats = GenerationStats(steps=max_new_tokens - 1, mean_accepted=1.0, wall_s=wall)
    return torch.cat([input_ids, *new], dim=1), stats
