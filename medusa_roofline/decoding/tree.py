"""Medusa candidate trees: the acceptance table, greedy tree construction and expected tokens per step.

A tree is a list of *paths*; path ``(r0, r1, ..., rd)`` is the node reached by taking rank ``r0`` of
Medusa head 0, then rank ``r1`` of head 1, and so on. The root (the base model's own greedy token) is
implicit and is node 0 in every tensor below; the other nodes follow in Medusa's canonical order,
``sorted(paths, key=lambda p: (len(p), p))``, so a parent always precedes its children.
"""

from __future__ import annotations

import csv
import heapq
import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from ..core.errors import ConfigError
from ..core.paths import CONFIG_DIR

DEFAULT_ACCEPTANCE = CONFIG_DIR / "acceptance" / "default.csv"
TREES_DIR = CONFIG_DIR / "trees"
"""Shipped tree files (``medusa-roofline generate --tree config/trees/mc_sim_7b_63.yaml``)."""
ACCEPTANCE_COLUMNS = ("head", "rank", "accuracy")
MAX_HEADS = 64
"""Most Medusa heads an acceptance table may describe (published Medusa models use 3-5)."""
MAX_RANKS = 1024
"""Most ranks (top-k) per head (published tables use 10; trees never go near 1024 per head)."""

Path_ = tuple[int, ...]


# --------------------------------------------------------------------------- acceptance table

def load_acceptance_table(path: str | Path | None = None) -> np.ndarray:
    """Per-head, per-rank acceptance probabilities as a float64 array ``[num_heads, top_k]``.

    ``table[i, r]`` is the probability that head ``i``'s rank-``r`` proposal is the base model's
    greedy token. The CSV is long format with columns ``head,rank,accuracy`` and must fill every
    (head, rank) cell of the rectangle exactly once, so a typo cannot silently become a zero.
    Heads are 0..MAX_HEADS-1 and ranks 0..MAX_RANKS-1; the table is only allocated once the file's
    own rows fill it, so the work is bounded by the file's content, never by an index it declares.
    """
    path = Path(DEFAULT_ACCEPTANCE if path is None else path).expanduser()
    where = f"acceptance table {path}"
    if not path.is_file():
        raise ConfigError(f"acceptance: {where} does not exist or is not a file")
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in ACCEPTANCE_COLUMNS if c not in header]
            if missing:
                raise ConfigError(
                    f"acceptance: {where} lacks column(s) {', '.join(missing)}; "
                    f"required columns are {','.join(ACCEPTANCE_COLUMNS)}"
                )
            rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"acceptance: cannot read {where}: {exc}") from exc
    if not rows:
        raise ConfigError(f"acceptance: {where} has no data rows")

    cells: dict[tuple[int, int], float] = {}
    for line, row in enumerate(rows, start=2):
        try:
            head, rank = int(row["head"]), int(row["rank"])
            acc = float(row["accuracy"])
        except ValueError:
            raise ConfigError(
                f"acceptance: {where} line {line}: head and rank must be integers and accuracy a number, "
                f"got head={row['head']!r} rank={row['rank']!r} accuracy={row['accuracy']!r}"
            ) from None
        if not 0 <= head < MAX_HEADS:
            raise ConfigError(f"acceptance: {where} line {line}: head {head} is outside 0..{MAX_HEADS - 1} "
                              f"(heads are >= 0, at most {MAX_HEADS} of them)")
        if not 0 <= rank < MAX_RANKS:
            raise ConfigError(f"acceptance: {where} line {line}: rank {rank} is outside 0..{MAX_RANKS - 1} "
                              f"(ranks are >= 0, at most top-{MAX_RANKS} per head)")
        if not (0.0 <= acc <= 1.0) or math.isnan(acc):
            raise ConfigError(f"acceptance: {where} line {line}: accuracy {acc} is outside [0, 1]")
        if (head, rank) in cells:
            raise ConfigError(f"acceptance: {where} line {line}: duplicate cell head={head} rank={rank}")
        cells[(head, rank)] = acc

    num_heads = max(h for h, _ in cells) + 1
    top_k = max(r for _, r in cells) + 1
    if len(cells) != num_heads * top_k:  # cells are unique and inside the rectangle: some are absent
        absent = list(itertools.islice(((h, r) for h in range(num_heads) for r in range(top_k)
                                        if (h, r) not in cells), 5))
        shown = ", ".join(f"head={h} rank={r}" for h, r in absent)
        more = num_heads * top_k - len(cells) - len(absent)
        raise ConfigError(
            f"acceptance: {where} is missing cell(s) {shown}{f' and {more} more' if more else ''}; every head "
            f"0..{num_heads - 1} needs every rank 0..{top_k - 1}"
        )
    table = np.zeros((num_heads, top_k), dtype=np.float64)
    for (h, r), acc in cells.items():
        table[h, r] = acc
    return table


