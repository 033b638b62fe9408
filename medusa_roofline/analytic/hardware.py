"""Roofs: the hardware table (datasheet roofs per GPU, validated, matched to a detected device) and the
measured roofs a ceilings file holds."""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import ConfigError
from ..core.io import read_yaml
from ..core.paths import CONFIG_DIR

log = logging.getLogger(__name__)

DEFAULT_TABLE = CONFIG_DIR / "hardware.yaml"
REQUIRED = ("display_name", "bandwidth", "peak_flops", "source")
HOW_TO_ADD = (
    "add an entry to config/hardware.yaml (display_name, bandwidth in B/s, peak_flops in FLOP/s, "
    "source) whose `match:` list holds this device name or a run of its whole words (case-insensitive)"
)


@dataclass(frozen=True)
class Hardware:
    key: str
    display_name: str
    bandwidth: float  # bytes/s
    peak_flops: float  # FLOP/s
    source: str
    match: tuple[str, ...] = ()

    @property
    def ridge(self) -> float:
        """Operational intensity where the memory roof meets the compute roof."""
        return self.peak_flops / self.bandwidth


def as_number(value) -> float | None:
    """A float from a YAML number; also from strings like '1.935e12' that YAML 1.1 leaves unparsed."""
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def parse_entry(key: str, entry: dict, path: str | Path = "hardware.yaml") -> Hardware:
    if not isinstance(entry, dict):
        raise ConfigError(f"hardware.{key} in {path}: must be a mapping with {', '.join(REQUIRED)}")
    missing = [f for f in REQUIRED if f not in entry]
    if missing:
        raise ConfigError(f"hardware.{key} in {path}: missing {', '.join(missing)}")
    for field, unit in (("bandwidth", "bytes/s"), ("peak_flops", "FLOP/s")):
        value = as_number(entry[field])
        if value is None or not math.isfinite(value) or not value > 0:
            raise ConfigError(f"hardware.{key}.{field} in {path}: must be a positive, finite number of {unit}, "
                              f"got {entry[field]!r}")
    return Hardware(
        key=key,
        display_name=str(entry["display_name"]),
        bandwidth=as_number(entry["bandwidth"]),
        peak_flops=as_number(entry["peak_flops"]),
        source=str(entry["source"]),
        match=parse_match(key, entry.get("match", []), path),
    )


def words(name: str) -> tuple[str, ...]:
    """A device name as lower-case words: 'NVIDIA A100-SXM4-80GB' -> ('nvidia', 'a100', 'sxm4', '80gb')."""
    return tuple(re.findall(r"[a-z0-9.]+", name.lower()))


def parse_match(key: str, match, path: str | Path) -> tuple[str, ...]:
    """The `match` list of an entry: device-name strings, each with at least one word."""
    if not isinstance(match, list) or not all(isinstance(m, str) and words(m) for m in match):
        raise ConfigError(f"hardware.{key}.match in {path}: must be a list of device names (strings) as "
                          f"torch.cuda.get_device_name() reports them, got {match!r}")
    return tuple(match)


def load_table(path: str | Path = DEFAULT_TABLE, what: str = "hardware table") -> dict[str, Hardware]:
    """The hardware table at ``path``; two entries claiming the same device name are an error."""
    table = {str(key): parse_entry(str(key), entry, path) for key, entry in read_yaml(path, what).items()}
    owner: dict[tuple[str, ...], str] = {}
    for hw in table.values():
        for pattern in hw.match:
            other = owner.setdefault(words(pattern), hw.key)
            if other != hw.key:
                raise ConfigError(f"hardware.{hw.key}.match in {path}: {pattern!r} is also a match of "
                                  f"hardware.{other}; each device name may belong to one entry")
    return table


def get(table: dict[str, Hardware], key: str, what: str = "hardware") -> Hardware:
    if key not in table:
        raise ConfigError(f"{what}: unknown hardware {key!r}; known: {', '.join(sorted(table))}")
    return table[key]


def contains_words(name: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    """Whether ``pattern`` occurs in ``name`` as a run of whole words."""
    n = len(pattern)
    return any(name[i:i + n] == pattern for i in range(len(name) - n + 1))


def match_device(table: dict[str, Hardware], device_name: str) -> Hardware | None:
    """The most specific table entry for a device name, or None.

    A `match` string matches when its words occur, in order and whole, among the name's words, so
    "A40" never matches "RTX A4000" and "H200" never matches "GH200". Of several matching entries
    the one with the most words wins: "NVIDIA H200 NVL" is the H200 NVL entry, not the H200 (SXM).
    """
    name = words(device_name)
    best, best_len = None, 0
    for hw in table.values():
        for pattern in map(words, hw.match):
            if len(pattern) > best_len and contains_words(name, pattern):
                best, best_len = hw, len(pattern)
    return best


def detect_hardware(table: dict[str, Hardware], device_name: str) -> Hardware | None:
    """The hardware-table entry for a device name (``hardware.match_device``), or None.

    Either way the outcome is logged once, as information: a device without a datasheet entry (a
    CPU, a GPU the table lacks) is an expected situation, its charts carry the measured roofs only
    and say so; the message tells how to add an entry."""
    hw = match_device(table, device_name or "")
    if hw is None:
        log.info("device %r has no datasheet entry in the hardware table: its charts draw the measured roofs "
                 "only; to draw datasheet roofs too, %s", device_name, HOW_TO_ADD)
    else:
        log.info("device %r is hardware entry %r (%s)", device_name, hw.key, hw.display_name)
    return hw


def measured_roofs(ceilings: dict, dtype: str | None = None) -> tuple[float, float]:
    """(peak FLOP/s, bandwidth B/s) from a ceilings dict; peak in ``dtype`` when it was measured."""
    matmul = ceilings.get("matmul", {})
    peak = ceilings["peak_flops_per_s"]
    if dtype is not None and dtype in matmul:
        peak = matmul[dtype]["median"]
    return float(peak), float(ceilings["bandwidth_bytes_per_s"])


def measured_hardware(ceilings: dict, dtype: str | None = None, key: str | None = None) -> Hardware:
    """The measured roofs as a :class:`Hardware` (display name: the device name + "measured")."""
    peak, bandwidth = measured_roofs(ceilings, dtype)
    return Hardware(key=key or str(ceilings.get("device", "measured")),
                    display_name=f"{ceilings.get('device_name', 'device')} (measured)",
                    bandwidth=bandwidth, peak_flops=peak,
                    source=f"measured ceilings ({ceilings.get('bandwidth_kind', 'copy')} bandwidth, matmul peak)")


def load_ceilings(path: str | Path) -> dict:
    data = json.loads(Path(path).read_text())
    for key in ("bandwidth_bytes_per_s", "peak_flops_per_s", "device_name"):
        if key not in data:
            raise ValueError(f"ceilings file {path} lacks {key!r}; rerun the ceilings rule")
    return data
