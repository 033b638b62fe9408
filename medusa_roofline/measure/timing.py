"""Honest timers for CPU and CUDA.

Rules every timer here follows:

* **Warm-up first.** ``warmup`` untimed calls (allocator, cuBLAS heuristics, lazy init).
* **Many repetitions, order statistics.** We keep every repetition and report the median with
  p10/p90, never a mean of a few calls (a single hiccup moves a mean, not a median).
* **Cold L2 per repetition on CUDA.** Before each repetition a 256 MiB buffer (>= 2x the L2 of
  A100 (40 MiB) / H100 (50 MiB); sized up from the device's reported L2 if that is ever larger) is
  streamed through the cache, evicting whatever the previous repetition left in L2, so a decode
  step that streams weights / KV cache is not flattered by data still resident from the last rep.
  The flush is enqueued *before* the start event, so it is never inside the timed interval.
  How it streams is selectable (:data:`FLUSH_MODES`; ``flush_l2=True`` means
  :data:`DEFAULT_FLUSH`): ``write`` zeroes the buffer, which leaves the L2 full of *dirty* lines
  whose write-back to memory happens when the timed kernel evicts them, i.e. inside the next timed
  interval (up to one L2 of extra write traffic, ~15 us on an H100); ``read`` sums the buffer, which
  leaves only clean lines (evicting them costs nothing) and writes back what the previous rep left
  dirty during the flush itself; ``write+read`` does both (the read cleans what the write dirtied).
  ``read`` is the default: the cheapest variant that leaves nothing to write back inside the timed
  interval. A tiny kernel between flush and start event would not help: stream order already puts
  the start event after the flush, and dirty lines are written back on eviction, not on a kernel
  boundary. ``benchmarks/gpu_evidence.sh`` runs the A/B of the variants on the GPU.
* **Device-side timing on CUDA.** ``torch.cuda.Event(enable_timing=True)`` pairs around the
  callable, resolved after a single ``synchronize`` at the end (no per-rep sync that would add
  host latency to the measurement). Like ``triton.testing.do_bench``, the host may run ahead of
  the GPU while the flush executes; host launch gaps still appear in the interval whenever the
  host falls behind the GPU, which is the real cost of a launch-bound step. For launch-bound
  callables whose memory addresses are fixed, :func:`time_callable` can instead capture the
  callable in a CUDA graph and time replays (``cuda_graph=True``).
* **CPU** uses ``time.perf_counter`` around each call (PyTorch CPU ops are synchronous), and the
  number of intra-op threads (``torch.get_num_threads()``) is recorded with the result. With
  ``flush_l2`` a 64 MiB buffer (larger than the last-level cache of the CPUs we use) is streamed
  the same way before each repetition, the CPU analogue of the L2 flush (write-back caches too).
* **Sanity.** A NaN, inf, zero or negative interval raises :class:`TimingError` naming the op:
  it means a broken timer (events never recorded, clock misuse), never a fast kernel.
* **Host time beside device time.** CUDA timings also keep the host's ``perf_counter`` interval
  from the start mark to the end mark (:attr:`Stats.host_median`): enqueue, hooks and Python.
  A device interval close to it means the GPU waited for the host (launch-bound), one much longer
  means the GPU was the bottleneck. On the CPU the interval *is* host time, so it is not repeated.
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
FLUSH_MODES = ("write", "read", "write+read")
DEFAULT_FLUSH = "read"


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
    CPU intra-op thread count in effect (``None`` for CUDA device timings); ``host_median`` the
    median host-side seconds between the two marks (CUDA only: enqueue + Python; ``None`` on CPU).
    """

    median: float
    p10: float
    p90: float
    reps: int
    mean: float
    min: float
    max: float
    threads: int | None = None
    host_median: float | None = None

    @classmethod
    def from_samples(cls, samples: Iterable[float], op: str = "op", threads: int | None = None,
                     host: Iterable[float] | None = None) -> "Stats":
        """Stats from a list of seconds; rejects NaN/inf/non-positive samples naming ``op``.

        Percentiles use numpy's default linear interpolation, so for one sample all equal it.
        ``host``: the host-side seconds of the same repetitions (their median is kept).
        """
        values = np.asarray(check_samples(samples, op), dtype=np.float64)
        p10, median, p90 = np.percentile(values, [10.0, 50.0, 90.0])
        host_median = None
        if host is not None:
            host_values = np.asarray(list(host), dtype=np.float64)
            host_median = float(np.median(host_values)) if host_values.size else None
        return cls(
            median=float(median), p10=float(p10), p90=float(p90), reps=int(values.size),
            mean=float(values.mean()), min=float(values.min()), max=float(values.max()), threads=threads,
            host_median=host_median,
        )

    def to_dict(self) -> dict:
        return asdict(self)


