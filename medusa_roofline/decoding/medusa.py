"""One real Medusa decoding step on a Hugging Face Llama model, and greedy generation with it.

A step (batch b, tree of n nodes, node 0 = root):

1. ``propose``: the heads read the hidden state that produced the pending *root* token (the base
   model's greedy token, not yet in the KV cache) and give their top-k tokens.
2. ``tree_candidates``: lay the root and those proposals out as the tree's n tokens.
3. ``verify_forward``: ONE forward pass of the n tokens through the base model on its preallocated
   KV cache (:mod:`.kv_cache`, written in place), with a 4-D additive tree mask and depth-based
   position ids (each node attends to its row's cached tokens, itself and its ancestors, at
   position ``tokens so far + depth``).
4. ``evaluate_tree``: greedy acceptance - along every root-to-leaf path, keep nodes while the node's
   token equals the base model's argmax at its parent; take the longest.
5. ``PreallocatedCache.compact``: move the accepted nodes' K/V in place to the slots right after the
   row's valid prefix; the stale tree slots are simply overwritten by the next step. The base
   model's argmax at the last accepted node is the bonus token, the next step's root, with that
   node's hidden state feeding the heads.

Ragged batches. Prompts of different lengths are *left*-padded to one length P with a 0/1
``attention_mask`` (Hugging Face's convention; :func:`pad_prompts` builds both). Row b's tokens live
in cache slots ``start[b] .. valid[b] - 1``: ``start`` is its padding, never visible to it, and its
positions count from ``start`` (``position = slot - start``), so every row sees exactly what it
would see alone. Rows accept different numbers of tokens, so ``valid`` diverges; all rows share one
write offset, the cache length ``max(valid)``, and a row's slots ``valid[b] ..`` are stale, hidden by
the mask. Compaction writes each row's accepted K/V at ``valid[b]..valid[b]+accepted[b]-1``.
Output is therefore token-identical to greedy decoding of every row on its own (up to float
rounding in near-tie logits). Finished rows stay in the batch (fixed shape for timing) but commit
nothing until all rows are done.

transformers 5.x passes a 4-D ``attention_mask`` through ``create_causal_mask`` unchanged and the
eager kernel adds it to the scores as-is, so the key length must equal cache length + n exactly;
RoPE is computed from the ``position_ids`` given.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ..core.devices import synchronize
from ..core.errors import ConfigError
from .kv_cache import PreallocatedCache
from .tree_buffers import TreeBuffers, decode_attention_mask, tree_attention_mask, tree_buffers, tree_position_ids


@dataclass
class VerifyOutput:
    logits: torch.Tensor  # [b, n, vocab]
    hidden: torch.Tensor  # [b, n, hidden], final-norm output (what the heads read)


@dataclass
class DecodeState:
    """Per-row decoding state between steps; ``root`` is decided but not yet in ``cache``."""

    cache: PreallocatedCache
    valid: torch.Tensor  # LongTensor [b]: end (exclusive) of each row's tokens in the cache
    root: torch.Tensor  # LongTensor [b]
    hidden: torch.Tensor  # [b, hidden]: the hidden state whose logits gave ``root``
    start: torch.Tensor | None = None  # LongTensor [b]: first slot of each row's tokens (its left padding)

    def __post_init__(self):
        if self.start is None:
            self.start = torch.zeros_like(self.valid)


@dataclass
class GenerationStats:
    steps: int
    mean_accepted: float  # tokens committed per step and row (root + accepted candidates), >= 1
    wall_s: float
    accept_lengths: list[list[int]] = field(default_factory=list)  # per step, per row

    def to_dict(self) -> dict:
        return {"steps": self.steps, "mean_accepted": self.mean_accepted, "wall_s": self.wall_s}


# --------------------------------------------------------------------------- cache and prompts

def new_cache(model, batch: int, capacity: int) -> PreallocatedCache:
    """A zeroed :class:`PreallocatedCache` for ``model`` in its dtype and on its device."""
    p = next(model.parameters())
    return PreallocatedCache(model.config, batch, capacity, p.dtype, p.device)


def crop_cache(cache, length: int) -> None:
    """Truncate every layer to ``length`` positions (``crop`` takes a negative count)."""
    extra = cache.get_seq_length() - length
    if extra < 0:
        raise ValueError(f"cannot crop a cache of {cache.get_seq_length()} positions to {length}")
    if extra:
        cache.crop(-extra)


def pad_prompts(prompts, pad_id: int = 0, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists of different lengths: ``(input_ids [b, P], attention_mask [b, P])``."""
    rows = [list(map(int, p)) for p in prompts]
    if not rows or min(len(r) for r in rows) < 1:
        raise ConfigError("prompts: every prompt needs at least one token")
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows], dtype=torch.long, device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long, device=device)
    return ids, mask


