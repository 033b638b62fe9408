"""Measured roofs of the local device: memory bandwidth and matmul peak, with their spread.

* **Bandwidth, copy.** ``dst.copy_(src)`` of one large buffer (device to device). Bytes counted:
  read + written, ``2 x nbytes``. This is the usual "STREAM copy" figure.
* **Bandwidth, read.** ``src.sum()`` of the same buffer: a read-only reduction, ``nbytes`` read
  (the scalar written is ignored). Decode steps mostly *read* (weights, KV cache), so this one is
  often the closer match; the measured roof is the larger of the two medians.
* **Matmul peak.** ``a @ b`` of two ``n x n`` matrices, ``2 n^3`` FLOPs, in the sweep's dtype (CPU:
  also float32 and bfloat16, so both CPU sweep dtypes have a roof).
* **Launch floor.** The shortest time an op can be timed at here: the timer with nothing between its
  marks (:func:`~medusa_roofline.measure.timing.empty_region`) and a one-element kernel (``x.add_(1)``)
  timed exactly as every op is; ``launch_floor.floor_s`` is the larger median. The metrics flag points
  within 1.5x of it as launch-bound.
* **Threads.** ``threads`` is the intra-op thread count everything here ran with; the measuring jobs
  all set the same one (``measure.threads``), and the metrics flag CPU rows timed with another.
* **Per-launch cost** (``per_launch_s``, :func:`measure_per_launch`). What one kernel costs in a
  stream of small ops, as a step's ops run: :data:`LAUNCH_BATCH` back-to-back ``x.add_(1)`` on a
  one-element tensor timed as one callable, divided by :data:`LAUNCH_BATCH` (CUDA: the larger of the
  host's issue time and the GPU's per-kernel time; CPU: the dispatcher's per-op time). No cache flush:
  the ops of a step run back to back too. Not the launch floor above (one op timed alone, with the
  timer's own overhead, which is what an op *row* can read no lower than); the predictor's measured
  calibration charges ``per_launch_s`` per kernel (:mod:`medusa_roofline.analytic.predict`).

Every figure is timed with :func:`medusa_roofline.measure.timing.time_callable`: warm-up calls, then
``reps`` repetitions; CUDA uses CUDA events and zeroes a buffer >= 2x the L2 before each repetition
(so no repetition reads what the previous one left in L2), CPU uses ``perf_counter``. Throughputs
are ``work / time``, so the throughput p10 comes from the time p90 and vice versa.

Default sizes are large enough to leave every cache behind on the device type (CUDA: 1 GiB copy,
8192^3 matmul; CPU: 128 MiB copy, 1024^3 matmul) and small enough that a CPU run takes a few
seconds on 2 cores. The result is a JSON-able dict (see :func:`measure_ceilings`).
"""

from __future__ import annotations

import logging
import platform
import shutil
import subprocess

import torch

from ..core.devices import resolve_device
from ..core.dtypes import canonical_dtype
from ..core.provenance import cpu_model
from .timing import empty_region, release_flush_buffers, time_callable

log = logging.getLogger(__name__)

MIB = 1 << 20
DEFAULTS = {
    "cpu": {"copy_bytes": 128 * MIB, "matmul_n": 1024},
    "cuda": {"copy_bytes": 1024 * MIB, "matmul_n": 8192},
}
CPU_EXTRA_DTYPES = ("float32", "bfloat16")
LAUNCH_BATCH = 100
"""One-element kernels per timed call of the per-launch cost (per_launch_s is the call's time / LAUNCH_BATCH)."""


def throughput_stats(work: float, stats) -> dict:
    """Work per second from time order statistics (median, and p10/p90 swapped from time)."""
    return {
        "median": work / stats.median,
        "p10": work / stats.p90,
        "p90": work / stats.p10,
        "time_s_median": stats.median,
        "time_s_p10": stats.p10,
        "time_s_p90": stats.p90,
        "reps": stats.reps,
    }


