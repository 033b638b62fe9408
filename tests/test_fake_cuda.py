"""Every CUDA-only branch, run on the CPU through the fake-CUDA shim (tests/fake_cuda.py): control flow
(synchronize once, flush before the start event, graph capture then replays) and units (CUDA events
answer in milliseconds, every Stats is in seconds)."""

from __future__ import annotations

import math
import time

import pytest
import torch
from fake_cuda import fake_cuda_fixture  # noqa: F401 - the fake_cuda fixture

from medusa_roofline.core import devices
from medusa_roofline.core.errors import ConfigError
from medusa_roofline.core.provenance import provenance
from medusa_roofline.measure import attention, ceilings, op_timer, timing
from medusa_roofline.measure.instrument import instrumented_floor
from medusa_roofline.measure.microbench import run_microbench
from medusa_roofline.measure.op_timer import OpTimer, activate, active_timer, maybe_op
from medusa_roofline.measure.step import DecodeStep
from medusa_roofline.measure.sweep import run_sweep
from medusa_roofline.measure.table import step_closure, validate_measured

SLEEP = 2e-3


def sleeper():
    time.sleep(SLEEP)


def test_the_shim_behaves_like_cuda(fake_cuda):
    assert torch.cuda.is_available() and torch.cuda.get_device_name() == "NVIDIA H200"
    assert torch.empty(3, device="cuda").device.type == "cpu"  # tensors land on the CPU
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    b.record()
    with pytest.raises(RuntimeError, match="not ready"):  # read before the device got there
        a.elapsed_time(b)
    torch.cuda.synchronize()
    assert 0 <= a.elapsed_time(b) < 50  # ms
    with pytest.raises(RuntimeError, match="enable_timing"):
        torch.cuda.Event().elapsed_time(b)


def test_devices_resolve_against_the_fake(fake_cuda):
    assert devices.resolve_device("cuda") == torch.device("cuda", 0)
    with pytest.raises(ConfigError, match="only 1 CUDA device"):
        devices.resolve_device("cuda:1")
    assert devices.resolve_dtype("auto", "cuda") == torch.float16
    assert devices.resolve_dtype("bfloat16", "cuda") == torch.bfloat16
    fake_cuda.bf16 = False
    with pytest.raises(ConfigError, match="bfloat16 is not supported natively by NVIDIA H200"):
        devices.resolve_dtype("bfloat16", "cuda")
    devices.free_memory("cuda")
    devices.synchronize("cuda")
    assert fake_cuda.calls["empty_cache"] == 1 and fake_cuda.calls["synchronize"] >= 1
    prov = provenance(torch.device("cuda", 0))
    assert prov["device_name"] == "NVIDIA H200" and prov["cuda"] == "12.8"


def test_time_callable_events_are_seconds_and_synchronize_once(fake_cuda):
    before = fake_cuda.calls["synchronize"]
    st = timing.time_callable(sleeper, "cuda", warmup=1, reps=4, flush_l2=False, op="sleep")
    assert fake_cuda.calls["synchronize"] - before == 2  # before the first event, after the last
    assert fake_cuda.calls["event.record"] == 8
    assert SLEEP * 0.9 < st.p10 <= st.median <= st.p90 < SLEEP * 25  # seconds, not ms
    assert st.threads is None and st.host_median is not None and SLEEP * 0.9 < st.host_median < SLEEP * 25


@pytest.mark.parametrize("mode", [True, *timing.FLUSH_MODES])
def test_every_flush_variant_runs_before_the_start_event(fake_cuda, monkeypatch, mode):
    real = timing.flush_cache

    def logged(device, how=True):
        fake_cuda.log.append("flush")
        return real(device, how)

    monkeypatch.setattr(timing, "flush_cache", logged)
    fake_cuda.log.clear()
    timing.time_callable(lambda: None, "cuda", warmup=0, reps=3, flush_l2=mode)
    assert fake_cuda.log == ["sync"] + ["flush", "record", "record"] * 3 + ["sync"]
    buf = timing.l2_flush_buffer("cuda")
    assert buf.numel() == 2 * fake_cuda.props.L2_cache_size  # 2 x L2, above the (test) floor
    assert int(buf.count_nonzero()) == 0


def test_flush_variant_names_are_checked(fake_cuda):
    with pytest.raises(ValueError, match="flush_l2: 'zero' is not"):
        timing.time_callable(lambda: None, "cuda", warmup=0, reps=1, flush_l2="zero")
    assert timing.flush_mode(True) == timing.DEFAULT_FLUSH == "read" and timing.flush_mode(False) is None


def test_cuda_graph_times_replays_in_seconds(fake_cuda):
    fake_cuda.replay_s = 3e-3
    calls = []
    st = timing.time_callable(lambda: calls.append(1), "cuda", warmup=2, reps=5, cuda_graph=True, op="g")
    assert len(calls) == 3  # 2 warm-up calls on the side stream + 1 captured; replays do not call fn
    assert fake_cuda.calls["graph.replay"] == 6  # one untimed upload + 5 timed
    assert fake_cuda.calls["wait_stream"] == 2
    assert 3e-3 * 0.9 < st.median < 3e-3 * 25
    with pytest.raises(ValueError, match="after"):
        timing.time_callable(lambda: None, "cuda", cuda_graph=True, after=lambda: None)


