"""Attention backends (eager, SDPA, FlexAttention): same output as eager on a real Medusa tree and a KV
cache (MHA and GQA), the fused `attn` op's cost, micro-benchmark rows per backend, and the
qkpv_backends figure (points = drawn, recipe, regenerated from an archive)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.collections import PathCollection

from medusa_roofline.analytic import costmodel
from medusa_roofline.analytic.hardware import load_table
from medusa_roofline.core.errors import ConfigError
from medusa_roofline.core.io import write_csv, write_json
from medusa_roofline.decoding.tree import build_tree, load_acceptance_table
from medusa_roofline.decoding.tree_buffers import tree_attention_mask, tree_buffers
from medusa_roofline.measure import attention, backends
from medusa_roofline.measure.microbench import run_microbench
from medusa_roofline.measure.table import COLUMNS
from medusa_roofline.models.source import ModelDims, model_dims
from medusa_roofline.repro import archive
from medusa_roofline.results import figures_measured as figures
from medusa_roofline.results import render
from medusa_roofline.results.metrics import compute_metrics

REPO = Path(__file__).resolve().parent.parent
HARDWARE_TABLE = REPO / "config" / "hardware.yaml"
CEILINGS = {"device": "cpu", "device_name": "Test CPU", "bandwidth_bytes_per_s": 3e10, "peak_flops_per_s": 1.5e11,
            "bandwidth_kind": "read", "matmul": {"float32": {"median": 1.5e11}}}
PLOT = {"formats": ["svg"], "dpi": 50, "width": 4.0, "height": 3.0}


def _hf_eager(q, k, v, mask, scaling):
    from transformers.models.llama.modeling_llama import eager_attention_forward

    module = SimpleNamespace(num_key_value_groups=q.shape[1] // k.shape[1], training=False)
    return eager_attention_forward(module, q, k, v, mask, scaling)[0]


def _case(heads, kv_heads, n_tree, past=37, b=2, d=16, seed=0):
    """Q in the model's layout, K/V = a cache of `past` tokens + the step's n tokens, the tree's mask."""
    gen = torch.Generator().manual_seed(seed)
    buffers = tree_buffers(build_tree(load_acceptance_table(), n_tree)) if n_tree else None
    n = buffers.n if buffers else 1
    q = torch.randn(b, n, heads, d, generator=gen).transpose(1, 2)
    k = torch.randn(b, kv_heads, past + n, d, generator=gen)
    v = torch.randn(b, kv_heads, past + n, d, generator=gen)
    if buffers is None:
        mask = torch.zeros(b, 1, 1, past + 1)
    else:
        mask = tree_attention_mask(buffers, past, b, torch.float32, "cpu")
    return q, k, v, mask, buffers, past


@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (8, 2)], ids=["mha", "gqa"])
@pytest.mark.parametrize("n_tree", [0, 16], ids=["ar", "medusa-16"])
def test_every_backend_matches_eager(heads, kv_heads, n_tree):
    q, k, v, mask, buffers, past = _case(heads, kv_heads, n_tree)
    scaling = q.shape[-1] ** -0.5
    reference = _hf_eager(q, k, v, mask, scaling)
    flex = attention.FlexState("cpu", compile=False)  # compiled flex: test_compiled_flex_matches_eager (slow)
    with torch.inference_mode():
        for backend in backends.BACKENDS:
            prepared = attention.prepare(backend, q, k, v, scaling, mask=mask,
                                         ancestor=None if buffers is None else buffers.ancestor_mask,
                                         kv_len=past, flex=flex)
            assert prepared.output.shape == reference.shape == (2, q.shape[2], heads, 16)
            torch.testing.assert_close(prepared.output, reference, **attention.tolerance(torch.float32))
            attention.check_output(prepared, reference)
            assert prepared.ops == backends.backend_ops(backend)
            with prepared.context():  # every timed callable runs
                for fn in prepared.calls.values():
                    fn()
    if n_tree:  # the mask matters: without it the outputs differ
        assert not torch.allclose(_hf_eager(q, k, v, None, scaling), reference, atol=1e-3)


