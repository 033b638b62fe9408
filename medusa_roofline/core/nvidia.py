"""Whether this machine shows an NVIDIA GPU, asked of the operating system, not of torch.

``measure.device: auto`` is resolved when the Snakefile is parsed, where torch is not imported
(:mod:`medusa_roofline.repro.settings`); the job checks again with torch
(:func:`medusa_roofline.core.devices.resolve_device`) before it measures anything.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

PROC_GPUS = Path("/proc/driver/nvidia/gpus")
DEV_DIR = Path("/dev")
GPU_NODE = re.compile(r"nvidia\d+")
CUDA_DEVICE_ID = re.compile(r"(\d+|GPU-\S+|MIG-\S+)")


def cuda_visible_devices_hide_all(value: str | None) -> bool:
    """Whether ``CUDA_VISIBLE_DEVICES`` hides every GPU, as the CUDA runtime reads it.

    Unset: every GPU is visible. Otherwise the runtime takes the comma-separated entries (indices,
    ``GPU-<uuid>``, ``MIG-<uuid>``) up to the first invalid one, so an empty value, ``-1`` or
    ``NoDevFiles`` first leaves none."""
    if value is None:
        return False
    first = value.split(",")[0].strip()
    return not CUDA_DEVICE_ID.fullmatch(first)


def nvidia_smi_lists_gpus() -> bool:
    """``nvidia-smi -L`` prints at least one ``GPU N: ...`` line (False when it is missing or fails)."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return False
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0 and any(line.startswith("GPU ") for line in out.stdout.splitlines())


def nvidia_gpu_visible() -> bool:
    """Whether the measuring jobs will see an NVIDIA GPU, decided without importing torch.

    ``CUDA_VISIBLE_DEVICES`` hiding every GPU says no. Otherwise any of: the driver's
    ``/proc/driver/nvidia/gpus`` entries, a ``/dev/nvidiaN`` device node (containers and sandboxed
    GPU hosts often have the nodes but no ``/proc`` driver tree), or ``nvidia-smi -L`` listing a GPU.
    The job itself checks again with torch (:func:`medusa_roofline.core.devices.resolve_device`)."""
    if cuda_visible_devices_hide_all(os.environ.get("CUDA_VISIBLE_DEVICES")):
        return False
    try:
        if PROC_GPUS.is_dir() and any(PROC_GPUS.iterdir()):
            return True
    except OSError:
        pass
    try:
        if DEV_DIR.is_dir() and any(GPU_NODE.fullmatch(p.name) for p in DEV_DIR.iterdir()):
            return True
    except OSError:
        pass
    return nvidia_smi_lists_gpus()