def prompt_start(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Each row's left padding ``[b]`` from a 0/1 ``attention_mask`` (zeros then ones; None: no padding)."""
    b, width = input_ids.shape
    if attention_mask is None:
        return torch.zeros(b, dtype=torch.long, device=input_ids.device)
    mask = attention_mask.to(input_ids.device)
    if tuple(mask.shape) != (b, width):
        raise ConfigError(f"prompts: attention_mask has shape {tuple(mask.shape)}, expected {(b, width)} like input_ids")
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ConfigError("prompts: attention_mask must hold only 0 (padding) and 1 (token)")
    mask = mask.long()
    if bool((mask[:, 1:] < mask[:, :-1]).any()):
        raise ConfigError("prompts: attention_mask must be left-padded (zeros before the tokens of each row)")
    if bool((mask[:, -1] == 0).any()):
        raise ConfigError("prompts: every row needs at least one token (a row of the attention_mask is all zeros)")
    return (mask == 0).sum(dim=1)


def prefill_inputs(start: torch.Tensor, width: int, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal 4-D mask ``[b, 1, P, P]`` hiding each row's padding, and positions counted from ``start``.

    A padding query still sees itself, so its (unused) output stays finite and never poisons the
    stale slots with NaN.
    """
    i = torch.arange(width, device=device)
    first = start.to(device)[:, None, None]
    visible = (i[None, None, :] <= i[None, :, None]) & ((i[None, None, :] >= first) | torch.eye(width, dtype=torch.bool,
                                                                                                device=device))
    mask = torch.zeros(start.shape[0], 1, width, width, dtype=dtype, device=device)
    mask.masked_fill_(~visible[:, None], torch.finfo(dtype).min)
    return mask, (i[None, :] - start.to(device)[:, None]).clamp(min=0)


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


def verify_inputs(model, buffers: TreeBuffers, cache, past_len, batch: int, device, start=0):
    """The 4-D tree mask and position ids ``verify_forward`` needs, for precomputing outside a timer."""
    dtype = next(model.parameters()).dtype
    mask = tree_attention_mask(buffers, past_len, batch, dtype, device, cache_len=cache.get_seq_length(), start=start)
    return mask, tree_position_ids(buffers, past_len, batch, start).to(device)


def verify_forward(model, input_ids: torch.Tensor, buffers: TreeBuffers, cache, past_len,
                   mask: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                   start=0) -> VerifyOutput:
    """The verification pass alone: n tree tokens through the model with tree mask and positions.

    Writes the n tokens' K/V into ``cache`` after its current length (undo with
    ``crop_cache(cache, cache_len_before)``). ``past_len`` is an int or LongTensor ``[b]`` of where each
    row's tokens end, ``start`` where they begin (left padding); the cache itself may be longer
    (ragged rows, stale slots hidden). ``mask``/``position_ids`` from ``verify_inputs`` may be passed
    in so a timing loop measures only the forward.
    """
    if mask is None or position_ids is None:
        mask, position_ids = verify_inputs(model, buffers, cache, past_len, input_ids.shape[0], input_ids.device, start)
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
def prefill(model, input_ids: torch.Tensor, capacity: int, attention_mask: torch.Tensor | None = None) -> DecodeState:
    """Run the (left-padded) prompt into a new cache of ``capacity`` slots; the greedy next token becomes the root."""
    start = prompt_start(input_ids, attention_mask)
    b, width = input_ids.shape
    if capacity < width:
        raise ValueError(f"a cache of {capacity} slots cannot hold a prompt of {width} tokens")
    cache = new_cache(model, b, capacity)
    mask, positions = prefill_inputs(start, width, next(model.parameters()).dtype, input_ids.device)
    out = model.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                      use_cache=True)
    hidden = out.last_hidden_state[:, -1]
    root = model.lm_head(hidden).argmax(dim=-1)
    valid = torch.full((b,), width, dtype=torch.long, device=input_ids.device)
    return DecodeState(cache=cache, valid=valid, root=root, hidden=hidden, start=start)


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
    out = verify_forward(model, tokens, buffers, state.cache, state.valid, start=state.start)
    accepted, nodes = evaluate_tree(tokens, out.logits, buffers)
    rows = torch.arange(tokens.shape[0], device=tokens.device)
    last = nodes[rows, accepted - 1]
    committed = tokens.gather(1, nodes)
    if active is not None:
        accepted = torch.where(active.to(accepted.device), accepted, torch.zeros_like(accepted))
    keep = accepted > 0
    state.root = torch.where(keep, out.logits[rows, last].argmax(dim=-1), state.root)
    state.hidden = torch.where(keep[:, None], out.hidden[rows, last], state.hidden)
    state.valid = state.cache.compact(state.valid, cache_len, nodes, accepted)
    return committed, accepted


def _check_lengths(model, input_ids, max_new_tokens: int, extra: int) -> None:
    if max_new_tokens < 1:
        raise ConfigError(f"max-new-tokens: must be >= 1, got {max_new_tokens}")
    limit = getattr(model.config, "max_position_embeddings", None)
    need = input_ids.shape[1] + max_new_tokens + extra
    if limit and need > limit:
        raise ConfigError(f"max-new-tokens: prompt {input_ids.shape[1]} + {max_new_tokens} new tokens "
                          f"(+{extra} tree-depth slots) exceeds the model's {limit} positions")


def medusa_generate(model, heads, input_ids: torch.Tensor, tree_paths, max_new_tokens: int,
                    attention_mask: torch.Tensor | None = None):
    """Greedy Medusa generation: ``(tokens [b, prompt + max_new_tokens], GenerationStats)``.

    ``heads`` is any callable mapping ``[b, 1, hidden]`` to ``[K, b, 1, vocab]`` logits with K at least
    the tree depth. Rows of different lengths come left-padded with an ``attention_mask``
    (:func:`pad_prompts`); the output keeps that padding. Lossless: the output equals
    ``greedy_generate`` for every row, and every row's new tokens equal those of the row run alone.
    """
    buffers = tree_buffers(tree_paths, device=input_ids.device)
    k = getattr(heads, "num_heads", None)
    if k is not None and buffers.num_heads > k:
        raise ConfigError(f"candidates: tree depth {buffers.num_heads} needs more Medusa heads than the {k} given")
    _check_lengths(model, input_ids, max_new_tokens, 2 * buffers.num_heads + 1)
    b, width = input_ids.shape
    # valid never passes prompt + max_new_tokens + depth - 1; the tree goes after the longest row
    capacity = width + max_new_tokens + buffers.num_heads + buffers.n
    synchronize(input_ids.device)
    t0 = time.perf_counter()
    state = prefill(model, input_ids, capacity, attention_mask)
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
def greedy_generate(model, input_ids: torch.Tensor, max_new_tokens: int, attention_mask: torch.Tensor | None = None):
    """Plain autoregressive greedy decoding on a preallocated cache: ``(tokens, GenerationStats)``.

    Ragged rows come left-padded with an ``attention_mask`` as in :func:`medusa_generate`.
    """
    _check_lengths(model, input_ids, max_new_tokens, 0)
    synchronize(input_ids.device)
    t0 = time.perf_counter()
    state = prefill(model, input_ids, input_ids.shape[1] + max_new_tokens, attention_mask)
    dtype, device = state.hidden.dtype, input_ids.device
    self_only = torch.ones(1, 1, dtype=torch.bool, device=device)
    tok = state.root[:, None]
    new = [tok]
    for _ in range(max_new_tokens - 1):
        mask = decode_attention_mask(self_only, state.valid, tok.shape[0], dtype, device, start=state.start)
        positions = (state.valid - state.start)[:, None]
        hidden = model.model(input_ids=tok, attention_mask=mask, position_ids=positions, past_key_values=state.cache,
                             use_cache=True).last_hidden_state
        state.valid = state.valid + 1
        tok = model.lm_head(hidden[:, -1]).argmax(dim=-1, keepdim=True)
        new.append(tok)
    synchronize(input_ids.device)
    wall = time.perf_counter() - t0
    stats = GenerationStats(steps=max_new_tokens - 1, mean_accepted=1.0, wall_s=wall)
    return torch.cat([input_ids, *new], dim=1), stats