def test_sdpa_records_the_kernel_that_ran():
    q, k, v, mask, _, _ = _case(4, 4, 16)
    with torch.inference_mode():
        prepared = attention.prepare("sdpa", q, k, v, 0.25, mask=mask)
    assert prepared.kernel in attention.SDPA_PREFERENCE
    assert prepared.kernel == "FLASH_ATTENTION"  # on the CPU: PyTorch's fused CPU kernel takes masks


def test_flex_block_mask_is_the_tree_and_one_mask_mod_serves_every_kv_len():
    from torch.nn.attention.flex_attention import create_mask

    buffers = tree_buffers(build_tree(load_acceptance_table(), 24))
    state = attention.FlexState("cpu", compile=False)
    mods = set()
    for past in (5, 130, 300):
        bm = state.block_mask(buffers.ancestor_mask, past)
        mods.add(bm.mask_mod)
        dense = create_mask(bm.mask_mod, None, None, buffers.n, past + buffers.n, device="cpu")
        want = tree_attention_mask(buffers, past, 1, torch.float32, "cpu") == 0
        assert torch.equal(dense[0, 0], want[0, 0])
    assert len(mods) == 1


def test_flex_falls_back_to_the_reference_path_on_the_cpu_only_when_compile_fails():
    q, k, v, mask, buffers, past = _case(4, 4, 16)
    state = attention.FlexState("cpu")

    def broken(*args, **kwargs):
        raise RuntimeError("inductor says no")

    state._compiled = broken  # what a failing torch.compile'd call looks like
    with torch.inference_mode():
        prepared = attention.prepare("flex", q, k, v, 0.25, ancestor=buffers.ancestor_mask, kv_len=past, flex=state)
        assert "compile failed: RuntimeError: inductor says no" in prepared.kernel
        assert "not compiled" in prepared.kernel and prepared.note
        attention.check_output(prepared, _hf_eager(q, k, v, mask, 0.25))
    cuda_like = attention.FlexState("cpu")
    cuda_like._compiled, cuda_like.device = broken, torch.device("cuda")
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inductor says no"):  # never on a GPU
        attention.prepare("flex", q, k, v, 0.25, flex=cuda_like)  # no block mask: none built on "cuda"


def test_check_output_names_the_backend_that_disagrees():
    q, k, v, mask, _, _ = _case(4, 4, 16)
    with torch.inference_mode():
        prepared = attention.prepare("sdpa", q, k, v, 0.25, mask=mask)
        with pytest.raises(RuntimeError, match="sdpa .*disagrees with eager at here"):
            attention.check_output(prepared, prepared.output + 1, "here")


def test_parse_backends():
    assert backends.parse_backends(["SDPA", "eager", "sdpa"]) == ["sdpa", "eager"]
    assert backends.parse_backends("flex") == ["flex"]
    for bad in ([], ["xformers"], 3):
        with pytest.raises(ConfigError, match="^attention_backends"):
            backends.parse_backends(bad)


# ------------------------------------------------------------------------------ cost of the fused op

SMALL = ModelDims(hidden=4, heads=2, kv_heads=1, head_dim=2, intermediate=8, layers=3, vocab=10, max_positions=64)


def test_attn_row_is_counted_with_the_fused_bound():
    row = {"model": "small", "device": "cpu", "device_name": "Test CPU", "mode": "medusa-3", "phase": "medusa",
           "op": "attn", "candidates": 3, "batch": 2, "kv_len": 7, "q_len": 3, "keys": 10, "layers": 0,
           "dtype": "float16", "time_s_median": 1.0, "status": "ok", "attention_backend": "sdpa"}
    out = compute_metrics(pd.DataFrame([row]), {"small": SMALL}, CEILINGS, None).iloc[0]
    b, h, hkv, n, s, d, e = 2, 2, 1, 3, 10, 2, 2
    assert out["flops"] == 2 * (2 * b * h * n * s * d) + 5 * b * h * n * s  # qk + pv + softmax
    assert out["bytes_counted"] == e * (2 * b * h * n * d + 2 * b * hkv * s * d)  # Q, K, V read, O written once
    assert out["bytes_moved"] == out["bytes_counted"] + e * b * h * n * s  # + the tree mask, repeated over the group
    unfused = sum(costmodel.op_cost(op, SMALL, b, n, s, e).bytes for op in ("qk", "softmax", "pv"))
    assert out["bytes_counted"] < unfused and out["flops"] == sum(
        costmodel.op_cost(op, SMALL, b, n, s, e).flops for op in ("qk", "softmax", "pv"))
    assert costmodel.FUSED_ATTENTION_OP not in costmodel.ALL_OPS  # never in the analytic table


