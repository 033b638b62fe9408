"""The attention backends the micro-benchmark can time, by name: what each is timed as and how charts show it.

One registry, read by the config check (no torch here: the Snakefile imports it at parse time), by
:mod:`.attention` (which implements each backend's ``prepare_<name>``) and by the figures. Adding a
backend: an entry here and its ``prepare_<name>`` in :mod:`.attention`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..analytic.costmodel import ATTENTION_OPS, FUSED_ATTENTION_OP
from ..core.errors import ConfigError


@dataclass(frozen=True)
class Backend:
    name: str
    fused: bool  # one kernel (op ``attn``), or the eager qk / softmax / pv
    label: str  # legend text
    marker: str  # matplotlib marker of its dots

    @property
    def ops(self) -> tuple[str, ...]:
        return (FUSED_ATTENTION_OP,) if self.fused else ATTENTION_OPS


BACKENDS = {
    "eager": Backend("eager", False, "eager qk/pv (unfused: scores in memory)", "o"),
    "sdpa": Backend("sdpa", True, "SDPA attn (fused)", "s"),
    "flex": Backend("flex", True, "FlexAttention attn (fused)", "^"),
}


def parse_backends(values, key: str = "attention_backends") -> list[str]:
    """A non-empty list of backend names (a single string is one backend); order kept, duplicates dropped."""
    if isinstance(values, str):
        values = [values]
    try:
        items = list(values)
    except TypeError:
        raise ConfigError(f"{key}: must be a list of {', '.join(BACKENDS)}, got {values!r}") from None
    if not items:
        raise ConfigError(f"{key}: the list is empty; allowed are {', '.join(BACKENDS)}")
    out = []
    for item in items:
        name = str(item).strip().lower()
        if name not in BACKENDS:
            raise ConfigError(f"{key}: unknown attention backend {item!r}; allowed are {', '.join(BACKENDS)}")
        if name not in out:
            out.append(name)
    return out


def backend_ops(backend: str) -> tuple[str, ...]:
    """The ops a backend is timed as: qk/softmax/pv for eager, the one fused ``attn`` otherwise."""
    return BACKENDS[backend].ops
