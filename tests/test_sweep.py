"""Measured sweep through the real (tiny) model: timed attention == eager, rows, oom, cache restore."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from medusa_roofline.analytic.memory import estimate_working_set_bytes
from medusa_roofline.core.devices import resolve_dtype
from medusa_roofline.core.errors import ConfigError
from medusa_roofline.decoding.tree import build_tree, load_acceptance_table
from medusa_roofline.decoding.tree_buffers import tree_attention_mask, tree_buffers
from medusa_roofline.measure.grid import Mode, parse_mode
from medusa_roofline.measure.instrument import (
    attention_implementation,
    register_timed_attention,
    timed_attention_forward,
    timed_linears,
    timed_modules,
)
from medusa_roofline.measure.op_timer import OpTimer, activate
from medusa_roofline.measure.step import DecodeStep
from medusa_roofline.measure.sweep import run_sweep
from medusa_roofline.measure.table import COLUMNS, step_closure
from medusa_roofline.models.load import build_model
from medusa_roofline.models.source import model_dims

TINY = dict(reps=2, warmup=1, progress=False)
LAYER_OPS = {"input_norm", "q_proj", "k_proj", "v_proj", "o_proj", "qk", "softmax", "pv", "post_attn_norm", "gate_proj",
             "up_proj", "down_proj"}
MODEL_OPS = {"embedding", "final_norm", "lm_head"}


@pytest.fixture(scope="module")
def tiny_model():
    return build_model("tiny", torch.float32, "cpu")


def _eager(module, q, k, v, mask, scaling):
    from transformers.models.llama.modeling_llama import eager_attention_forward

    return eager_attention_forward(module, q, k, v, mask, scaling)


@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (8, 2)], ids=["mha", "gqa"])
def test_timed_attention_equals_eager_with_tree_mask(heads, kv_heads):
    torch.manual_seed(0)
    b, d, past = 2, 16, 11
    buffers = tree_buffers(build_tree(load_acceptance_table(), 9))
    n = buffers.n
    module = SimpleNamespace(num_key_value_groups=heads // kv_heads, training=False)
    q = torch.randn(b, n, heads, d).transpose(1, 2)  # model layout: projected then transposed
    k = torch.randn(b, kv_heads, past + n, d)
    v = torch.randn(b, kv_heads, past + n, d)
    mask = tree_attention_mask(buffers, past, b, torch.float32, "cpu")
    ref_out, ref_w = _eager(module, q, k, v, mask, d ** -0.5)
    timer = OpTimer("cpu")
    with activate(timer):
        timer.begin_rep()
        out, w = timed_attention_forward(module, q, k, v, mask, d ** -0.5)
        timer.end_rep()
    assert out.shape == ref_out.shape == (b, n, heads, d)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(w, ref_w, rtol=1e-5, atol=1e-6)
    assert set(timer.counts()) == {"qk", "softmax", "pv"}
    # the tree mask really hides non-ancestors
    assert float(w[0, 0, 1:, past:][~buffers.ancestor_mask[1:]].max()) == 0.0


def test_timed_attention_without_timer_or_mask():
    module = SimpleNamespace(num_key_value_groups=2, training=False)
    q, k, v = torch.randn(1, 4, 1, 8), torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8)
    out, _ = timed_attention_forward(module, q, k, v, None, 0.3)
    torch.testing.assert_close(out, _eager(module, q, k, v, None, 0.3)[0])


def test_timed_wrappers_time_each_module_and_leave_no_trace(tiny_model):
    """The per-op pass wraps ``forward`` (cheaper than hooks): every Linear/norm/embedding op is timed once
    per call, the outputs do not change, no hook is registered, and an earlier instance ``forward``
    (another tool's wrapper) is put back on exit."""
    ids = torch.tensor([[3, 5, 7]])
    q_proj = tiny_model.model.layers[0].self_attn.q_proj
    calls = []

    def earlier(*args, **kwargs):
        calls.append(1)
        return type(q_proj).forward(q_proj, *args, **kwargs)

    q_proj.forward = earlier
    try:
        with torch.inference_mode():
            ref = tiny_model(ids).logits
            timer = OpTimer("cpu")
            with timed_linears(tiny_model), timed_modules(tiny_model), activate(timer):
                assert not any(m._forward_hooks or m._forward_pre_hooks for m in tiny_model.modules())
                timer.begin_rep()
                got = tiny_model(ids).logits
                timer.end_rep()
            untimed = tiny_model(ids).logits
        torch.testing.assert_close(got, ref)
        torch.testing.assert_close(untimed, ref)
        layers = tiny_model.config.num_hidden_layers
        expected = {op: layers for op in LAYER_OPS - {"qk", "softmax", "pv"}} | {op: 1 for op in MODEL_OPS}
        assert timer.counts() == expected
        assert q_proj.forward is earlier and len(calls) == 3  # the earlier wrapper ran inside ours, then came back
    finally:
        del q_proj.forward
    assert all("forward" not in m.__dict__ for m in tiny_model.modules())


@pytest.mark.parametrize("mode", ["ar", "medusa-8"])
def test_model_step_timed_path_equals_eager(tiny_model, mode):
    m = parse_mode(mode)
    buffers = None
    if m.phase == "medusa":
        buffers = tree_buffers(build_tree(load_acceptance_table(), m.q_len))
    step = DecodeStep(tiny_model, m, batch=2, kv_len=10, buffers=buffers)
    with attention_implementation(tiny_model, "eager"):
        ref = step.step()
    step.reset()
    with attention_implementation(tiny_model, register_timed_attention()):
        got = step.step()
    step.reset()
    assert tiny_model.config._attn_implementation == "eager"
    assert got.shape == (2, m.q_len, tiny_model.config.vocab_size)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_tree_root_matches_ar_step(tiny_model):
    """The tree's root sees only the cache and itself at position kv_len: its logits are the ar step's."""
    buffers = tree_buffers(build_tree(load_acceptance_table(), 12))
    med = DecodeStep(tiny_model, parse_mode("medusa-12"), batch=2, kv_len=9, buffers=buffers, seed=3)
    ar = DecodeStep(tiny_model, parse_mode("ar"), batch=2, kv_len=9, seed=3)
    torch.testing.assert_close(ar.cache.layers[1].keys[:, :, :9], med.cache.layers[1].keys[:, :, :9])
    ar.input_ids = med.input_ids[:, :1].clone()
    with attention_implementation(tiny_model, register_timed_attention()):
        tree_logits = med.step()
        ar_logits = ar.step()
    torch.testing.assert_close(tree_logits[:, :1], ar_logits, rtol=1e-5, atol=1e-5)


def test_cache_extended_then_restored(tiny_model):
    step = DecodeStep(tiny_model, parse_mode("ar"), batch=1, kv_len=7)
    assert step.seq_length() == 7
    buffers = [(layer.keys, layer.keys.data_ptr()) for layer in step.cache.layers]
    prefix = step.cache.layers[0].keys[:, :, :7].clone()
    step.step()
    assert step.seq_length() == 8
    step.reset()
    assert step.seq_length() == 7
    for layer, (buf, ptr) in zip(step.cache.layers, buffers):
        assert layer.keys is buf and layer.keys.data_ptr() == ptr, "the step wrote in place: no new cache tensor"
        assert layer.keys.shape[-2] == 8, "capacity is kv_len + q_len"
    assert torch.equal(step.cache.layers[0].keys[:, :, :7], prefix)
    step.cache.layers[1].length = 9  # a step that wrote more than q_len is refused
    with pytest.raises(RuntimeError, match="layer lengths"):
        step.reset()


def test_step_attends_over_the_cache_without_copying(tiny_model):
    """update() hands attention views of the preallocated buffers: same storage, no torch.cat copy."""
    step = DecodeStep(tiny_model, parse_mode("medusa-8"), batch=2, kv_len=5,
                      buffers=tree_buffers(build_tree(load_acceptance_table(), 8)))
    layer = step.cache.layers[0]
    seen = []
    original = layer.update

    def spy(k, v, *args, **kwargs):
        keys, values = original(k, v, *args, **kwargs)
        seen.append((keys.data_ptr() == layer.keys.data_ptr(), tuple(keys.shape)))
        return keys, values

    layer.update = spy
    step.step()
    assert seen == [(True, (2, 2, 13, 16))]
    step.reset()


@pytest.mark.slow
def test_sweep_ar_rows(monkeypatch):
    lengths = []
    original = DecodeStep.reset

    def spy(self):
        original(self)
        lengths.append((self.kv_len, self.seq_length()))

    monkeypatch.setattr(DecodeStep, "reset", spy)
    df = run_sweep("tiny", "ar", [1, 2], [8, 24], **TINY)
    assert list(df.columns) == COLUMNS
    assert set(df["op"]) == LAYER_OPS | MODEL_OPS | {"remainder", "step"}
    assert len(df) == 4 * 17
    assert (df["status"] == "ok").all()
    assert (df["time_s_median"] > 0).all() and (df["time_s_p10"] <= df["time_s_p90"]).all()
    assert (df["q_len"] == 1).all() and (df["keys"] == df["kv_len"] + 1).all()
    assert (df["phase"] == "ar").all() and (df["mode"] == "ar").all() and (df["candidates"] == 1).all()
    assert (df["layers"] == 2).all() and (df["bench"] == "sweep").all()
    assert set(df.loc[df["scope"] == "layer", "calls"]) == {2}
    assert set(df.loc[df["op"].isin(["step", "remainder"]), "calls"]) == {1}
    # every rep of both passes (warm-up included) was cropped back to kv_len
    assert lengths and all(kv == got for kv, got in lengths)
    assert len(lengths) == 4 * 2 * (TINY["reps"] + TINY["warmup"])


@pytest.mark.slow  # a sweep of the tiny model (seconds)
def test_sweep_medusa_rows():
    df = run_sweep("tiny", "medusa-16", [2], [8], **TINY)
    assert set(df["op"]) == LAYER_OPS | MODEL_OPS | {"medusa_heads", "remainder", "step"}
    assert (df["heads_tokens"] == 16).all()  # the heads ran on every tree token (the default)
    assert (df["status"] == "ok").all() and (df["time_s_median"] > 0).all()
    assert (df["q_len"] == 16).all() and (df["keys"] == 24).all()
    assert (df["phase"] == "medusa").all() and (df["mode"] == "medusa-16").all() and (df["candidates"] == 16).all()
    assert df["torch"].iloc[0] == torch.__version__ and df["device"].iloc[0] == "cpu"
    assert df["dtype"].iloc[0] == "float32"  # auto on CPU


def test_step_closure_by_hand():
    base = dict(model="tiny", mode="ar", batch=1, kv_len=8, status="ok")
    rows = [dict(base, op="qk", calls=2, time_s_median=1e-3), dict(base, op="lm_head", calls=1, time_s_median=2e-3),
            dict(base, op="remainder", calls=1, time_s_median=3e-3), dict(base, op="step", calls=1, time_s_median=1e-2),
            dict(base, kv_len=16, op="qk", calls=2, time_s_median=1e-3),  # no step/remainder: left out
            dict(base, batch=2, op="step", calls=1, time_s_median=1e-2, status="oom")]
    out = step_closure(pd.DataFrame(rows))
    assert len(out) == 1
    row = out.iloc[0]
    assert row["ops_s"] == pytest.approx(4e-3) and row["covered_s"] == pytest.approx(7e-3)
    assert row["gap"] == pytest.approx(-0.3)


@pytest.mark.slow
def test_sweep_runs_an_explicit_tree():
    from medusa_roofline.decoding.tree import TREES_DIR

    tree = TREES_DIR / "mc_sim_7b_63.yaml"
    df = run_sweep("tiny", "medusa-64", [1], [8], tree=tree, **TINY)
    assert (df["status"] == "ok").all() and set(df["tree"]) == {"mc_sim_7b_63"} and (df["q_len"] == 64).all()
    assert set(run_sweep("tiny", "medusa-16", [1], [8], max_memory_bytes=1, **TINY)["tree"]) == {"greedy-16"}
    assert set(run_sweep("tiny", "ar", [1], [8], max_memory_bytes=1, **TINY)["tree"]) == {""}
    with pytest.raises(ConfigError, match="^tree: mc_sim_7b_63 has 64 nodes .* use mode medusa-64"):
        run_sweep("tiny", "medusa-16", [1], [8], tree=tree, **TINY)
    with pytest.raises(ConfigError, match="^tree: mode ar runs no tree"):
        run_sweep("tiny", "ar", [1], [8], tree=tree, **TINY)


@pytest.mark.slow  # a sweep of the tiny model (seconds)
def test_sweep_heads_on_the_accepted_token(monkeypatch):
    """step.medusa_heads = accepted: the heads see one position per sequence, and the rows say so."""
    from medusa_roofline.decoding.heads import MedusaHeads

    seen = []
    original = MedusaHeads.forward

    def spy(self, hidden):
        seen.append(tuple(hidden.shape))
        return original(self, hidden)

    monkeypatch.setattr(MedusaHeads, "forward", spy)
    df = run_sweep("tiny", "medusa-16", [2], [8], medusa_heads="accepted", **TINY)
    assert (df["heads_tokens"] == 1).all() and (df["status"] == "ok").all()
    assert seen and set(seen) == {(2, 1, 64)}


@pytest.mark.slow  # builds and times a model (seconds)
def test_sweep_oom_by_memory_cap():
    dims = model_dims("tiny")
    small = estimate_working_set_bytes(dims, 2, 1, 8, 1, 4, flush_bytes=sweep_flush())
    big = estimate_working_set_bytes(dims, 2, 1, 512, 1, 4, flush_bytes=sweep_flush())
    assert big > small
    df = run_sweep("tiny", "ar", [1], [8, 512], max_memory_bytes=(small + big) // 2, **TINY)
    ok, oom = df[df["kv_len"] == 8], df[df["kv_len"] == 512]
    assert (ok["status"] == "ok").all() and (ok["time_s_median"] > 0).all()
    assert (oom["status"] == "oom").all() and oom["time_s_median"].isna().all()
    assert set(oom["op"]) == set(ok["op"])
    everything = run_sweep("tiny", "medusa-4", [1], [8], max_memory_bytes=1, **TINY)
    assert (everything["status"] == "oom").all() and len(everything) == 18


def sweep_flush():
    from medusa_roofline.measure.timing import CPU_FLUSH_BYTES

    return CPU_FLUSH_BYTES


@pytest.mark.parametrize(
    "kwargs,key",
    [
        (dict(mode="beam"), "mode"),
        (dict(mode="medusa-1"), "mode"),
        (dict(layers=3), "layers"),
        (dict(dtype="int8"), "dtype"),
        (dict(device="tpu"), "device"),
    ],
)
def test_sweep_guards_its_own_invariants(kwargs, key):
    """What the library itself cannot run; the grid and the rest of the config are checked once, by
    repro/settings.py (tests/test_settings.py, tests/test_bad_input.py)."""
    args = dict(model_source="tiny", mode="ar", batches=[1], kv_lens=[8], progress=False)
    args.update(kwargs)
    with pytest.raises(ConfigError, match=rf"^{key}"):
        run_sweep(**args)


@pytest.mark.slow  # a sweep of the tiny model (seconds)
def test_points_over_the_memory_cap_are_recorded_oom_without_running():
    df = run_sweep("tiny", "medusa-16", [1], [4096 - 16], max_memory_bytes=1, progress=False)
    assert (df["status"] == "oom").all()


def test_parse_mode_and_dtype():
    assert parse_mode("ar").q_len == 1
    assert parse_mode("medusa-64") == Mode("medusa-64", "medusa", 64)
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("bf16", "cpu") == torch.bfloat16  # CPU runs bfloat16 (slowly)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="^device"):
            resolve_dtype("auto", "cuda")


def test_estimate_grows_with_shape():
    dims = model_dims("llama-33b")
    e1 = estimate_working_set_bytes(dims, 2, 1, 128, 1, 2)
    e2 = estimate_working_set_bytes(dims, 2, 8, 2048, 64, 2, medusa_heads=4)
    assert 0 < e1 < e2
    kv = 2 * 2 * 8 * dims.kv_heads * (2048 + 64) * dims.head_dim * 2
    assert e2 - e1 > kv


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_sweep_cuda_tiny():
    df = run_sweep("tiny", "medusa-16", [1, 4], [64], device="cuda", **TINY)
    assert (df["status"] == "ok").all() and (df["time_s_median"] > 0).all()
    assert df["dtype"].iloc[0] == "float16" and df["device"].iloc[0].startswith("cuda")
    assert df["device_name"].iloc[0] == torch.cuda.get_device_name()
    assert not math.isnan(df["time_s_p90"].max())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_timed_attention_equals_eager_cuda_fp16():
    torch.manual_seed(0)
    module = SimpleNamespace(num_key_value_groups=4, training=False)
    q = torch.randn(2, 8, 16, 64, device="cuda", dtype=torch.float16)
    k = torch.randn(2, 2, 80, 64, device="cuda", dtype=torch.float16)
    v = torch.randn(2, 2, 80, 64, device="cuda", dtype=torch.float16)
    mask = torch.zeros(2, 1, 16, 80, device="cuda", dtype=torch.float16)
    out, _ = timed_attention_forward(module, q, k, v, mask, 0.125)
    ref, _ = _eager(module, q, k, v, mask, 0.125)
    torch.testing.assert_close(out, ref, rtol=2e-3, atol=2e-3)
    assert np.isfinite(out.float().cpu().numpy()).all()
