"""A fake CUDA device on the CPU, so CI executes the CUDA-only branches of the timers and backends.

:func:`install` (the ``fake_cuda`` fixture in ``conftest.py``) replaces, for one test:

* ``torch.cuda``'s device queries (``is_available``, ``device_count``, ``current_device``,
  ``get_device_name``, ``get_device_properties`` with an L2 size, ``is_bf16_supported``), memory
  functions (``empty_cache``, ``mem_get_info``, ``memory_allocated``, ...) and ``torch.version.cuda``;
* ``torch.cuda.Event``: :class:`FakeEvent` keeps ``perf_counter`` at ``record`` and answers
  ``elapsed_time`` **in milliseconds**, like CUDA, and only after a ``synchronize`` that followed
  the record (reading an event the device has not reached is an error on a real GPU too);
* ``synchronize``, ``Stream``/``current_stream``/``stream``, ``device`` (context), and
  ``CUDAGraph``/``graph``: a captured graph's ``replay`` takes :attr:`FakeCuda.replay_s` seconds
  (the captured work is not re-run; the replay time is what the unit tests check);
* every tensor placed on ``cuda`` lands on the CPU instead (a ``TorchFunctionMode`` rewrites
  ``device=`` arguments and ``.to("cuda")``; ``torch.Generator(device="cuda")`` gives a CPU
  generator), so real CUDA code paths run end to end on CPU tensors.

:class:`FakeCuda` counts what was called (``calls``), so a test can check the control flow: one
synchronize per repetition, events recorded in pairs, the flush before the start event.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from types import SimpleNamespace

import pytest
import torch
from torch.overrides import TorchFunctionMode

from medusa_roofline.measure import timing

H200 = {"name": "NVIDIA H200", "major": 9, "minor": 0, "total_memory": 143771 << 20, "L2_cache_size": 60 << 20,
        "multi_processor_count": 132}


def _is_cuda(value) -> bool:
    if isinstance(value, torch.device):
        return value.type == "cuda"
    return isinstance(value, str) and value.split(":")[0] == "cuda"


class _OnCpu(TorchFunctionMode):
    """Every ``device="cuda"`` (keyword or positional, str or torch.device) becomes the CPU."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.device:  # the device object itself stays "cuda"; tensors placed on it do not
            return func(*args, **(kwargs or {}))
        kwargs = {k: ("cpu" if k == "device" and _is_cuda(v) else v) for k, v in (kwargs or {}).items()}
        args = tuple("cpu" if _is_cuda(a) else a for a in args)
        return func(*args, **kwargs)


class FakeCuda:
    """State of one fake device: its properties, what was called, the replay time of a graph."""

    def __init__(self, name: str = H200["name"], bf16: bool = True, device_count: int = 1, replay_s: float = 5e-4,
                 **props):
        self.props = SimpleNamespace(**dict(H200, name=name, **props))
        self.bf16 = bf16
        self.device_count = device_count
        self.replay_s = replay_s
        self.calls: Counter = Counter()
        self.log: list[str] = []  # order of synchronize / event / flush-relevant calls
        self.syncs = 0
        self.capturing = False

    # -------------------------------------------------------------------------------- torch.cuda API

    def synchronize(self, device=None):
        self.calls["synchronize"] += 1
        self.syncs += 1
        self.log.append("sync")

    def is_bf16_supported(self, including_emulation: bool = True):
        return self.bf16

    def get_device_name(self, device=None):
        return self.props.name

    def get_device_properties(self, device=None):
        return self.props

    def empty_cache(self):
        self.calls["empty_cache"] += 1

    def mem_get_info(self, device=None):
        return self.props.total_memory, self.props.total_memory

    @contextlib.contextmanager
    def device(self, device=None):
        yield

    @contextlib.contextmanager
    def stream(self, stream=None):
        self.calls["stream"] += 1
        yield

    @contextlib.contextmanager
    def graph(self, graph, *args, **kwargs):
        self.capturing = True
        try:
            yield
        finally:
            self.capturing = False
            graph.captured = True


