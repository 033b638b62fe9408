"""The one table of element types: accepted spellings, canonical names and bytes per element."""

from __future__ import annotations

from .errors import ConfigError

DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4}
"""Bytes per element of each canonical dtype name (the names torch uses)."""

ALIASES = {
    "float32": "float32", "fp32": "float32", "float": "float32",
    "float16": "float16", "fp16": "float16", "half": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
}
"""Every spelling the config, the command line and torch (``torch.float16`` -> ``float16``) use."""


def auto_dtype(device_type: str) -> str:
    """What ``auto`` means: float16 on CUDA, float32 on the CPU."""
    return "float16" if device_type == "cuda" else "float32"


def canonical_dtype(dtype, device_type: str = "cpu", key: str = "dtype") -> str:
    """A canonical dtype name from any accepted spelling (``auto`` follows ``device_type``)."""
    name = str(dtype).strip().lower().removeprefix("torch.")
    if name == "auto":
        return auto_dtype(device_type)
    if name not in ALIASES:
        raise ConfigError(f"{key}: unknown dtype {dtype!r}; allowed are auto, float32, float16, bfloat16")
    return ALIASES[name]