def test_fused_oi_is_not_capped_by_the_score_traffic():
    dims = model_dims("llama-33b")
    n, s, e = 112, 8192 + 112, 2
    qk = costmodel.op_cost("qk", dims, 1, n, s, e)
    fused = costmodel.attention_fused(1, n, s, dims.heads, dims.kv_heads, dims.head_dim, e)
    assert qk.oi < n * 128 / (n + 128) + 0.1  # ≈ 59.7
    assert fused.oi > 100  # ≈ n for s >> n


# ------------------------------------------------------------------------------ micro-benchmark rows


@pytest.fixture(scope="module")
def backend_rows():
    return run_microbench("tiny", ["ar", "medusa-16"], [1, 2], [16], reps=2, warmup=1, progress=False,
                          attention_backends=["eager", "sdpa", "flex"], flex_compile=False)


@pytest.mark.slow  # a micro-benchmark run of three backends (seconds)
def test_microbench_rows_per_backend(backend_rows):
    df = backend_rows
    assert list(df.columns) == COLUMNS
    assert len(df) == 2 * 2 * (3 + 1 + 1) and (df["status"] == "ok").all() and (df["time_s_median"] > 0).all()
    ops = df.groupby("attention_backend")["op"].apply(set).to_dict()
    assert ops == {"eager": {"qk", "softmax", "pv"}, "sdpa": {"attn"}, "flex": {"attn"}}
    kernels = df.groupby("attention_backend")["kernel"].apply(set).to_dict()
    assert kernels["eager"] == {"eager"} and kernels["sdpa"] == {"FLASH_ATTENTION"}
    assert all("not compiled" in k for k in kernels["flex"])
    fused = df[df["op"] == "attn"]
    assert (fused["est_bytes"] < df.loc[df["op"] == "qk", "est_bytes"].max() * 2).all()
    metrics = compute_metrics(df, {"tiny": model_dims("tiny")}, CEILINGS, None)  # no "share a key" error
    assert len(metrics) == len(df) and {"attention_backend", "kernel"} <= set(metrics.columns)


def test_microbench_default_is_eager_only():
    df = run_microbench("tiny", ["ar"], [1], [8], reps=2, warmup=1, progress=False)
    assert set(df["attention_backend"]) == {"eager"} and set(df["op"]) == {"qk", "softmax", "pv"}
    with pytest.raises(ConfigError, match="^attention_backends"):
        run_microbench("tiny", ["ar"], [1], [8], progress=False, attention_backends=["nope"])


@pytest.mark.slow
def test_compiled_flex_matches_eager():
    """torch.compile'd flex_attention on the CPU (static shapes: ~5-30 s per shape, cold inductor cache)."""
    q, k, v, mask, buffers, past = _case(8, 2, 16)
    reference = _hf_eager(q, k, v, mask, q.shape[-1] ** -0.5)
    state = attention.FlexState("cpu")
    with torch.inference_mode(), attention.compile_settings():
        prepared = attention.prepare("flex", q, k, v, q.shape[-1] ** -0.5, ancestor=buffers.ancestor_mask,
                                     kv_len=past, flex=state)
    assert prepared.kernel == "flex_attention (torch.compile, static shapes, CPU template)", prepared.kernel
    torch.testing.assert_close(prepared.output, reference, **attention.tolerance(torch.float32))
    assert prepared.compiles >= 1  # the preparation run compiled this shape ...
    with torch.inference_mode(), attention.compile_settings():
        again = attention.prepare("flex", q, k, v, q.shape[-1] ** -0.5, ancestor=buffers.ancestor_mask,
                                  kv_len=past, flex=state)
    assert again.compiles == 0 and state.compiles == prepared.compiles  # ... and the same shape reuses it


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_backends_on_cuda_llama33b_shapes():
    df = run_microbench("llama-33b", ["ar", "medusa-64"], [1, 4], [512, 2048], device="cuda", reps=10, warmup=3,
                        progress=False, attention_backends=["eager", "sdpa", "flex"])  # outputs checked inside
    assert (df["status"] == "ok").all() and df["dtype"].iloc[0] == "float16"
    flex = df[df["attention_backend"] == "flex"]
    assert flex["kernel"].str.startswith("flex_attention (torch.compile, static shapes, Triton flex_decoding").all()
    assert (flex["compiles"] >= 0).all() and flex["compiles"].sum() >= 1
    sdpa = df[(df["attention_backend"] == "sdpa") & (df["mode"] == "ar")]
    assert set(sdpa["kernel"]) <= set(attention.SDPA_PREFERENCE) - {"MATH"}


