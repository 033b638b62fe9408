"""Tree files named in the config (``measure.trees``, ``microbench.trees``, ``speedup.trees``), checked once.

A tree file's stem names it; it runs as the mode ``tree-NAME`` in the sweep and the micro-benchmark
and adds a point of its node count to the speedup charts. Imported when the Snakefile is parsed:
it reads files only (no torch, no transformers).
"""

from __future__ import annotations

from pathlib import Path

from ..core.errors import ConfigError
from ..decoding import tree
from ..measure.grid import parse_mode, tree_mode
from .checks import config_path


def check_tree_sizes(candidates: list[int], key: str, table_path: str, trees=None) -> None:
    """Every tree size must be buildable from the acceptance table (sizes >= 2: the schema); the grid
    may be empty only when tree files (``trees``, the section's list) are given."""
    if not candidates and not trees:
        raise ConfigError(f"{key}: the sweep grid is empty; give at least one tree size >= 2 (or a tree file in "
                          f"{key.split('.')[0]}.trees)")
    largest = tree.max_tree_size(tree.load_acceptance_table(table_path))
    too_big = [n for n in candidates if n > largest]
    if too_big:
        raise ConfigError(f"{key}: {too_big} exceed the largest tree the acceptance table "
                          f"{table_path} can build ({largest} nodes); add ranks/heads to the table or lower candidates")


def resolve_tree_files(paths, key: str, basedir: Path, num_heads: int | None = None, top_k: int | None = None,
                       max_nodes: int | None = None) -> dict[str, tree.Tree]:
    """``{mode: tree}`` (mode ``tree-NAME``; the tree's ``origin`` is its resolved file), every file read once
    and its paths checked against the bounds (``None`` skips one); an error names ``key[i]``, the file and
    the offending path."""
    trees: dict[str, tree.Tree] = {}
    for i, value in enumerate(paths or []):
        where = f"{key}[{i}]"
        path = config_path(value, basedir, where)
        try:
            chosen = tree.load_tree_file(path, num_heads, top_k, max_nodes)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        mode = tree_mode(chosen.name, where)
        if mode in trees:
            raise ConfigError(f"{where}: a second tree named {chosen.name!r} ({path}; the first is "
                              f"{trees[mode].origin}); tree names are file stems and must differ")
        trees[mode] = chosen
    return trees


def table_heads(acceptance_table: str) -> int:
    """The Medusa heads an acceptance table describes (its rows): the deepest a tree may go."""
    return int(tree.load_acceptance_table(acceptance_table).shape[0])


def tree_paths_param(trees: dict[str, tree.Tree]) -> dict[str, list[list[int]]]:
    """``{name: paths}`` of resolved trees, for a figure's params: the recipe then holds the trees
    themselves, so an archive redraws without the files, and editing a file reruns the figure."""
    return {t.name: [list(p) for p in t.paths] for t in trees.values()}


def query_tokens(mode: str, trees: dict[str, tree.Tree]) -> int:
    """Query tokens per step of a mode (``ar``, ``medusa-N``, or ``tree-NAME`` among ``trees``)."""
    return parse_mode(mode, trees={t.name: t.candidates for t in trees.values()}).q_len