def acceptance_array(table) -> np.ndarray:
    """An acceptance table given as a CSV path (None: the default table) or as an array, as float64."""
    if table is None or isinstance(table, (str, bytes)) or hasattr(table, "__fspath__"):
        return load_acceptance_table(table)
    return np.asarray(table, dtype=np.float64)


# --------------------------------------------------------------------------- tree construction

def max_tree_size(table: np.ndarray) -> int:
    """Largest ``n_candidates`` (root included): every path of up to num_heads ranks below top_k."""
    num_heads, top_k = np.asarray(table).shape
    return 1 + sum(top_k ** d for d in range(1, num_heads + 1))


def _path_prob(table: np.ndarray, path: Path_, parent_prob: float) -> float:
    return parent_prob * float(table[len(path) - 1, path[-1]])


def build_tree(table: np.ndarray, n_candidates: int) -> list[Path_]:
    """The greedy Medusa tree with ``n_candidates`` query tokens (root included).

    As in Medusa's ``explore_graph``: grow from the root, each time adding the frontier node whose
    expected acceptance (the product of the table along its path) is highest. A node's frontier
    neighbours are its next sibling (rank + 1) and its first child (rank 0 of the next head), so a
    rank-r child appears only after the rank r-1 sibling. Ties go to the shorter, then the
    lexicographically smaller path, which makes the insertion order fixed: the tree of size m is the
    first m-1 insertions of any larger tree (nested). Returned in canonical (len, path) order.
    """
    table = np.asarray(table, dtype=np.float64)
    if table.ndim != 2 or table.shape[0] < 1 or table.shape[1] < 1:
        raise ConfigError(f"acceptance: table must be 2-D [num_heads, top_k], got shape {table.shape}")
    limit = max_tree_size(table)
    if isinstance(n_candidates, bool) or not isinstance(n_candidates, (int, np.integer)):
        raise ConfigError(f"candidates: must be an integer, got {n_candidates!r}")
    if n_candidates < 2 or n_candidates > limit:
        raise ConfigError(
            f"candidates: {n_candidates} is outside 2..{limit} (root included) for an acceptance table of "
            f"{table.shape[0]} heads x top-{table.shape[1]}"
        )
    num_heads, top_k = table.shape
    prob: dict[Path_, float] = {(): 1.0}
    first = (0,)
    prob[first] = _path_prob(table, first, 1.0)
    frontier = [(-prob[first], 1, first)]
    chosen: list[Path_] = []
    while len(chosen) < n_candidates - 1:
        _, _, path = heapq.heappop(frontier)
        chosen.append(path)
        neighbours = []
        if path[-1] + 1 < top_k:
            neighbours.append(path[:-1] + (path[-1] + 1,))
        if len(path) < num_heads:
            neighbours.append(path + (0,))
        for nb in neighbours:
            prob[nb] = _path_prob(table, nb, prob[nb[:-1]])
            heapq.heappush(frontier, (-prob[nb], len(nb), nb))
    return sorted(chosen, key=lambda p: (len(p), p))


def expected_accept_length(table: np.ndarray, paths: list[Path_]) -> float:
    """Expected tokens per step (root + accepted nodes) under independent per-head acceptance."""
    table = np.asarray(table, dtype=np.float64)
    return 1.0 + sum(math.prod(float(table[i, r]) for i, r in enumerate(p)) for p in paths)


def _shown(path) -> str:
    return "[" + ", ".join(map(str, path)) + "]"


def _as_path(p, where: str) -> Path_:
    items = list(p) if isinstance(p, (list, tuple)) else None
    if items is None or not all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in items):
        raise ConfigError(f"{where}: path {p!r} is not a list of integer ranks (e.g. [0, 1])")
    if not items or min(items) < 0:
        raise ConfigError(f"{where}: path {p!r} must be a non-empty list of ranks >= 0")
    return tuple(int(x) for x in items)


def validate_tree(paths, where: str = "tree", num_heads: int | None = None, top_k: int | None = None,
                  max_nodes: int | None = None) -> list[Path_]:
    """Check a tree's paths and return them in canonical order; every error names ``where`` and the path.

    A path is a non-empty list of per-head ranks. Refused: an empty tree; a rank ``>= top_k`` (the
    heads propose only their top-k tokens); a path deeper than ``num_heads``; a path listed twice; a
    path whose prefix (its parent node) is missing; more nodes, root included, than ``max_nodes``
    (the model's positions). ``None`` skips a bound.
    """
    clean = [_as_path(p, where) for p in paths]
    if not clean:
        raise ConfigError(f"{where}: the tree is empty; it needs at least one path besides the root (e.g. [0])")
    seen = set()
    for t in clean:
        if top_k is not None and max(t) >= top_k:
            raise ConfigError(f"{where}: path {_shown(t)} has rank {max(t)} beyond the heads' top-{top_k} "
                              f"(ranks 0..{top_k - 1})")
        if num_heads is not None and len(t) > num_heads:
            raise ConfigError(f"{where}: path {_shown(t)} is {len(t)} deep but there are only {num_heads} "
                              f"Medusa heads (one per depth)")
        if t in seen:
            raise ConfigError(f"{where}: path {_shown(t)} appears more than once (duplicates)")
        seen.add(t)
    for t in clean:
        if len(t) > 1 and t[:-1] not in seen:
            raise ConfigError(f"{where}: path {_shown(t)} has no parent {_shown(t[:-1])} in the tree")
    if max_nodes is not None and len(clean) + 1 > max_nodes:
        raise ConfigError(f"{where}: {len(clean) + 1} nodes (root included) exceed the {max_nodes} positions "
                          "the model allows")
    return sorted(clean, key=lambda p: (len(p), p))


