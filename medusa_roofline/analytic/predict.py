"""The roofline predictor: an op's time is the slowest of its compute, its memory traffic and its launches.

    predicted(op) = max(flops / peak, bytes / bandwidth, launches(op) x floor)

and a step's time is the sum over its ops (:func:`~.costmodel.step_ops`: every per-layer op x layers, the
once-per-step ops, the Medusa heads). Each op is assumed to run alone (no overlap between ops) and at
its roof; the floor is what one kernel launch costs however little it does (``launches`` counts the
kernels the eager path launches per op, :func:`~.costmodel.launches`).

A :class:`Calibration` is the only input besides the cost model, and it has three numbers:

* **datasheet** — a hardware-table entry's peak and bandwidth, and a per-launch floor that is a
  documented constant (:data:`DATASHEET_LAUNCH_FLOOR_S`, configurable as ``predict.launch_floor_us``);
  available for every GPU of the table, whether or not one is at hand.
* **measured** — the device at hand: the measured matmul peak in the run's dtype and bandwidth from
  the ceilings file, and its measured launch floor (``launch_floor_s``: back-to-back one-element
  kernels, :func:`medusa_roofline.measure.ceilings.measure_launch_floor`).

Nothing is fitted per point. Every function here works on scalars and on numpy arrays alike (a whole
range of tree sizes at once).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.errors import ConfigError
from ..models.source import ModelDims
from .costmodel import MEDUSA_HEAD_LAYERS, Cost, launches, step_ops
from .hardware import Hardware, measured_roofs

DATASHEET_LAUNCH_FLOOR_S = 3e-6
"""Per-launch floor of the datasheet calibration: the launch overhead of a null kernel on recent NVIDIA
GPUs and drivers, about 3 µs (NVIDIA developer forum, "Too much time for kernel launch latency",
https://forums.developer.nvidia.com/t/too-much-time-for-kernel-launch-latency/233645/3). Eager PyTorch
adds host-side dispatch on top; the measured calibration includes it."""
LIMITERS = ("compute", "memory", "launch")
"""What bounds an op's predicted time: its FLOPs, its bytes or its launches."""


@dataclass(frozen=True)
class Calibration:
    """The roofs and the floor a prediction uses; ``name`` is ``datasheet`` or ``measured``."""

    name: str
    peak_flops: float  # FLOP/s
    bandwidth: float  # B/s
    launch_floor_s: float  # seconds per kernel launch
    source: str


def datasheet_calibration(hw: Hardware, launch_floor_s: float = DATASHEET_LAUNCH_FLOOR_S) -> Calibration:
    """A hardware-table entry's datasheet roofs with the documented per-launch floor."""
    return Calibration("datasheet", hw.peak_flops, hw.bandwidth, launch_floor_s,
                       f"{hw.display_name} datasheet; launch floor {launch_floor_s * 1e6:g} us per kernel")


def measured_calibration(ceilings: dict, dtype: str | None = None) -> Calibration:
    """The measured roofs (matmul peak in ``dtype`` when measured) and the measured launch floor."""
    if "launch_floor_s" not in ceilings:
        raise ConfigError("ceilings file lacks 'launch_floor_s' (the measured per-launch floor); rerun the "
                          "ceilings rule")
    peak, bandwidth = measured_roofs(ceilings, dtype)
    floor = float(ceilings["launch_floor_s"])
    return Calibration("measured", peak, bandwidth, floor,
                       f"{ceilings.get('device_name', 'device')} measured ceilings; launch floor "
                       f"{floor * 1e6:.3g} us per kernel")


def op_time(cost: Cost, cal: Calibration, n_launches=1):
    """Predicted seconds of one op run: max(flops / peak, bytes / bandwidth, launches x floor)."""
    return np.maximum(np.maximum(cost.flops / cal.peak_flops, cost.bytes / cal.bandwidth),
                      n_launches * cal.launch_floor_s)


def limiter(cost: Cost, cal: Calibration, n_launches=1):
    """Which term of :func:`op_time` is the largest: ``compute``, ``memory`` or ``launch`` (ties: that order)."""
    terms = np.stack(np.broadcast_arrays(cost.flops / cal.peak_flops, cost.bytes / cal.bandwidth,
                                         n_launches * cal.launch_floor_s * np.ones_like(cost.flops, dtype=float)))
    picked = np.asarray(LIMITERS)[np.argmax(terms, axis=0)]
    return str(picked) if picked.ndim == 0 else picked


def step_time(dims: ModelDims, batch: int, q_len, keys, e: int, cal: Calibration, layers: int | None = None,
              num_heads: int = 0, head_layers: int = MEDUSA_HEAD_LAYERS, heads_tokens=None, fused: bool = False):
    """Predicted seconds of one decode step: :func:`op_time` of every op of :func:`~.costmodel.step_ops`
    times the runs per step, summed (``layers``: decoder layers, default all)."""
    layers = dims.layers if layers is None else layers
    terms = step_ops(dims, batch, q_len, keys, e, layers, num_heads, head_layers, fused, heads_tokens)
    return sum(t.times * op_time(t.cost, cal, launches(t.op, e, num_heads, head_layers)) for t in terms)
