"""The roofline predictor: an op's time is the slowest of its compute, its memory traffic and its launches.

    predicted(op) = max(flops / peak, bytes / bandwidth, launches(op) x per_launch)

and a step's time is the sum over its ops (:func:`~.costmodel.step_ops`: every per-layer op x layers, the
once-per-step ops, the Medusa heads). Each op is assumed to run alone (no overlap between ops) and at
its roof; ``per_launch`` is what one kernel costs in a stream of ops however little it does
(``launches`` counts the kernels the eager path launches per op, :func:`~.costmodel.launches`). Bytes are
the cost model's counted bytes (:func:`~.costmodel.op_cost`: every op of the step has them, including
the ones no sweep row times); the moved bytes (:mod:`.moved`) exist only for the timed ops.

Names: ``per_launch_s`` is this per-kernel cost. It is not ``launch_floor_s`` (a measured row's column,
and ``launch_floor.floor_s`` in the ceilings file: one op timed alone, with the timer's own overhead,
the lowest a row can read), which the metrics use to flag launch-bound rows.

A :class:`Calibration` is the only input besides the cost model, and it has three numbers:

* **datasheet** — a hardware-table entry's peak and bandwidth, and a per-launch cost that is a
  documented constant (:data:`DATASHEET_PER_LAUNCH_S`, configurable as ``predict.per_launch_us``);
  available for every GPU of the table, whether or not one is at hand.
* **measured** — the device at hand: the measured matmul peak in the run's dtype and bandwidth from
  the ceilings file, and its measured per-launch cost (``per_launch_s``: back-to-back one-element
  kernels, :func:`medusa_roofline.measure.ceilings.measure_per_launch`).

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

DATASHEET_PER_LAUNCH_S = 3e-6
"""Per-launch cost of the datasheet calibration: the launch overhead of a null kernel on recent NVIDIA
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
    per_launch_s: float  # seconds per kernel launch
    source: str


def datasheet_calibration(hw: Hardware, per_launch_s: float = DATASHEET_PER_LAUNCH_S) -> Calibration:
    """A hardware-table entry's datasheet roofs with the documented per-launch cost."""
    return Calibration("datasheet", hw.peak_flops, hw.bandwidth, per_launch_s,
                       f"{hw.display_name} datasheet; {per_launch_s * 1e6:g} us per kernel launch")


def measured_calibration(ceilings: dict, dtype: str | None = None) -> Calibration:
    """The measured roofs (matmul peak in ``dtype`` when measured) and the measured per-launch cost."""
    if "per_launch_s" not in ceilings:
        raise ConfigError("ceilings file lacks 'per_launch_s' (the measured per-launch cost); rerun the "
                          "ceilings rule")
    peak, bandwidth = measured_roofs(ceilings, dtype)
    floor = float(ceilings["per_launch_s"])
    return Calibration("measured", peak, bandwidth, floor,
                       f"{ceilings.get('device_name', 'device')} measured ceilings; "
                       f"{floor * 1e6:.3g} us per kernel launch")


def op_time(cost: Cost, cal: Calibration, n_launches=1):
    """Predicted seconds of one op run: max(flops / peak, bytes / bandwidth, launches x per_launch)."""
    return np.maximum(np.maximum(cost.flops / cal.peak_flops, cost.bytes / cal.bandwidth),
                      n_launches * cal.per_launch_s)


def limiter(cost: Cost, cal: Calibration, n_launches=1):
    """Which term of :func:`op_time` is the largest: ``compute``, ``memory`` or ``launch`` (ties: that order)."""
    terms = np.stack(np.broadcast_arrays(cost.flops / cal.peak_flops, cost.bytes / cal.bandwidth,
                                         n_launches * cal.per_launch_s * np.ones_like(cost.flops, dtype=float)))
    picked = np.asarray(LIMITERS)[np.argmax(terms, axis=0)]
    return str(picked) if picked.ndim == 0 else picked


def step_time(dims: ModelDims, batch: int, q_len, keys, e: int, cal: Calibration, layers: int | None = None,
              num_heads: int = 0, head_layers: int = MEDUSA_HEAD_LAYERS, heads_tokens=None, fused: bool = False):
    """Predicted seconds of one decode step: :func:`op_time` of every op of :func:`~.costmodel.step_ops`
    times the runs per step, summed (``layers``: decoder layers, default all)."""
    layers = dims.layers if layers is None else layers
    terms = step_ops(dims, batch, q_len, keys, e, layers, num_heads, head_layers, fused, heads_tokens)
    return sum(t.times * op_time(t.cost, cal, launches(t.op, e, num_heads, head_layers)) for t in terms)
