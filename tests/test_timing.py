"""Timers: Stats math, rejection of impossible timings, CPU/CUDA callable and per-op timing."""

from __future__ import annotations

import math
import time

import pytest
import torch

from medusa_roofline.measure import op_timer, timing
from medusa_roofline.measure.op_timer import OpTimer, activate, maybe_op
from medusa_roofline.measure.timing import Stats, TimingError, time_callable


def test_stats_math():
    st = Stats.from_samples([float(x) for x in range(1, 11)], op="x")
    assert st.median == pytest.approx(5.5)
    assert st.p10 == pytest.approx(1.9)  # numpy linear interpolation
    assert st.p90 == pytest.approx(9.1)
    assert st.mean == pytest.approx(5.5)
    assert (st.min, st.max, st.reps) == (1.0, 10.0, 10)
    one = Stats.from_samples([0.25])
    assert one.median == one.p10 == one.p90 == 0.25 and one.reps == 1


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 0.0, -1e-3])
def test_stats_rejects_impossible_timings(bad):
    with pytest.raises(TimingError, match="'q_proj'"):
        Stats.from_samples([1e-3, bad, 2e-3], op="q_proj")


def test_stats_rejects_empty():
    with pytest.raises(TimingError, match="'pv'"):
        Stats.from_samples([], op="pv")


def test_time_callable_cpu_counts_and_threads():
    calls = {"fn": 0, "after": 0}

    def fn():
        calls["fn"] += 1
        time.sleep(0.001)

    def after():
        calls["after"] += 1

    st = time_callable(fn, "cpu", warmup=2, reps=5, flush_l2=False, after=after, op="sleep")
    assert calls == {"fn": 7, "after": 7}
    assert st.reps == 5 and st.threads == torch.get_num_threads()
    assert 0.0009 < st.p10 <= st.median <= st.p90 < 0.5


def test_time_callable_argument_checks():
    with pytest.raises(ValueError):
        time_callable(lambda: None, "cpu", warmup=0, reps=0)
    with pytest.raises(ValueError, match="CUDA"):
        time_callable(lambda: None, "cpu", warmup=0, reps=1, cuda_graph=True)


def test_op_timer_cpu_mean_per_rep():
    timer = OpTimer("cpu")
    with activate(timer):
        with maybe_op("ignored"):  # no rep open: nothing recorded
            pass
        for _ in range(3):
            timer.begin_rep()
            for _layer in range(2):
                with maybe_op("slow"):
                    time.sleep(0.002)
                with maybe_op("fast"):
                    pass
            timer.end_rep()
    assert timer.counts() == {"slow": 2, "fast": 2}
    mean = timer.stats()
    assert set(mean) == {"slow", "fast"}
    assert mean["slow"].reps == 3
    assert 0.0015 < mean["slow"].median < 0.1 and mean["fast"].median < mean["slow"].median
    assert op_timer.active_timer() is None


def test_op_timer_uncovered_is_the_outer_interval_minus_the_ops(monkeypatch):
    clock = iter([0.0, 1.0, 3.0, 4.0, 4.5, 10.0,      # rep 1: outer 10 s, ops 2 + 0.5 s -> 7.5 s uncovered
                  20.0, 21.0, 22.0, 23.0, 23.5, 26.0])  # rep 2: outer 6 s, ops 1 + 0.5 s -> 4.5 s uncovered
    monkeypatch.setattr(op_timer.time, "perf_counter", lambda: next(clock))
    timer = OpTimer("cpu")
    for _ in range(2):
        timer.begin_rep()
        timer.start("whole")
        for op in ("qk", "pv"):
            timer.start(op)
            timer.stop(op)
        timer.stop("whole")
        timer.end_rep()
    rest = timer.uncovered("whole")
    assert (rest.min, rest.max, rest.reps) == (4.5, 7.5, 2)
    assert set(timer.stats(exclude=("whole",))) == {"qk", "pv"}
    with pytest.raises(TimingError, match="'qk minus the op intervals'"):
        timer.uncovered("qk")  # qk does not contain the others: a negative remainder is refused
    with pytest.raises(TimingError, match="'absent'"):
        timer.uncovered("absent")


def test_op_timer_rejects_zero_interval_naming_op(monkeypatch):
    timer = OpTimer("cpu")
    monkeypatch.setattr(op_timer.time, "perf_counter", lambda: 1.0)
    timer.begin_rep()
    timer.start("softmax")
    timer.stop("softmax")
    with pytest.raises(TimingError, match="'softmax'"):
        timer.end_rep()


def test_op_timer_unbalanced():
    timer = OpTimer("cpu")
    timer.begin_rep()
    with pytest.raises(TimingError, match="'qk'"):
        timer.stop("qk")
    timer.start("pv")
    with pytest.raises(TimingError, match="'pv'"):
        timer.end_rep()


def test_cpu_flush_buffer_is_cached():
    a = timing.l2_flush_buffer("cpu")
    assert a.numel() == timing.CPU_FLUSH_BYTES and timing.l2_flush_buffer("cpu") is a


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_time_callable_flush_and_graph():
    x = torch.randn(1024, 1024, device="cuda", dtype=torch.float16)
    st = time_callable(lambda: x @ x, "cuda", warmup=3, reps=20, flush_l2=True, op="mm")
    assert st.reps == 20 and 0 < st.p10 <= st.median <= st.p90 and st.threads is None
    assert timing.l2_flush_buffer("cuda").numel() >= timing.CUDA_FLUSH_BYTES
    out = torch.empty_like(x)
    g = time_callable(lambda: torch.matmul(x, x, out=out), "cuda", warmup=3, reps=20, cuda_graph=True, op="mm")
    assert g.median > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_op_timer_events():
    x = torch.randn(2048, 2048, device="cuda", dtype=torch.float16)
    timer = OpTimer("cuda")
    with activate(timer):
        for _ in range(5):
            timer.begin_rep()
            with maybe_op("big"):
                x @ x
            with maybe_op("small"):
                x[:64, :64] @ x[:64, :64]
            timer.end_rep()
    st = timer.stats()
    assert st["big"].median > st["small"].median > 0
