"""The torch device and dtype a job runs on, checked where it runs, and out-of-memory handling.

The config resolves ``auto`` names once (:mod:`medusa_roofline.repro.settings`); these functions turn
the resolved names into torch objects on the machine that runs the job, and stop with a
:class:`ConfigError` when that machine cannot do what was asked (no CUDA, bfloat16 on a GPU without
it).
"""

from __future__ import annotations

import gc

import torch

from .dtypes import canonical_dtype
from .errors import ConfigError


def as_device(device) -> torch.device:
    return device if isinstance(device, torch.device) else torch.device(device)


def is_cuda(device) -> bool:
    return as_device(device).type == "cuda"


def synchronize(device) -> None:
    if is_cuda(device):
        torch.cuda.synchronize(as_device(device))


def resolve_device(device, key: str = "device") -> torch.device:
    """A usable torch device from ``cpu``, ``cuda`` or ``cuda:N`` (``cuda`` becomes the current index)."""
    try:
        dev = as_device(device if isinstance(device, torch.device) else str(device))
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"{key}: {device!r} is not a device; allowed are 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"{key}: device type {dev.type!r} is not supported; allowed are 'cpu', 'cuda', 'cuda:N'")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{key}: {device!r} requested but CUDA is not available on this machine")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        if dev.index >= torch.cuda.device_count():
            raise ConfigError(f"{key}: {device!r} but only {torch.cuda.device_count()} CUDA device(s) exist")
    return dev


def resolve_dtype(dtype, device, key: str = "dtype") -> torch.dtype:
    """The torch dtype for a dtype name (``auto``: float16 on CUDA, float32 on CPU) that ``device`` can run."""
    dev = resolve_device(device)
    name = canonical_dtype(dtype, dev.type, key)
    torch_dtype = getattr(torch, name)
    if dev.type == "cuda" and torch_dtype == torch.bfloat16:
        if not torch.cuda.is_bf16_supported(including_emulation=False):
            raise ConfigError(
                f"{key}: bfloat16 is not supported natively by {torch.cuda.get_device_name(dev)} "
                "(needs compute capability >= 8.0); use float16 or float32"
            )
    if torch_dtype != torch.float32:
        # Probe: the ops a step uses must exist for this dtype on this device.
        try:
            x = torch.ones(2, 4, 4, dtype=torch_dtype, device=dev)
            y = torch.nn.functional.softmax(x @ x.transpose(1, 2), dim=-1, dtype=torch.float32).to(torch_dtype)
            torch.nn.functional.silu(torch.nn.functional.linear(y, x[0]))
            synchronize(dev)
        except (RuntimeError, NotImplementedError) as exc:
            raise ConfigError(f"{key}: {name} cannot run on device {dev} ({exc}); use float32") from None
    return torch_dtype


def dtype_name(torch_dtype) -> str:
    return str(torch_dtype).removeprefix("torch.")


def is_oom(exc: BaseException) -> bool:
    """An allocation failure: CUDA out of memory, MemoryError, or the CPU allocator's RuntimeError."""
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return True
    return isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)


def free_memory(device) -> None:
    gc.collect()
    if as_device(device).type == "cuda":
        torch.cuda.empty_cache()