def use_threads(threads: int | None) -> int:
    """Fix the CPU intra-op threads every timer of this process runs with (``torch.set_num_threads``);
    None leaves them as they are. Returns the count in effect, which rows and ceilings record."""
    if threads is not None:
        if int(threads) < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(int(threads))
    return torch.get_num_threads()


_FLUSH_BUFFERS: dict = {}


def flush_mode(flush_l2) -> str | None:
    """The flush variant a ``flush_l2`` argument asks for: ``True`` -> :data:`DEFAULT_FLUSH`,
    ``False``/``None`` -> no flush, or one of :data:`FLUSH_MODES` by name."""
    if flush_l2 is None or flush_l2 is False:
        return None
    if flush_l2 is True:
        return DEFAULT_FLUSH
    if flush_l2 in FLUSH_MODES:
        return flush_l2
    raise ValueError(f"flush_l2: {flush_l2!r} is not True, False or one of {', '.join(FLUSH_MODES)}")


def l2_flush_buffer(device):
    """A cached, zeroed byte buffer big enough to evict the last-level cache of ``device``.

    CUDA: max(256 MiB, 2 x reported L2). CPU: 64 MiB (bigger than the LLC of the machines we use).
    """
    return _flush_state(device)[0]


def _flush_state(device):
    """(buffer, 0-d float32 sink for the read flush) of ``device``, created once."""
    dev = as_device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    key = str(dev)
    state = _FLUSH_BUFFERS.get(key)
    if state is None:
        if dev.type == "cuda":
            l2 = int(getattr(torch.cuda.get_device_properties(dev), "L2_cache_size", 0) or 0)
            nbytes = max(CUDA_FLUSH_BYTES, 2 * l2)
        else:
            nbytes = CPU_FLUSH_BYTES
        nbytes -= nbytes % 4  # the read flush sums it as float32
        with torch.inference_mode(False):  # normal tensors: in-place works in and outside inference mode
            # zeroed once, so the read flush sums finite numbers (no NaN / denormal slow paths)
            state = (torch.zeros(nbytes, dtype=torch.uint8, device=dev),
                     torch.zeros((), dtype=torch.float32, device=dev))
        _FLUSH_BUFFERS[key] = state
    return state


def flush_cache(device, mode: str | bool = True) -> None:
    """Stream the flush buffer through the cache (enqueued on the current stream for CUDA).

    ``mode``: one of :data:`FLUSH_MODES` (``True``: :data:`DEFAULT_FLUSH`; ``False``: nothing)."""
    name = flush_mode(mode)
    if name is None:
        return
    buf, sink = _flush_state(device)
    if name in ("write", "write+read"):
        buf.zero_()
    if name in ("read", "write+read"):
        torch.sum(buf.view(torch.float32), dim=0, out=sink)


def _flusher(device, flush_l2):
    """A zero-argument flush for ``device`` (buffer created now, outside any timed region), or None."""
    name = flush_mode(flush_l2)
    if name is None:
        return None
    _flush_state(device)
    return lambda: flush_cache(device, name)


