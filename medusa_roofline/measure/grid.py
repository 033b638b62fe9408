"""A measuring job's mode: ``ar`` (one query token), ``medusa-N`` (the greedy N-node tree, root included) or
``tree-NAME`` (the tree of a tree file named NAME, its node count the query tokens)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..core.errors import ConfigError

_MODE_RE = re.compile(r"^medusa-(\d+)$")
TREE_PREFIX = "tree-"
TREE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.]*$")
"""A tree's name (its file stem) as a mode: letters, digits, '_' and '.', so that it is one path component
and one Snakemake wildcard value."""


@dataclass(frozen=True)
class Mode:
    name: str       # "ar" | "medusa-N" | "tree-NAME"
    phase: str      # "ar" | "medusa"
    q_len: int      # query tokens per step (1, or N tree tokens including the root)

    @property
    def candidates(self) -> int:
        return self.q_len


def tree_mode(name: str, key: str = "tree") -> str:
    """The mode that runs the tree named ``name`` (a tree file's stem): ``tree-NAME``."""
    if not TREE_NAME_RE.match(name):
        raise ConfigError(f"{key}: tree name {name!r} (the file's stem) may hold only letters, digits, '_' and '.', "
                          "starting with a letter or digit; rename the file")
    return TREE_PREFIX + name


def parse_mode(mode: str, key: str = "mode", trees: dict[str, int] | None = None) -> Mode:
    """``"ar"`` -> 1 query token; ``"medusa-N"`` -> N tree tokens (root included, N >= 2);
    ``"tree-NAME"`` -> the node count of tree NAME, looked up in ``trees`` (name -> nodes, root included)."""
    if not isinstance(mode, str):
        raise ConfigError(f"{key}: must be a string 'ar', 'medusa-N' or 'tree-NAME', got {mode!r}")
    if mode.strip().startswith(TREE_PREFIX):
        name = mode.strip()[len(TREE_PREFIX):]
        if name not in (trees or {}):
            known = ", ".join(sorted(trees or {})) or "none"
            raise ConfigError(f"{key}: {mode!r} names tree {name!r}, but no tree file of that name was given "
                              f"(trees given: {known})")
        return Mode(TREE_PREFIX + name, "medusa", int(trees[name]))
    text = mode.strip().lower()
    if text == "ar":
        return Mode("ar", "ar", 1)
    m = _MODE_RE.match(text)
    if m:
        n = int(m.group(1))
        if n < 2:
            raise ConfigError(f"{key}: {mode!r} needs N >= 2 tree tokens (root included)")
        return Mode(f"medusa-{n}", "medusa", n)
    raise ConfigError(f"{key}: unknown mode {mode!r}; allowed are 'ar', 'medusa-N' (N >= 2 tree tokens) or "
                      "'tree-NAME' (a tree file)")