class FakeEvent:
    """``torch.cuda.Event`` on the host clock; ``elapsed_time`` in ms, only once a sync followed the record."""

    fake: FakeCuda

    def __init__(self, enable_timing: bool = False, blocking: bool = False, interprocess: bool = False):
        self.enable_timing = enable_timing
        self.t = None
        self.recorded_at_sync = None

    def record(self, stream=None):
        self.fake.calls["event.record"] += 1
        self.fake.log.append("record")
        self.t = time.perf_counter()
        self.recorded_at_sync = self.fake.syncs

    def query(self) -> bool:
        return self.t is not None and self.fake.syncs > self.recorded_at_sync

    def synchronize(self):
        self.fake.synchronize()

    def elapsed_time(self, end: "FakeEvent") -> float:
        if not (self.enable_timing and end.enable_timing):
            raise RuntimeError("Both events must be created with argument 'enable_timing=True'.")
        if self.t is None or end.t is None:
            raise RuntimeError("Both events must be recorded before calculating elapsed time.")
        if not (self.query() and end.query()):
            raise RuntimeError("CUDA error: device not ready (event read before a synchronize)")
        return (end.t - self.t) * 1e3


class FakeStream:
    fake: FakeCuda

    def __init__(self, device=None, priority: int = 0):
        pass

    def wait_stream(self, other):
        self.fake.calls["wait_stream"] += 1

    def synchronize(self):
        self.fake.synchronize()


class FakeGraph:
    """``torch.cuda.CUDAGraph``: ``replay`` takes the fake's ``replay_s`` seconds."""

    fake: FakeCuda

    def __init__(self, *args, **kwargs):
        self.captured = False

    def replay(self):
        if not self.captured:
            raise RuntimeError("CUDAGraph.replay before capture")
        self.fake.calls["graph.replay"] += 1
        time.sleep(self.fake.replay_s)


def install(monkeypatch, **options) -> FakeCuda:
    """Replace torch.cuda with a :class:`FakeCuda` for the rest of the test (``monkeypatch`` undoes it);
    tensors put on ``cuda`` land on the CPU until the returned object's ``close()``."""
    fake = FakeCuda(**options)
    event = type("FakeEvent", (FakeEvent,), {"fake": fake})
    stream = type("FakeStream", (FakeStream,), {"fake": fake})
    graph = type("FakeGraph", (FakeGraph,), {"fake": fake})
    current = stream()
    real_generator = torch.Generator

    class CpuGenerator(real_generator):
        def __new__(cls, device="cpu"):
            return real_generator.__new__(cls, device="cpu" if _is_cuda(device) else device)

        def __init__(self, device="cpu"):
            pass

    patches = {
        "is_available": lambda: True, "device_count": lambda: fake.device_count, "current_device": lambda: 0,
        "is_initialized": lambda: True, "get_device_name": fake.get_device_name,
        "get_device_properties": fake.get_device_properties, "is_bf16_supported": fake.is_bf16_supported,
        "synchronize": fake.synchronize, "empty_cache": fake.empty_cache, "mem_get_info": fake.mem_get_info,
        "memory_allocated": lambda device=None: 0, "max_memory_allocated": lambda device=None: 0,
        "reset_peak_memory_stats": lambda device=None: None, "device": fake.device, "stream": fake.stream,
        "graph": fake.graph, "Event": event, "Stream": stream, "CUDAGraph": graph,
        "current_stream": lambda device=None: current,
    }
    for name, value in patches.items():
        monkeypatch.setattr(torch.cuda, name, value)
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch, "Generator", CpuGenerator)
    mode = _OnCpu()
    mode.__enter__()
    fake.close = lambda: mode.__exit__(None, None, None)
    return fake


@pytest.fixture(name="fake_cuda")
def fake_cuda_fixture(monkeypatch):
    """A fake CUDA device for one test. The flush buffer is small here (2 x a 3 MiB L2, above a 4 MiB
    floor) so the timers' flushes stay cheap and the L2-sized branch runs."""
    monkeypatch.setattr(timing, "CUDA_FLUSH_BYTES", 4 << 20)
    timing.release_flush_buffers()
    fake = install(monkeypatch, L2_cache_size=3 << 20)
    try:
        yield fake
    finally:
        fake.close()
        timing.release_flush_buffers()
