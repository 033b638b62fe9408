"""Per-op intervals inside one forward pass: the sweep's instrumented step times each op it reaches.

CPU: ``perf_counter`` at ``start``/``stop`` (ops are synchronous, so the interval is the op). CUDA: an
event pair recorded on the current stream around the op, resolved after the single synchronize at
the end of the repetition; nothing synchronizes mid-forward. On CUDA the host's ``perf_counter``
interval between the same two marks is kept too (``Stats.host_median``): at small sizes the device
interval is mostly the host enqueueing the kernel and running the hooks (tens of microseconds
against a few of kernel), and a device interval close to the host one says so.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import torch

from ..core.devices import as_device
from .timing import Stats, TimingError, check_samples, flush_cache


class OpTimer:
    """Collect per-op intervals inside a forward pass, one repetition at a time.

    Usage::

        timer = OpTimer(device)
        for rep in range(reps):
            timer.begin_rep()
            with maybe_op("qk"):   # under activate(timer)
                ...
            timer.end_rep()          # CUDA: one synchronize, then events are resolved
        stats = timer.stats()        # {op: Stats}

    Outside a repetition ``start``/``stop`` record nothing (warm-up passes run the same code). An op
    that runs several times in one repetition (``q_proj`` once per decoder layer) yields several
    intervals; :meth:`stats` takes their mean per repetition (the op's time in one layer) and then
    order statistics across repetitions.
    """

    def __init__(self, device="cpu"):
        self.device = as_device(device)
        self.cuda = self.device.type == "cuda"
        self._open: dict[str, list] = {}
        self._pending: list[tuple[str, object, object]] = []
        self._reps: list[dict[str, list[float]]] = []
        self._host_reps: list[dict[str, list[float]]] = []
        self._in_rep = False

    def _mark(self):
        """CPU: ``perf_counter``. CUDA: (event recorded on the current stream, ``perf_counter``)."""
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record(torch.cuda.current_stream(self.device))
            return event, time.perf_counter()
        return time.perf_counter()

    def start(self, op: str) -> None:
        if self._in_rep:
            self._open.setdefault(op, []).append(self._mark())

    def stop(self, op: str) -> None:
        if not self._in_rep:
            return
        stack = self._open.get(op)
        if not stack:
            raise TimingError(f"op {op!r}: stop() without a matching start()")
        begin = stack.pop()
        self._pending.append((op, begin, self._mark()))

    def begin_rep(self) -> None:
        self._open.clear()
        self._pending.clear()
        self._in_rep = True

    def end_rep(self) -> None:
        """Close a repetition and keep its intervals (seconds per op)."""
        self._in_rep = False
        unclosed = [op for op, stack in self._open.items() if stack]
        if unclosed:
            self._open.clear()
            self._pending.clear()
            raise TimingError(f"op {unclosed[0]!r}: start() without a matching stop() in this repetition")
        if self.cuda:
            torch.cuda.synchronize(self.device)
        rep: dict[str, list[float]] = {}
        host: dict[str, list[float]] = {}
        for op, begin, end in self._pending:
            if self.cuda:
                seconds = begin[0].elapsed_time(end[0]) * 1e-3  # elapsed_time is in ms
                host.setdefault(op, []).append(end[1] - begin[1])
            else:
                seconds = end - begin
            rep.setdefault(op, []).append(seconds)
        self._pending.clear()
        for op, values in rep.items():
            check_samples(values, op)
        self._reps.append(rep)
        self._host_reps.append(host)

    def run(self, fn, reps: int, warmup: int, flush_l2: bool | str = True, after=None) -> None:
        """``warmup`` untimed calls of ``fn``, then ``reps`` repetitions, each after a cache flush
        (:func:`~.timing.flush_cache`); ``after`` runs after every call, outside every interval."""
        for i in range(warmup + reps):
            timed = i >= warmup
            if timed:
                flush_cache(self.device, flush_l2)
                self.begin_rep()
            fn()
            if timed:
                self.end_rep()
            if after is not None:
                after()

    def ops(self) -> list[str]:
        seen: dict[str, None] = {}
        for rep in self._reps:
            for op in rep:
                seen.setdefault(op, None)
        return list(seen)

    def counts(self) -> dict[str, int]:
        """Intervals per repetition for each op (e.g. the number of decoder layers)."""
        return {op: len(self._reps[-1].get(op, [])) for op in self.ops()} if self._reps else {}

    def stats(self, exclude=()) -> dict[str, Stats]:
        """Per op (but those in ``exclude``): order statistics across repetitions of the op's mean
        interval in a repetition (CUDA: with the median of the per-repetition mean host interval)."""
        threads = None if self.cuda else torch.get_num_threads()
        out = {}
        for op in self.ops():
            if op in exclude:
                continue
            per_rep, host = [], []
            for rep, host_rep in zip(self._reps, self._host_reps):
                values = rep.get(op)
                if not values:
                    raise TimingError(f"op {op!r}: missing from some repetitions")
                per_rep.append(sum(values) / len(values))
                if self.cuda:
                    host.append(sum(host_rep[op]) / len(host_rep[op]))
            out[op] = Stats.from_samples(per_rep, op=op, threads=threads, host=host if self.cuda else None)
        return out

    def uncovered(self, outer: str) -> Stats:
        """Per repetition: the one ``outer`` interval minus every other interval of that repetition.

        With ``outer`` around the whole instrumented step and the op intervals inside it (never
        nested in each other), this is the time no op row covers: the step's *remainder* (CUDA: with the median host seconds
        of the same difference).
        """
        threads = None if self.cuda else torch.get_num_threads()
        samples, host = [], []
        for rep, host_rep in zip(self._reps, self._host_reps):
            whole = rep.get(outer)
            if not whole or len(whole) != 1:
                raise TimingError(f"op {outer!r}: needs exactly one interval per repetition, got {len(whole or [])}")
            samples.append(_minus_inner(rep, outer))
            if self.cuda:
                host.append(_minus_inner(host_rep, outer))
        return Stats.from_samples(samples, op=f"{outer} minus the op intervals", threads=threads,
                                  host=host if self.cuda else None)


def _minus_inner(rep: dict[str, list[float]], outer: str) -> float:
    """The one ``outer`` interval of a repetition minus every other interval in it."""
    return rep[outer][0] - sum(sum(values) for op, values in rep.items() if op != outer)


# A module-level "current" timer lets code deep inside a forward pass (the attention function
# registered with transformers) find the timer without threading it through model kwargs.
_ACTIVE: list[OpTimer] = []


def active_timer() -> OpTimer | None:
    return _ACTIVE[-1] if _ACTIVE else None


@contextmanager
def activate(timer: OpTimer):
    _ACTIVE.append(timer)
    try:
        yield timer
    finally:
        _ACTIVE.remove(timer)


class maybe_op:
    """``with maybe_op("qk"):`` — timed if an OpTimer is active, free otherwise.

    A plain class, not a generator context manager: it runs inside every timed forward pass, where
    its own cost lands in the step's ``remainder``, so it is kept as cheap as Python allows.
    """

    __slots__ = ("name", "timer")

    def __init__(self, name: str):
        self.name = name
        self.timer = None

    def __enter__(self):
        self.timer = active_timer()
        if self.timer is not None:
            self.timer.start(self.name)

    def __exit__(self, *exc):
        if self.timer is not None:
            self.timer.stop(self.name)
        return False
