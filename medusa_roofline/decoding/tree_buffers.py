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


def _past_vector(past_len, batch: int, device) -> torch.Tensor:
    if isinstance(past_len, torch.Tensor):
        past = past_len.to(device=device, dtype=torch.long).reshape(-1)
        if past.numel() == 1:
            past = past.expand(batch)
        if past.numel() != batch:
            raise ValueError(f"past_len has {past.numel()} entries for batch {batch}")
        return past
    return torch.full((batch,), int(past_len), dtype=torch.long, device=device)


def tree_attention_mask(buffers: TreeBuffers, past_len, batch: int, dtype, device="cpu",
                        cache_len: int | None = None) -> torch.Tensor:
    """Additive mask ``[batch, 1, n, cache_len + n]``: 0 where visible, finfo(dtype).min where hidden.

    Node i sees the first ``past_len`` cached positions of its row and, among the tree tokens, itself
    and its ancestors. ``past_len`` may be an int or a LongTensor ``[batch]`` for a ragged cache whose
    rows hold ``past_len[b]`` valid tokens followed by stale slots up to ``cache_len`` (default
    ``max(past_len)``); the stale slots are hidden.
    """
    past = _past_vector(past_len, batch, device)
    if cache_len is None:
        cache_len = int(past.max()) if batch else 0
    n = buffers.n
    visible_cache = torch.arange(cache_len, device=device)[None, :] < past[:, None]  # [b, cache_len]
    visible = torch.cat(
        [visible_cache[:, None, :].expand(batch, n, cache_len),
         buffers.ancestor_mask.to(device)[None].expand(batch, n, n)],
        dim=-1,
    )
    mask = torch.zeros(batch, 1, n, cache_len + n, dtype=dtype, device=device)
    return mask.masked_fill_(~visible[:, None], torch.finfo(dtype).min)


def tree_position_ids(buffers: TreeBuffers, past_len, batch: int) -> torch.Tensor:
    """RoPE positions ``[batch, n]``: a node sits at its row's valid cache length plus its depth."""
    device = buffers.depth.device
    past = _past_vector(past_len, batch, device)
    return past[:, None] + buffers.depth[None, :]