def release_flush_buffers() -> None:
    _FLUSH_BUFFERS.clear()


# ----------------------------------------------------------------------------------------------
# whole-callable timing


def time_callable(
    fn: Callable[[], object],
    device="cpu",
    warmup: int = 3,
    reps: int = 20,
    flush_l2: bool | str = True,
    *,
    after: Callable[[], object] | None = None,
    cuda_graph: bool = False,
    op: str = "callable",
) -> Stats:
    """Time ``fn()`` on ``device``: ``warmup`` untimed calls, then ``reps`` timed calls.

    ``after`` runs after every call (warm-up and timed), outside the timed interval — e.g. to
    crop a KV cache back to its length. ``flush_l2`` evicts caches before every timed call
    (``True``: :data:`DEFAULT_FLUSH`, or a variant of :data:`FLUSH_MODES`; CUDA 256 MiB, CPU 64 MiB).
    ``cuda_graph=True`` (CUDA only) captures ``fn`` once into a CUDA graph and times
    ``graph.replay()`` — only valid for callables with static shapes and addresses, and
    incompatible with ``after``.
    """
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    flush_mode(flush_l2)  # a bad variant fails before anything runs
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
    flush = _flusher("cpu", flush_l2)
    for _ in range(warmup):
        fn()
        if after is not None:
            after()
    samples = []
    for _ in range(reps):
        if flush is not None:
            flush()
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
        flush = _flusher(dev, flush_l2)
        for _ in range(warmup):
            fn()
            if after is not None:
                after()
        samples, host = _event_samples(dev, fn, reps, flush, after)
    return Stats.from_samples(samples, op=op, host=host)


def _event_samples(dev, run, reps, flush=None, after=None) -> tuple[list[float], list[float]]:
    """Seconds of `run` per rep between CUDA events, and the host seconds between recording them;
    the flush and `after` stay outside both intervals."""
    torch.cuda.synchronize(dev)
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    host = []
    for i in range(reps):
        if flush is not None:
            flush()
        t0 = time.perf_counter()
        starts[i].record()
        run()
        ends[i].record()
        host.append(time.perf_counter() - t0)
        if after is not None:
            after()
    torch.cuda.synchronize(dev)
    return [s.elapsed_time(e) * 1e-3 for s, e in zip(starts, ends)], host  # elapsed_time is in ms


def _time_cuda_graph(fn, device, warmup, reps, flush_l2, op) -> Stats:
    """Capture ``fn`` in a CUDA graph (after warm-up on a side stream) and time replays."""
    dev = as_device(device)
    with torch.cuda.device(dev):
        flush = _flusher(dev, flush_l2)
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
        samples, host = _event_samples(dev, graph.replay, reps, flush)
        del graph
    return Stats.from_samples(samples, op=f"{op} (cuda graph)", host=host)


def tiny_kernel_floor(device="cpu", reps: int = 20, warmup: int = 3, flush_l2: bool | str = True,
                      cuda_graph: bool = False) -> Stats:
    """The launch floor of :func:`time_callable`: a one-element kernel (``x.add_(1)``) timed like any op,
    with the same flush and graph settings. A measured op within a small factor of it is launch-bound."""
    x = torch.zeros(1, device=as_device(device))
    return time_callable(lambda: x.add_(1), device, warmup, reps, flush_l2, cuda_graph=cuda_graph, op="tiny kernel")


def empty_region(device="cpu", reps: int = 100, warmup: int = 3, flush_l2: bool | str = False) -> dict:
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
            flush = _flusher(dev, flush_l2)
            if warmup:
                _event_samples(dev, lambda: None, warmup, flush)
            samples = _event_samples(dev, lambda: None, reps, flush)[0]
    else:
        flush = _flusher("cpu", flush_l2)
        samples = []
        for i in range(warmup + reps):
            if flush is not None:
                flush()
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
