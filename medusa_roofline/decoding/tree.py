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
from pathlib import Path

import numpy as np

from ..core.errors import ConfigError
from ..core.paths import CONFIG_DIR

DEFAULT_ACCEPTANCE = CONFIG_DIR / "acceptance" / "default.csv"
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


def check_paths(paths) -> list[Path_]:
    clean = []
    for p in paths:
        try:
            t = tuple(int(x) for x in p)
        except (TypeError, ValueError):
            raise ConfigError(f"tree: path {p!r} is not a sequence of integer ranks") from None
        if not t or min(t) < 0:
            raise ConfigError(f"tree: path {p!r} must be a non-empty sequence of ranks >= 0")
        clean.append(t)
    if not clean:
        raise ConfigError("tree: needs at least one path besides the root")
    if len(set(clean)) != len(clean):
        raise ConfigError("tree: paths contain duplicates")
    present = set(clean)
    for t in clean:
        if len(t) > 1 and t[:-1] not in present:
            raise ConfigError(f"tree: path {t} has no parent {t[:-1]} in the tree")
    return sorted(clean, key=lambda p: (len(p), p))