def check_paths(paths) -> list[Path_]:
    """:func:`validate_tree` without bounds: well-formed, no duplicates, every parent present."""
    return validate_tree(paths, "tree")


# --------------------------------------------------------------------------- explicit trees

TREE_KEYS = ("paths", "source", "description")


GREEDY_PREFIX = "greedy-"
"""Name prefix of a tree built greedily from an acceptance table (``greedy-N``); a tree file's tree is named
for its file's stem."""


def greedy_name(n_candidates: int) -> str:
    return f"{GREEDY_PREFIX}{int(n_candidates)}"


def from_tree_file(name) -> bool:
    """Whether a tree name (a ``tree`` column value) names a tree file's tree: not a greedy tree, not unnamed."""
    return isinstance(name, str) and bool(name) and not name.startswith(GREEDY_PREFIX)


@dataclass(frozen=True)
class Tree:
    """A named tree: ``paths`` in canonical order; ``candidates`` counts the root too."""

    name: str
    paths: tuple[Path_, ...]
    origin: str = ""  # the file it was read from, or how it was built

    @property
    def candidates(self) -> int:
        return len(self.paths) + 1

    @property
    def depth(self) -> int:
        return max(len(p) for p in self.paths)


def load_tree_file(path, num_heads: int | None = None, top_k: int | None = None,
                   max_nodes: int | None = None) -> Tree:
    """Read a tree file: YAML (JSON is valid YAML) holding Medusa ``medusa_choices``-style paths.

    Either a bare list of paths, ``[[0], [0, 0], [1], [0, 1]]`` (the upstream Python literal pasted
    as is), or a mapping with ``paths:`` and optional ``source:``/``description:``. The tree's name
    is the file stem. Checked by :func:`validate_tree` against the given bounds.
    """
    path = Path(path).expanduser()
    where = f"tree file {path}"
    if not path.is_file():
        raise ConfigError(f"tree: {where} does not exist or is not a file")
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"tree: cannot read {where}: {exc}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"tree: {where}{line} is not valid YAML/JSON: {getattr(exc, 'problem', exc)}") from None
    if isinstance(data, dict):
        unknown = sorted(set(map(str, data)) - set(TREE_KEYS))
        if unknown or "paths" not in data:
            raise ConfigError(f"tree: {where} must map 'paths' (and optionally 'source', 'description'); "
                              f"{'unknown key(s) ' + ', '.join(unknown) if unknown else 'no paths key'}")
        data = data["paths"]
    if not isinstance(data, list):
        raise ConfigError(f"tree: {where} must hold a list of paths like [[0], [0, 0], [1]], got {type(data).__name__}")
    paths = validate_tree(data, f"tree: {where}", num_heads, top_k, max_nodes)
    return Tree(name=path.stem, paths=tuple(paths), origin=str(path))


def tree_paths_for(spec, table=None, num_heads: int | None = None, top_k: int | None = None,
                   max_nodes: int | None = None) -> Tree:
    """The tree a stage runs, from either a candidate count or an explicit tree.

    ``spec``: an int n (the greedy tree of n nodes built from the acceptance ``table``, default the
    shipped one), a :class:`Tree`, or a tree file path. Bounds default to the table's shape (a
    tree's expected tokens are read from it): ``num_heads`` rows, ``top_k`` columns.
    """
    if isinstance(spec, bool):
        raise ConfigError(f"candidates: must be an integer or a tree file, got {spec!r}")
    if isinstance(spec, (int, np.integer)) or table is not None:
        table = load_acceptance_table() if table is None else np.asarray(table, dtype=np.float64)
        num_heads = table.shape[0] if num_heads is None else num_heads
        top_k = table.shape[1] if top_k is None else top_k
    if isinstance(spec, (int, np.integer)):
        if max_nodes is not None and spec > max_nodes:
            raise ConfigError(f"candidates: {spec} nodes exceed the {max_nodes} positions the model allows")
        return Tree(name=greedy_name(spec), paths=tuple(build_tree(table, int(spec))), origin="acceptance table")
    if isinstance(spec, Tree):
        validate_tree(spec.paths, f"tree {spec.name}", num_heads, top_k, max_nodes)
        return spec
    if isinstance(spec, (str, Path)):
        return load_tree_file(spec, num_heads, top_k, max_nodes)
    raise ConfigError(f"candidates: expected a candidate count or a tree file, got {spec!r}")
