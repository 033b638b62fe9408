"""The tensors a Medusa step needs about its tree: ancestor mask, retrieval paths, masks and positions.

Node 0 is the root (the base model's own token); the other nodes follow in Medusa's canonical order
(:func:`.tree.check_paths`), so a parent always precedes its children.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .tree import Path_, check_paths


@dataclass
class TreeBuffers:
    """Everything a Medusa step needs about the tree, as tensors indexed by node (0 = root).

    ``ancestor_mask[i, j]`` is True when node j is node i or one of its ancestors; it is the
    tree-attention pattern. ``retrieve_indices`` holds one row per leaf, the node indices on the
    root-to-leaf path padded with -1, which is how candidate sequences are read off the tree.
    """

    paths: list[Path_]
    n: int
    depth: torch.Tensor
    parent: torch.Tensor
    head: torch.Tensor
    rank: torch.Tensor
    ancestor_mask: torch.Tensor
    retrieve_indices: torch.Tensor
    num_heads: int
    top_k: int

    @property
    def max_depth(self) -> int:
        return self.num_heads


def tree_buffers(paths, device="cpu") -> TreeBuffers:
    """Build TreeBuffers for ``paths`` (any order; re-sorted canonically, parents checked)."""
    paths = check_paths(paths)
    n = len(paths) + 1
    index = {(): 0}
    for i, p in enumerate(paths, start=1):
        index[p] = i
    depth = [0] + [len(p) for p in paths]
    parent = [-1] + [index[p[:-1]] for p in paths]
    head = [-1] + [len(p) - 1 for p in paths]
    rank = [-1] + [p[-1] for p in paths]

    anc = torch.zeros(n, n, dtype=torch.bool)
    for i in range(n):
        j = i
        while j >= 0:
            anc[i, j] = True
            j = parent[j]

    has_child = set(parent[1:])
    leaves = [i for i in range(1, n) if i not in has_child]
    max_depth = max(depth)
    retrieve = torch.full((len(leaves), max_depth + 1), -1, dtype=torch.long)
    for row, leaf in enumerate(leaves):
        chain, j = [], leaf
        while j >= 0:
            chain.append(j)
            j = parent[j]
        chain.reverse()
        retrieve[row, : len(chain)] = torch.tensor(chain)

    as_long = lambda xs: torch.tensor(xs, dtype=torch.long, device=device)  # noqa: E731
    return TreeBuffers(
        paths=paths,
        n=n,
        depth=as_long(depth),
        parent=as_long(parent),
        head=as_long(head),
        rank=as_long(rank),
        ancestor_mask=anc.to(device),
        retrieve_indices=retrieve.to(device),
        num_heads=max_depth,
        top_k=max(p[-1] for p in paths) + 1 if paths else 0,
    )


def _row_vector(value, batch: int, device, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        vec = value.to(device=device, dtype=torch.long).reshape(-1)
        if vec.numel() == 1:
            vec = vec.expand(batch)
        if vec.numel() != batch:
            raise ValueError(f"{name} has {vec.numel()} entries for batch {batch}")
        return vec
    return torch.full((batch,), int(value), dtype=torch.long, device=device)


def decode_attention_mask(ancestor: torch.Tensor, past_len, batch: int, dtype, device="cpu",
                          cache_len: int | None = None, start=0) -> torch.Tensor:
    """Additive mask ``[batch, 1, n, cache_len + n]`` for n new tokens on a cache: 0 visible, finfo.min hidden.

    Row b's cached tokens are slots ``start[b] .. past_len[b] - 1`` (left padding before them, stale
    slots after them up to ``cache_len``, default ``max(past_len)``, both hidden); among the new
    tokens, token i sees token j iff ``ancestor[i, j]``. ``past_len`` and ``start`` are ints or
    LongTensors ``[batch]``.
    """
    past = _row_vector(past_len, batch, device, "past_len")
    first = _row_vector(start, batch, device, "start")
    if cache_len is None:
        cache_len = int(past.max()) if batch else 0
    n = ancestor.shape[0]
    slots = torch.arange(cache_len, device=device)[None, :]
    visible_cache = (slots < past[:, None]) & (slots >= first[:, None])  # [b, cache_len]
    visible = torch.cat(
        [visible_cache[:, None, :].expand(batch, n, cache_len),
         ancestor.to(device)[None].expand(batch, n, n)],
        dim=-1,
    )
    mask = torch.zeros(batch, 1, n, cache_len + n, dtype=dtype, device=device)
    return mask.masked_fill_(~visible[:, None], torch.finfo(dtype).min)


def tree_attention_mask(buffers: TreeBuffers, past_len, batch: int, dtype, device="cpu",
                        cache_len: int | None = None, start=0) -> torch.Tensor:
    """:func:`decode_attention_mask` for the tree: node i sees itself and its ancestors.

    ``past_len`` may be an int or a LongTensor ``[batch]`` for a ragged cache whose rows hold valid
    tokens from ``start[b]`` up to ``past_len[b]`` followed by stale slots up to ``cache_len``.
    """
    return decode_attention_mask(buffers.ancestor_mask, past_len, batch, dtype, device, cache_len, start)


def tree_position_ids(buffers: TreeBuffers, past_len, batch: int, start=0) -> torch.Tensor:
    """RoPE positions ``[batch, n]``: a node sits at its row's token count (valid minus padding) plus its depth."""
    device = buffers.depth.device
    past = _row_vector(past_len, batch, device, "past_len") - _row_vector(start, batch, device, "start")
    return past[:, None] + buffers.depth[None, :]
