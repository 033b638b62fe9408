"""A measuring job's mode: ``ar`` (one query token) or ``medusa-N`` (an N-node tree, root included)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..core.errors import ConfigError

_MODE_RE = re.compile(r"^medusa-(\d+)$")


@dataclass(frozen=True)
class Mode:
    name: str       # "ar" | "medusa-N"
    phase: str      # "ar" | "medusa"
    q_len: int      # query tokens per step (1, or N tree tokens including the root)

    @property
    def candidates(self) -> int:
        return self.q_len


def parse_mode(mode: str, key: str = "mode") -> Mode:
    """``"ar"`` -> 1 query token; ``"medusa-N"`` -> N tree tokens (root included, N >= 2)."""
    if not isinstance(mode, str):
        raise ConfigError(f"{key}: must be a string 'ar' or 'medusa-N', got {mode!r}")
    text = mode.strip().lower()
    if text == "ar":
        return Mode("ar", "ar", 1)
    m = _MODE_RE.match(text)
    if m:
        n = int(m.group(1))
        if n < 2:
            raise ConfigError(f"{key}: {mode!r} needs N >= 2 tree tokens (root included)")
        return Mode(f"medusa-{n}", "medusa", n)
    raise ConfigError(f"{key}: unknown mode {mode!r}; allowed are 'ar' or 'medusa-N' (N >= 2 tree tokens)")