def _driver_version() -> str:
    """NVIDIA driver version via nvidia-smi, or "" when it cannot be asked."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return ""
    try:
        out = subprocess.run([exe, "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""


def device_info(dev) -> dict:
    """Device name, driver / CPU model and library versions of where the ceilings were measured."""
    info = {
        "device": str(dev),
        "device_type": dev.type,
        "cpu_model": cpu_model(),
        "threads": torch.get_num_threads(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda or "",
            "cudnn": str(torch.backends.cudnn.version() or "") if dev.type == "cuda" else "",
        },
        "platform": platform.platform(),
    }
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        info.update(
            device_name=torch.cuda.get_device_name(dev),
            driver=_driver_version(),
            compute_capability=f"{props.major}.{props.minor}",
            memory_bytes=int(props.total_memory),
            l2_bytes=int(getattr(props, "L2_cache_size", 0) or 0),
        )
    else:
        info.update(device_name=info["cpu_model"], driver=platform.release())
    return info


def measure_bandwidth(dev, nbytes: int, reps: int, warmup: int, flush_l2: bool = True) -> dict:
    """Copy (read + write) and read-only reduction bandwidth over one ``nbytes`` float32 buffer."""
    numel = max(nbytes // 4, 1)
    src = torch.ones(numel, dtype=torch.float32, device=dev)
    dst = torch.empty_like(src)
    size = numel * 4
    try:
        copy = time_callable(lambda: dst.copy_(src), dev, warmup, reps, flush_l2, op="ceilings copy")
        read = time_callable(lambda: src.sum(), dev, warmup, reps, flush_l2, op="ceilings read")
    finally:
        del src, dst
    return {
        "copy": dict(throughput_stats(2 * size, copy), buffer_bytes=size, bytes_per_rep=2 * size,
                     what="dst.copy_(src), float32; bytes = read + written"),
        "read": dict(throughput_stats(size, read), buffer_bytes=size, bytes_per_rep=size,
                     what="src.sum(), float32; bytes = read"),
    }


def measure_matmul(dev, dtype: str, n: int, reps: int, warmup: int, flush_l2: bool = True) -> dict:
    """FLOP/s of an ``n x n`` by ``n x n`` matmul in ``dtype`` (2 n^3 FLOPs per call)."""
    torch_dtype = getattr(torch, dtype)
    gen = torch.Generator(device=dev).manual_seed(0)
    a = torch.randn(n, n, generator=gen, device=dev, dtype=torch.float32).to(torch_dtype)
    b = torch.randn(n, n, generator=gen, device=dev, dtype=torch.float32).to(torch_dtype)
    out = torch.empty(n, n, device=dev, dtype=torch_dtype)
    try:
        stats = time_callable(lambda: torch.matmul(a, b, out=out), dev, warmup, reps, flush_l2,
                              op=f"ceilings matmul {dtype}")
    finally:
        del a, b, out
    flops = 2 * n ** 3
    return dict(throughput_stats(flops, stats), n=n, flops_per_rep=flops, what=f"{n}x{n} @ {n}x{n}, {dtype}")


def measure_per_launch(dev, reps: int, warmup: int) -> dict:
    """Seconds per launch of :data:`LAUNCH_BATCH` back-to-back one-element ``x.add_(1)``, with spread."""
    x = torch.zeros(1, device=dev)

    def burst():
        for _ in range(LAUNCH_BATCH):
            x.add_(1)

    stats = time_callable(burst, dev, warmup, reps, flush_l2=False, op="ceilings per-launch cost")
    return {
        "median": stats.median / LAUNCH_BATCH, "p10": stats.p10 / LAUNCH_BATCH, "p90": stats.p90 / LAUNCH_BATCH,
        "reps": stats.reps, "launches_per_rep": LAUNCH_BATCH,
        "what": f"{LAUNCH_BATCH} back-to-back x.add_(1) on one element, per launch; no cache flush",
    }


def measure_launch_floor(dev, reps: int, warmup: int, flush_l2: bool = True) -> dict:
    """Timer floor and one-element kernel (timed like every op: warm-up, L2 flush per rep); ``floor_s``."""
    empty = empty_region(dev, reps=max(reps, 20), warmup=warmup, flush_l2=flush_l2)
    x = torch.zeros(1, device=dev)
    tiny = time_callable(lambda: x.add_(1), dev, warmup, max(reps, 20), flush_l2, op="launch floor")
    kernel = {"median": tiny.median, "p10": tiny.p10, "p90": tiny.p90, "reps": tiny.reps,
              "what": "x.add_(1) on one element, timed as ops are"}
    return {"empty_region": empty, "one_element_kernel": kernel, "floor_s": max(tiny.median, empty["median"])}


def measure_ceilings(device="cpu", dtype="auto", reps: int = 20, warmup: int = 3, copy_bytes: int | None = None,
                     matmul_n: int | None = None, extra_dtypes=None, flush_l2: bool = True) -> dict:
    """Measure the local device's roofs; a JSON-able dict.

    Keys: ``device``, ``device_type``, ``device_name``, ``driver``, ``cpu_model``, ``threads``,
    ``versions``, ``platform`` (+ CUDA properties), ``dtype`` (the sweep's, resolved),
    ``bandwidth`` {``copy``, ``read``: median/p10/p90 B/s and the times behind them},
    ``matmul`` {dtype: median/p10/p90 FLOP/s}, and the headline roofs ``bandwidth_bytes_per_s``
    (larger of the copy and read medians; ``bandwidth_kind`` says which) and ``peak_flops_per_s``
    (matmul median in ``dtype``), ``launch_floor`` (:func:`measure_launch_floor`: one op timed alone),
    ``per_launch`` (:func:`measure_per_launch`) and its median ``per_launch_s`` (seconds per kernel in a
    stream), plus ``settings``
    (sizes, reps, warm-up).
    """
    dev = resolve_device(device)
    defaults = DEFAULTS[dev.type]
    copy_bytes = defaults["copy_bytes"] if copy_bytes is None else int(copy_bytes)
    matmul_n = defaults["matmul_n"] if matmul_n is None else int(matmul_n)
    if copy_bytes < 4 or matmul_n < 1:
        raise ValueError(f"sizes: copy_bytes must be >= 4 and matmul_n >= 1, got {copy_bytes}, {matmul_n}")
    main = canonical_dtype(dtype, dev.type)
    if extra_dtypes is None:
        extra_dtypes = CPU_EXTRA_DTYPES if dev.type == "cpu" else ()
    dtypes = list(dict.fromkeys([main] + [canonical_dtype(d, dev.type) for d in extra_dtypes]))

    result = device_info(dev)
    log.info("ceilings on %s (%s): copy %d MiB, matmul n=%d, dtypes %s, %d reps",
             dev, result["device_name"], copy_bytes // MIB, matmul_n, dtypes, reps)
    with torch.inference_mode():
        bandwidth = measure_bandwidth(dev, copy_bytes, reps, warmup, flush_l2)
        matmul = {dt: measure_matmul(dev, dt, matmul_n, reps, warmup, flush_l2) for dt in dtypes}
        floor = measure_launch_floor(dev, reps, warmup, flush_l2)
        per_launch = measure_per_launch(dev, reps, warmup)
    if dev.type == "cuda":
        release_flush_buffers()
        torch.cuda.empty_cache()
    kind = max(bandwidth, key=lambda k: bandwidth[k]["median"])
    result.update(
        dtype=main,
        bandwidth=bandwidth,
        matmul=matmul,
        bandwidth_bytes_per_s=bandwidth[kind]["median"],
        bandwidth_kind=kind,
        peak_flops_per_s=matmul[main]["median"],
        launch_floor=floor,
        per_launch=per_launch,
        per_launch_s=per_launch["median"],
        settings={"reps": reps, "warmup": warmup, "copy_bytes": copy_bytes, "matmul_n": matmul_n,
                  "flush_l2": flush_l2, "dtypes": dtypes},
    )
    for what, value in (("bandwidth", result["bandwidth_bytes_per_s"]), ("peak", result["peak_flops_per_s"]),
                        ("launch floor (s)", floor["floor_s"]),
                        ("per-launch cost (s)", per_launch["median"])):
        log.info("measured %s: %.4g", what, value)
    return result
