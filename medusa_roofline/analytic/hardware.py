"""Roofs: the hardware table (datasheet roofs per GPU, validated, matched to a detected device) and the
measured roofs a ceilings file holds."""

from __future__ import annotations

import json
import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import ConfigError
from ..core.io import read_yaml

log = logging.getLogger(__name__)

REQUIRED = ("display_name", "bandwidth", "peak_flops", "source")
HOW_TO_ADD = (
    "add an entry to config/hardware.yaml (display_name, bandwidth in B/s, peak_flops in FLOP/s, "
    "source) whose `match:` list holds a case-insensitive substring of this device name; until then "
    "only the measured roofs are drawn"
)



class UnknownDeviceWarning(UserWarning):
    """The device matches no entry of the hardware table: no datasheet roof for it."""




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
        match=tuple(str(m) for m in entry.get("match", ())),
    )


def load_table(path: str | Path, what: str = "hardware table") -> dict[str, Hardware]:
    return {str(key): parse_entry(str(key), entry, path) for key, entry in read_yaml(path, what).items()}


def get(table: dict[str, Hardware], key: str, what: str = "hardware") -> Hardware:
    if key not in table:
        raise ConfigError(f"{what}: unknown hardware {key!r}; known: {', '.join(sorted(table))}")
    return table[key]


def match_device(table: dict[str, Hardware], device_name: str) -> Hardware | None:
    """The table entry whose `match` strings occur in a device name (longest match wins)."""
    name = device_name.lower()
    best, best_len = None, 0
    for hw in table.values():
        for pattern in hw.match:
            if pattern.lower() in name and len(pattern) > best_len:
                best, best_len = hw, len(pattern)
    return best


def detect_hardware(table: dict[str, Hardware], device_name: str, warn: bool = True) -> Hardware | None:
    """The hardware-table entry for a device name (``hardware.match_device``), or None with a warning."""
    hw = match_device(table, device_name or "")
    if hw is None and warn:
        message = f"device {device_name!r} matches no entry of the hardware table: {HOW_TO_ADD}"
        log.warning("%s", message)
        warnings.warn(message, UnknownDeviceWarning, stacklevel=2)
    elif hw is not None:
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
