"""The published chart's read-off ranges (a small shipped YAML table), checked before anything is drawn.

The paper layer of the qk/pv chart draws, per series, the box of operational intensities and
FLOP/s that the published figure's dots span, read off the figure by eye. The table says where it
comes from (``source``) and how it was read (``how_read``); every range is checked here, because a
table read back from disk is untrusted until verified. No matplotlib: the Snakefile checks the
configured table when it is parsed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import ConfigError
from ..core.io import read_yaml

TOP_KEYS = ("source", "how_read", "chart", "model", "hardware", "ranges")
RANGE_KEYS = ("phase", "candidates", "oi", "tflop_per_s")
PHASES = ("ar", "medusa")


@dataclass(frozen=True)
class PaperRange:
    """One series of the published chart: its dots span ``oi`` (FLOP/B) x ``flops_per_s`` (FLOP/s)."""

    phase: str
    candidates: int
    oi: tuple[float, float]
    flops_per_s: tuple[float, float]


@dataclass(frozen=True)
class PaperTable:
    source: str
    how_read: str
    chart: str
    model: str
    hardware: str
    ranges: tuple[PaperRange, ...]


@dataclass(frozen=True)
class PaperOverlay:
    """Where the paper layer is drawn (``plot.paper_overlay``): its table (None when both switches are
    off) and the model and hardware it was read for."""

    table: str | None
    model: str
    hardware: str
    analytic: bool
    measured: bool

    def on_analytic(self, model: str, hardware: str) -> bool:
        """On the analytic qk/pv chart of the table's own model and hardware."""
        return self.analytic and (model, hardware) == (self.model, self.hardware)

    def on_measured(self, model: str) -> bool:
        """On the measured qk/pv chart of the table's model, whatever the device (a switch for GPU runs)."""
        return self.measured and model == self.model


def _text(raw: dict, key: str, where: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: {key} must be a non-empty string, got {value!r}")
    return value.strip()


def _span(value, key: str, where: str) -> tuple[float, float]:
    """[low, high]: two positive finite numbers, low <= high."""
    ok = (isinstance(value, list) and len(value) == 2
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))
    if not ok or not all(math.isfinite(v) and v > 0 for v in value) or value[0] > value[1]:
        raise ConfigError(f"{where}: {key} must be [low, high], two positive numbers with low <= high, got {value!r}")
    return float(value[0]), float(value[1])


def _range(raw, where: str) -> PaperRange:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a mapping with {', '.join(RANGE_KEYS)}, got {raw!r}")
    unknown = sorted(set(raw) - set(RANGE_KEYS))
    missing = [k for k in RANGE_KEYS if k not in raw]
    if unknown or missing:
        raise ConfigError(f"{where}: needs exactly {', '.join(RANGE_KEYS)} "
                          f"(missing: {', '.join(missing) or 'none'}; unknown: {', '.join(unknown) or 'none'})")
    phase, n = raw["phase"], raw["candidates"]
    if phase not in PHASES:
        raise ConfigError(f"{where}: phase must be one of {', '.join(PHASES)}, got {phase!r}")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1 or (phase == "ar" and n != 1):
        raise ConfigError(f"{where}: candidates must be a positive integer (1 for ar), got {n!r}")
    tflops = _span(raw["tflop_per_s"], "tflop_per_s", where)
    return PaperRange(phase, n, _span(raw["oi"], "oi", where), (tflops[0] * 1e12, tflops[1] * 1e12))


def load_paper_table(path: str | Path, where: str | None = None) -> PaperTable:
    """The read-off table at ``path``, checked; a ConfigError naming ``where`` (default: the path)."""
    where = str(path) if where is None else where
    raw = read_yaml(path, where)
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a mapping with {', '.join(TOP_KEYS)}")
    unknown = sorted(set(raw) - set(TOP_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(TOP_KEYS)}")
    entries = raw.get("ranges")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{where}: ranges must be a non-empty list")
    ranges = tuple(_range(entry, f"{where}: ranges[{i}]") for i, entry in enumerate(entries))
    seen: set[tuple[str, int]] = set()
    for i, r in enumerate(ranges):
        if (r.phase, r.candidates) in seen:
            raise ConfigError(f"{where}: ranges[{i}]: {r.phase} with {r.candidates} candidates is listed twice")
        seen.add((r.phase, r.candidates))
    return PaperTable(*(_text(raw, key, where) for key in TOP_KEYS[:-1]), ranges=ranges)