# ------------------------------------------------------------------------------ the figure


def metrics_with_backends(rows: pd.DataFrame) -> pd.DataFrame:
    rows = rows.assign(device_name="Test CPU")
    return compute_metrics(rows, {"tiny": model_dims("tiny")}, CEILINGS, None)


@pytest.mark.slow  # a micro-benchmark run of three backends (seconds)
def test_qkpv_backends_points_are_what_is_drawn(backend_rows):
    metrics = metrics_with_backends(backend_rows)
    fig, points = figures.qkpv_backends(metrics, CEILINGS, None, "t")
    assert set(points["attention_backend"]) == {"eager", "sdpa", "flex"}
    assert set(points.loc[points["attention_backend"] == "eager", "op"]) == {"qk", "pv"}
    assert set(points.loc[points["attention_backend"] != "eager", "op"]) == {"attn"}
    assert {"qk/pv eager ar", "qk/pv eager Medusa (# cand.: 16)", "attn sdpa Medusa (# cand.: 16)",
            "attn flex ar"} <= set(points["series"])
    x, y = render.KINDS["qkpv_backends"].x, render.KINDS["qkpv_backends"].y
    drawn = {c.get_label(): np.asarray(c.get_offsets()) for c in fig.axes[0].collections
             if isinstance(c, PathCollection) and not c.get_label().startswith("_")
             and c.get_label() != figures.LAUNCH_LABEL}
    assert set(drawn) == set(points["series"])
    for name, xy in drawn.items():
        np.testing.assert_allclose(xy, points[points["series"] == name][[x, y]].to_numpy(float), rtol=1e-12)
    assert sum(len(v) for v in drawn.values()) == len(points)
    # fused dots sit right of the eager dots of the same tree (no score traffic)
    med = points[points["phase"] == "medusa"]
    assert med.loc[med["op"] == "attn", "oi"].min() > med.loc[med["op"] == "qk", "oi"].max()
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "SDPA attn (fused)" in legend and "Medusa (# cand.: 16)" in legend
    plt.close(fig)


@pytest.mark.slow  # a micro-benchmark run of three backends (seconds)
def test_qkpv_backends_regenerates_from_an_archive(backend_rows, tmp_path):
    work = tmp_path / "run"
    work.mkdir()
    inputs = {"metrics": "results/metrics/tiny/cpu.csv", "ceilings": "results/ceilings/cpu.json",
              "hardware_table": str(HARDWARE_TABLE)}
    stem = "results/figures/tiny/cpu/qkpv_backends"
    with contextlib.chdir(work):
        write_csv(metrics_with_backends(backend_rows), inputs["metrics"])
        write_json(CEILINGS, inputs["ceilings"])
        params = render.plain({"model_display": "Tiny Llama", "plot": PLOT})
        fig, points = render.render("qkpv_backends", inputs, params)
        render.save(fig, points, "qkpv_backends", inputs, params, f"{stem}.csv", f"{stem}{render.RECIPE_SUFFIX}")
        plt.close(fig)
        results = sorted(str(p.relative_to(work)) for p in (work / "results").rglob("*") if p.is_file())
        tarball = work / "results/archive/t.tar.gz"
        archive.pack_run(tarball, results, [str(HARDWARE_TABLE)], {"run_name": "t"}, {"device": "cpu"})
    assert load_table(HARDWARE_TABLE)  # the recipe's hardware table is a repo file, archived under repo/
    result = archive.regenerate(tarball, tmp_path / "out")
    assert result.ok, (result.manifest_errors, result.mismatches, result.errors)
    assert [f["kind"] for f in result.figures] == ["qkpv_backends"] and result.figures[0]["identical"]
    assert (tmp_path / "out" / f"{stem}.svg").is_file()
