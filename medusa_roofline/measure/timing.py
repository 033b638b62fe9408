"""Honest timers for CPU and CUDA.

Rules every timer here follows:

* **Warm-up first.** ``warmup`` untimed calls (allocator, cuBLAS heuristics, lazy init).
* **Many repetitions, order statistics.** We keep every repetition and report the median with
  p10/p90, never a mean of a few calls (a single hiccup moves a mean, not a median).
* **Cold L2 per repetition on CUDA.** Before each repetition a 256 MiB buffer (>= 2x the L2 of
  A100 (40 MiB) / H100 (50 MiB); sized up from the device's reported L2 if that is ever larger) is
  zeroed with ``.zero_()``, evicting whatever the previous repetition left in L2, so a decode step
  that streams weights / KV cache is not flattered by data still resident from the last rep.
  The flush is enqueued *before* the start event, so it is never inside the timed interval.
* **Device-side timing on CUDA.** ``torch.cuda.Event(enable_timing=True)`` pairs around the
  callable, resolved after a single ``synchronize`` at the end (no per-rep sync that would add
  host latency to the measurement). Like ``triton.testing.do_bench``, the host may run ahead of
  the GPU while the flush executes; host launch gaps still appear in the interval whenever the
  host falls behind the GPU, which is the real cost of a launch-bound step. For launch-bound
  callables whose memory addresses are fixed, :func:`time_callable` can instead capture the
  callable in a CUDA graph and time replays (``cuda_graph=True``).
* **CPU** uses ``time.perf_counter`` around each call (PyTorch CPU ops are synchronous), and the
  number of intra-op threads (``torch.get_num_threads()``) is recorded with the result. With
  ``flush_l2=True`` a 64 MiB buffer (larger than the last-level cache of the CPUs we use) is
  zeroed before each repetition, the CPU analogue of the L2 flush.
* **Sanity.** A NaN, inf, zero or negative interval raises :class:`TimingError` naming the op:
  it means a broken timer (events never recorded, clock misuse), never a fast kernel.
* **The timer's own floor** is measured by :func:`empty_region` (nothing between the two marks;
  zero is allowed there, it is the clock's resolution); ``benchmarks/qkpv_harness.py`` reports it
  beside a one-element kernel timed with and without CUDA-graph replay.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterable

import numpy as np
import torch

from ..core.devices import as_device, is_cuda

CUDA_FLUSH_BYTES = 256 * 1024 * 1024
CPU_FLUSH_BYTES = 64 * 1024 * 1024


class TimingError(RuntimeError):
    """A timing that cannot be a real duration (NaN, inf, zero, negative)."""


def check_samples(samples: Iterable[float], op: str) -> list[float]:
    values = [float(s) for s in samples]
    if not values:
        raise TimingError(f"op {op!r}: no timing samples were collected")
    for value in values:
        if not math.isfinite(value):
            raise TimingError(f"op {op!r}: non-finite timing {value!r} s")
        if value <= 0.0:
            raise TimingError(f"op {op!r}: non-positive timing {value!r} s")
    return values


@dataclass(frozen=True)
class Stats:
    """Order statistics of repeated timings, in seconds.

    ``reps`` is the number of samples the statistics were computed from; ``threads`` is the
    CPU intra-op thread count in effect (``None`` for CUDA device timings).
    """

    median: float
    p10: float
    p90: float
    reps: int
    mean: float
    min: float
    max: float
    threads: int | None = None

    @classmethod
    def from_samples(cls, samples: Iterable[float], op: str = "op", threads: int | None = None) -> "Stats":
        """Stats from a list of seconds; rejects NaN/inf/non-positive samples naming ``op``.

        Percentiles use numpy's default linear interpolation, so for one sample all equal it.
        """
        values = np.asarray(check_samples(samples, op), dtype=np.float64)
        p10, median, p90 = np.percentile(values, [10.0, 50.0, 90.0])
        return cls(
            median=float(median), p10=float(p10), p90=float(p90), reps=int(values.size),
            mean=float(values.mean()), min=float(values.min()), max=float(values.max()), threads=threads,
        )

    def to_dict(self) -> dict:
        return asdict(self)


_FLUSH_BUFFERS: dict = {}


def l2_flush_buffer(device):
    """A cached byte buffer big enough to evict the last-level cache of ``device``.

    CUDA: max(256 MiB, 2 x reported L2). CPU: 64 MiB (bigger than the LLC of the machines we use).
    """
    dev = as_device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    key = str(dev)
    buf = _FLUSH_BUFFERS.get(key)
    if buf is None:
        if dev.type == "cuda":
            l2 = int(getattr(torch.cuda.get_device_properties(dev), "L2_cache_size", 0) or 0)
            nbytes = max(CUDA_FLUSH_BYTES, 2 * l2)
        else:
            nbytes = CPU_FLUSH_BYTES
        with torch.inference_mode(False):  # a normal tensor: zero_() works in and outside inference mode
            buf = torch.empty(nbytes, dtype=torch.uint8, device=dev)
        _FLUSH_BUFFERS[key] = buf
    return buf


def flush_cache(device) -> None:
    """Zero the flush buffer (enqueued on the current stream for CUDA)."""
    l2_flush_buffer(device).zero_()


def release_flush_buffers() -> None:
    _FLUSH_BUFFERS.clear()


# ----------------------------------------------------------------------------------------------
# whole-callable timing


def time_callable(
    fn: Callable[[], object],
    device="cpu",
    warmup: int = 3,
    reps: int = 20,
    flush_l2: bool = True,
    *,
    after: Callable[[], object] | None = None,
    cuda_graph: bool = False,
    op: str = "callable",
) -> Stats:
    """Time ``fn()`` on ``device``: ``warmup`` untimed calls, then ``reps`` timed calls.

    ``after`` runs after every call (warm-up and timed), outside the timed interval — e.g. to
    crop a KV cache back to its length. ``flush_l2`` evicts caches before every timed call
    (CUDA: 256 MiB ``.zero_()``; CPU: 64 MiB). ``cuda_graph=True`` (CUDA only) captures ``fn``
    once into a CUDA graph and times ``graph.replay()`` — only valid for callables with static
    shapes and addresses, and incompatible with ``after``.
    """
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    if is_cuda(device):
        if cuda_graph:
            if after is not None:
                raise ValueError("cuda_graph=True cannot be combined with an `after` callback")
            return _time_cuda_graph(fn, device, warmup, reps, flush_l2, op)
        return _time_cuda(fn, device, warmup, reps, flush_l2, after, op)
    if cuda_graph:
        raise ValueError(f"cuda_graph=True needs a CUDA device, got {device!r}")
    return _time_cpu(fn, warmup, reps, flush_l2, after, op)


def _time_cpu(fn, warmup, reps, flush_l2, after, op) -> Stats:
    for _ in range(warmup):
        fn()
        if after is not None:
            after()
    samples = []
    for _ in range(reps):
        if flush_l2:
            flush_cache("cpu")
        t0 = time.perf_counter()
        fn()
        t1 = time.perf_counter()
        samples.append(t1 - t0)
        if after is not None:
            after()
    return Stats.from_samples(samples, op=op, threads=torch.get_num_threads())


def _time_cuda(fn, device, warmup, reps, flush_l2, after, op) -> Stats:
    dev = as_device(device)
    with torch.cuda.device(dev):
        buf = l2_flush_buffer(dev) if flush_l2 else None
        for _ in range(warmup):
            fn()
            if after is not None:
                after()
        samples = _event_samples(dev, fn, reps, buf, after)
    return Stats.from_samples(samples, op=op)


def _event_samples(dev, run, reps, flush_buf=None, after=None) -> list[float]:
    """Seconds of `run` per rep between CUDA events; the L2 flush and `after` stay outside them."""
    torch.cuda.synchronize(dev)
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for i in range(reps):
        if flush_buf is not None:
            flush_buf.zero_()
        starts[i].record()
        run()
        ends[i].record()
        if after is not None:
            after()
    torch.cuda.synchronize(dev)
    return [s.elapsed_time(e) * 1e-3 for s, e in zip(starts, ends)]


def _time_cuda_graph(fn, device, warmup, reps, flush_l2, op) -> Stats:
    """Capture ``fn`` in a CUDA graph (after warm-up on a side stream) and time replays."""
    dev = as_device(device)
    with torch.cuda.device(dev):
        buf = l2_flush_buffer(dev) if flush_l2 else None
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(max(warmup, 1)):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize(dev)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        graph.replay()  # first replay uploads the graph; untimed
        samples = _event_samples(dev, graph.replay, reps, buf)
        del graph
    return Stats.from_samples(samples, op=f"{op} (cuda graph)")


def empty_region(device="cpu", reps: int = 100, warmup: int = 3, flush_l2: bool = False) -> dict:
    """The timer's own floor: seconds between two marks with nothing between them.

    CUDA: an event pair recorded back to back (after the L2 flush when ``flush_l2``), resolved after
    one synchronize, as :func:`time_callable` does; CPU: two ``perf_counter`` calls. Unlike
    :func:`time_callable` a zero interval is a valid answer here (the clock's resolution), so the
    samples are summarised without the positivity check: ``median``, ``p10``, ``p90``, ``min``,
    ``max`` (seconds) and ``reps``.
    """
    if reps < 1 or warmup < 0:
        raise ValueError(f"reps must be >= 1 and warmup >= 0, got {reps}, {warmup}")
    if is_cuda(device):
        dev = as_device(device)
        with torch.cuda.device(dev):
            buf = l2_flush_buffer(dev) if flush_l2 else None
            if warmup:
                _event_samples(dev, lambda: None, warmup, buf)
            samples = _event_samples(dev, lambda: None, reps, buf)
    else:
        samples = []
        for i in range(warmup + reps):
            if flush_l2:
                flush_cache("cpu")
            t0 = time.perf_counter()
            t1 = time.perf_counter()
            if i >= warmup:
                samples.append(t1 - t0)
    values = np.asarray(samples, dtype=np.float64)
    if not np.isfinite(values).all() or (values < 0).any():
        raise TimingError(f"empty region: impossible interval(s) {values.min()!r} s")
    p10, median, p90 = np.percentile(values, [10.0, 50.0, 90.0])
    return {"median": float(median), "p10": float(p10), "p90": float(p90), "min": float(values.min()),
            "max": float(values.max()), "reps": int(values.size)}