def test_floors_on_cuda(fake_cuda):
    e = timing.empty_region("cuda", reps=10, warmup=2, flush_l2=True)
    assert 0 <= e["p10"] <= e["median"] <= e["p90"] < 0.05 and e["reps"] == 10
    tiny = timing.tiny_kernel_floor("cuda", reps=5, warmup=1)
    assert 0 < tiny.median < 0.05 and tiny.host_median is not None
    wrapped = instrumented_floor("cuda", torch.float32, reps=5, warmup=1)
    assert 0 < wrapped.median < 0.05 and wrapped.host_median is not None


def test_op_timer_cuda_ms_to_s_and_one_sync_per_rep(fake_cuda):
    timer = OpTimer("cuda")
    before = fake_cuda.calls["synchronize"]
    with activate(timer):
        for _ in range(3):
            timer.begin_rep()
            for _layer in range(2):
                with maybe_op("slow"):
                    sleeper()
            with maybe_op("fast"):
                pass
            timer.end_rep()
    assert fake_cuda.calls["synchronize"] - before == 3
    st = timer.stats()
    assert SLEEP * 0.9 < st["slow"].median < SLEEP * 25 and st["fast"].median < st["slow"].median
    assert st["slow"].threads is None and SLEEP * 0.9 < st["slow"].host_median < SLEEP * 25
    assert timer.counts() == {"slow": 2, "fast": 1}


def test_ceilings_on_cuda_record_the_device(fake_cuda):
    c = ceilings.measure_ceilings("cuda", "auto", reps=3, warmup=1, copy_bytes=1 << 20, matmul_n=32,
                                  extra_dtypes=["bfloat16"])
    assert c["device_type"] == "cuda" and c["device_name"] == "NVIDIA H200" and c["dtype"] == "float16"
    assert c["compute_capability"] == "9.0" and c["l2_bytes"] == 3 << 20 and c["memory_bytes"] > 0
    assert c["versions"]["cuda"] == "12.8" and set(c["matmul"]) == {"float16", "bfloat16"}
    copy = c["bandwidth"]["copy"]
    assert copy["median"] == pytest.approx(2 * (1 << 20) / copy["time_s_median"])  # B/s from seconds
    assert 1e6 < copy["median"] < 1e13 and fake_cuda.calls["empty_cache"] >= 1


