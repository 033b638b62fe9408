"""What a measuring job runs over: its mode (``ar`` or ``medusa-N``) and its (batch, kv_len) grid."""

from __future__ import annotations

import operator
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


def positive_ints(values, key: str) -> list[int]:
    if isinstance(values, (int,)) and not isinstance(values, bool):
        values = [values]
    try:
        out = list(values)
    except TypeError:
        raise ConfigError(f"{key}: must be a list of positive integers, got {values!r}") from None
    if not out:
        raise ConfigError(f"{key}: the grid is empty; give at least one positive integer")
    clean = []
    for v in out:
        try:
            if isinstance(v, bool):
                raise TypeError
            v = operator.index(v)
        except TypeError:
            raise ConfigError(f"{key}: {v!r} is not an integer; allowed are positive integers") from None
        if v <= 0:
            raise ConfigError(f"{key}: {v} is not positive; allowed are integers >= 1")
        clean.append(v)
    return sorted(set(clean))


def check_reps(reps, warmup):
    if isinstance(reps, bool) or not isinstance(reps, int) or reps < 1:
        raise ConfigError(f"reps: must be an integer >= 1, got {reps!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ConfigError(f"warmup: must be an integer >= 0, got {warmup!r}")