def test_sdpa_on_cuda_with_the_efficient_kernels_strides(fake_cuda, monkeypatch):
    """What EFFICIENT_ATTENTION does on a GPU: a [b, g*n, H_kv, d]-strided output for the GQA view."""
    real = torch.nn.functional.scaled_dot_product_attention

    def efficient_like(*args, **kwargs):
        out = real(*args, **kwargs)
        return out.transpose(1, 2).contiguous().transpose(1, 2)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", efficient_like)
    b, heads, kv_heads, n, past, d = 2, 8, 2, 5, 11, 16
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(b, n, heads, d, generator=gen).transpose(1, 2)
    k = torch.randn(b, kv_heads, past + n, d, generator=gen)
    v = torch.randn(b, kv_heads, past + n, d, generator=gen)
    mask = torch.zeros(b, 1, n, past + n)
    mask[..., past + 1:] = -math.inf
    grouped = efficient_like(q.reshape(b, kv_heads, heads // kv_heads * n, d), k, v)
    with pytest.raises(RuntimeError, match="view"):  # what killed the micro-benchmark job before
        grouped.view(b, heads, n, d)
    with torch.inference_mode():
        prepared = attention.prepare("sdpa", q, k, v, 0.25, mask=mask)
        reference = attention.prepare_eager(q, k, v, mask, 0.25).output
    attention.check_output(prepared, reference)
    assert prepared.kernel == "FLASH_ATTENTION" and prepared.output.shape == (b, n, heads, d)


def test_flex_on_cuda_forces_labels_and_counts_its_compiles(fake_cuda, monkeypatch):
    """The compiled call is a stand-in that compiles one graph per new shape (Dynamo's counter)."""
    seen, shapes = [], set()

    def compiled(q, k, v, **kwargs):
        seen.append(kwargs.get("kernel_options"))
        shape = (tuple(q.shape), tuple(k.shape))
        if shape not in shapes:
            shapes.add(shape)
            torch._dynamo.utils.counters["stats"]["unique_graphs"] += 1
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=kwargs["scale"],
                                                                 enable_gqa=kwargs["enable_gqa"])

    state = attention.FlexState("cuda")
    state._compiled = compiled
    compiles, kernels = [], []
    with torch.inference_mode():
        for n, kv in ((16, 64), (16, 64), (16, 128), (128, 64)):  # the second point reuses the first's graph
            q = torch.randn(1, 4, n, 8).to("cuda")
            k = torch.randn(1, 4, kv + n, 8, device="cuda")
            p = attention.prepare("flex", q, k, k, 0.5, flex=state)
            compiles.append(p.compiles)
            kernels.append(p.kernel)
    assert compiles == [1, 0, 1, 1] and state.compiles == 3
    assert [o["BACKEND"] for o in seen] == ["TRITON_DECODE"] * 3 + ["TRITON"]
    assert all("static shapes, Triton flex_decoding kernel" in k for k in kernels[:3])
    assert "static shapes, Triton flex_attention kernel" in kernels[3]


@pytest.mark.parametrize("n, heads, kv_heads, kernel", [
    (1, 52, 52, "TRITON_DECODE"), (112, 52, 52, "TRITON_DECODE"), (127, 52, 52, "TRITON_DECODE"),
    (128, 52, 52, "TRITON"), (16, 12, 4, "TRITON"),  # query too long; GQA ratio 3 is no power of two
    (32, 32, 8, "TRITON_DECODE"), (33, 32, 8, "TRITON"),  # n*g = 128 fits one 128-row block, 132 does not
])
def test_flex_triton_kernel_rule(n, heads, kv_heads, kernel):
    assert attention.flex_triton_kernel(n, heads, kv_heads) == kernel


def test_microbench_on_cuda_end_to_end(fake_cuda):
    df = run_microbench("tiny", ["ar", "medusa-16"], [1], [32], device="cuda", reps=3, warmup=1, progress=False,
                        attention_backends=["eager", "sdpa"])
    validate_measured(df)
    assert (df["status"] == "ok").all() and set(df["device"]) == {"cuda:0"}
    assert set(df["device_name"]) == {"NVIDIA H200"} and set(df["cuda"]) == {"12.8"}
    assert set(df["dtype"]) == {"float16"}  # auto on CUDA
    assert (df["host_s_median"] > 0).all() and (df["launch_floor_s"] > 0).all()
    assert df["compiles"].isna().all()  # nothing compiled for eager / sdpa
    assert (df["time_s_median"] < 1).all()  # seconds


def test_microbench_cuda_graph_replays(fake_cuda):
    fake_cuda.replay_s = 2e-3
    df = run_microbench("tiny", ["ar"], [1], [16], device="cuda", reps=3, warmup=1, progress=False, cuda_graph=True)
    assert (df["status"] == "ok").all()
    assert ((df["time_s_median"] > 2e-3 * 0.9) & (df["time_s_median"] < 2e-3 * 25)).all()


@pytest.mark.slow  # a sweep end to end (seconds)
def test_sweep_on_cuda_end_to_end(fake_cuda):
    df = run_sweep("tiny", "medusa-16", [1], [32], device="cuda", layers=1, reps=2, warmup=1, progress=False,
                   flush_l2="write+read")
    validate_measured(df)
    assert (df["status"] == "ok").all() and set(df["device_name"]) == {"NVIDIA H200"}
    assert {"step", "remainder", "medusa_heads"} <= set(df["op"])
    assert (df["host_s_median"] > 0).all() and (df["launch_floor_s"] > 0).all()  # remainder and step included
    assert df["compiles"].isna().all()  # eager attention compiles nothing
    by_op = df.set_index("op")
    assert by_op.loc["step", "launch_floor_s"] != by_op.loc["qk", "launch_floor_s"]  # tiny kernel vs wrapped 1x1 Linear
    assert by_op.loc["remainder", "launch_floor_s"] == by_op.loc["qk", "launch_floor_s"]  # the instrumented pass's path
    assert len(step_closure(df)) == 1


@pytest.mark.slow  # a sweep end to end (seconds)
def test_sweep_on_cuda_alternates_flushed_plain_and_instrumented_rounds(fake_cuda, monkeypatch):
    """Per round one plain step then one instrumented pass, each timed one after the named flush; then the floors."""
    log, real_flush, real_step = [], timing.flush_cache, DecodeStep.step

    def logged_flush(device, mode=True):
        log.append(("flush", mode))
        return real_flush(device, mode)

    def logged_step(self):
        log.append(("step", "instrumented" if active_timer() is not None else "plain"))
        return real_step(self)

    monkeypatch.setattr(timing, "flush_cache", logged_flush)
    monkeypatch.setattr(op_timer, "flush_cache", logged_flush)
    monkeypatch.setattr(DecodeStep, "step", logged_step)
    reps, warmup = 3, 1
    df = run_sweep("tiny", "ar", [1], [16], device="cuda", layers=1, reps=reps, warmup=warmup, progress=False,
                   flush_l2="write")
    assert (df["status"] == "ok").all() and set(df["reps"]) == {reps}
    last = max(i for i, (what, _) in enumerate(log) if what == "step")
    warm_round = [("step", "plain"), ("step", "instrumented")]
    timed_round = [("flush", "write"), ("step", "plain"), ("flush", "write"), ("step", "instrumented")]
    assert log[:last + 1] == warm_round * warmup + timed_round * reps
    assert log[last + 1:] == [("flush", "write")] * (2 * reps)  # the two launch floors, flushed the same way
