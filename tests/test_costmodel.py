"""The cost model against hand-derived closed forms and the paper's operational intensities."""

import math

import pytest

from medusa_roofline.analytic import costmodel
from medusa_roofline.models.source import ModelDims, model_dims

LLAMA33 = ModelDims(hidden=6656, heads=52, kv_heads=52, head_dim=128, intermediate=17920,
                    layers=60, vocab=32000, max_positions=2048)


def test_presets_are_the_papers_models():
    for name, (h, heads, layers, inter) in {
        "llama-7b": (4096, 32, 32, 11008),
        "llama-13b": (5120, 40, 40, 13824),
        "llama-33b": (6656, 52, 60, 17920),
    }.items():
        d = model_dims(name)
        assert (d.hidden, d.heads, d.layers, d.intermediate, d.vocab) == (h, heads, layers, inter, 32000)
        assert d.head_dim == 128 and d.kv_heads == heads
    gqa = model_dims("llama-3-8b")
    assert (gqa.heads, gqa.kv_heads, gqa.head_dim) == (32, 8, 128)


@pytest.mark.parametrize("b,n,s", [(1, 1, 128), (4, 16, 1024), (16, 112, 8192)])
def test_qk_pv_closed_forms(b, n, s):
    H, d, e = 52, 128, 2
    qk = costmodel.op_cost("qk", LLAMA33, b, n, s, e)
    pv = costmodel.op_cost("pv", LLAMA33, b, n, s, e)
    assert qk.flops == pv.flops == 2 * b * H * n * s * d
    assert qk.bytes == 2 * (b * H * n * d + b * H * s * d + b * H * n * s)
    assert pv.bytes == 2 * (b * H * n * s + b * H * s * d + b * H * n * d)


@pytest.mark.parametrize("n", [16, 112])
def test_medusa_oi_approaches_nd_over_n_plus_d(n):
    d = 128
    limit = n * d / (n + d)
    # OI = n s d / (n d + s d + n s) -> n d / (n + d) as s grows, from below.
    far = costmodel.op_cost("qk", LLAMA33, 1, n, 10**9, 2).oi
    assert far == pytest.approx(limit, rel=1e-5)
    assert costmodel.op_cost("qk", LLAMA33, 1, n, 8192, 2).oi < limit


def test_paper_limits():
    assert 16 * 128 / (16 + 128) == pytest.approx(14.22, abs=0.01)
    assert 112 * 128 / (112 + 128) == pytest.approx(59.73, abs=0.01)
    ar = costmodel.op_cost("qk", LLAMA33, 1, 1, 10**9, 2).oi
    assert ar == pytest.approx(128 / 129, rel=1e-5)  # ≈ 0.99


@pytest.mark.parametrize("s,expected", [(128, 12.8), (8192, 14.1976)])
def test_medusa16_oi_at_paper_context_lengths(s, expected):
    assert costmodel.op_cost("qk", LLAMA33, 1, 16, s, 2).oi == pytest.approx(expected, rel=1e-4)


def test_oi_independent_of_batch():
    ois = {costmodel.op_cost("pv", LLAMA33, b, 64, 2048, 2).oi for b in (1, 2, 4, 8, 16)}
    assert max(ois) - min(ois) < 1e-12


def test_gqa_shrinks_kv_projection_and_cache_traffic():
    dims = model_dims("llama-3-8b")  # 32 heads, 8 KV heads, d 128, hidden 4096
    b, n, s, e = 2, 16, 1024, 2
    k = costmodel.op_cost("k_proj", dims, b, n, s, e)
    assert k.flops == 2 * b * n * 4096 * 1024
    assert k.bytes == e * (4096 * 1024 + b * n * 4096 + b * n * 1024)
    qk = costmodel.op_cost("qk", dims, b, n, s, e)
    assert qk.bytes == e * (b * 32 * n * 128 + b * 8 * s * 128 + b * 32 * n * s)


def test_linear_closed_form():
    c = costmodel.linear(b=3, n=5, d_in=7, d_out=11, e=2)
    assert c.flops == 2 * 3 * 5 * 7 * 11
    assert c.bytes == 2 * (7 * 11 + 3 * 5 * 7 + 3 * 5 * 11)


def test_softmax_convention_and_fused():
    c = costmodel.op_cost("softmax", LLAMA33, 2, 16, 512, 2)
    elements = 2 * 52 * 16 * 512
    assert c.flops == costmodel.SOFTMAX_FLOPS_PER_ELEMENT * elements
    assert c.bytes == 2 * 2 * elements
    fused = costmodel.op_cost("softmax", LLAMA33, 2, 16, 512, 2, fused=True)
    assert fused.bytes == 0 and math.isinf(fused.oi)


def test_fused_attention_drops_score_traffic():
    b, n, s, H, d, e = 1, 64, 4096, 52, 128, 2
    qk = costmodel.op_cost("qk", LLAMA33, b, n, s, e, fused=True)
    assert qk.bytes == e * (b * H * n * d + b * H * s * d)
    assert qk.oi == pytest.approx(n * s * d / (n * d + s * d))
    assert qk.oi > costmodel.op_cost("qk", LLAMA33, b, n, s, e).oi


def test_phase_shapes_and_unknowns():
    assert costmodel.phase_shape("init", 99, 512) == (512, 512)
    assert costmodel.phase_shape("ar", 99, 512) == (1, 512)
    assert costmodel.phase_shape("medusa", 48, 512) == (48, 512)
    with pytest.raises(ValueError, match="phase"):
        costmodel.phase_shape("decode", 1, 1)
    with pytest.raises(ValueError, match="op"):
        costmodel.op_cost("attn", LLAMA33, 1, 1, 1, 2)


def test_roofline_bound():
    assert costmodel.attainable_flops(1.0, 312e12, 1.935e12) == 1.935e12
    assert costmodel.attainable_flops(1000.0, 312e12, 1.935e12) == 312e12
    assert costmodel.bound(59.0, 312e12, 1.935e12) == "memory"
    assert costmodel.bound(200.0, 312e12, 1.935e12) == "compute"


# ------------------------------------------------------------------ the step's element-wise ops


@pytest.mark.parametrize("b,n", [(1, 1), (4, 16), (16, 112)])
def test_elementwise_ops_closed_forms(b, n):
    """Every op the paper does not count, at Llama-33B shapes (h 6656, I 17920, H = H_kv = 52, d 128), e = 2."""
    h, inter, H, d, e = 6656, 17920, 52, 128, 2
    rows = b * n
    cost = {op: costmodel.op_cost(op, LLAMA33, b, n, 4096, e) for op in costmodel.STEP_LAYER_OPS
            + costmodel.STEP_MODEL_OPS}
    for norm in ("input_norm", "post_attn_norm", "final_norm"):
        assert cost[norm] == costmodel.Cost(4 * rows * h, e * (2 * rows * h + h))
    for add in ("attn_residual", "mlp_residual"):
        assert cost[add] == costmodel.Cost(rows * h, e * 3 * rows * h)
    assert cost["silu_mul"] == costmodel.Cost(5 * rows * inter, e * 3 * rows * inter)
    assert cost["rotary"] == costmodel.Cost(3 * rows * 2 * H * d, e * (2 * rows * 2 * H * d + 2 * rows * d))
    assert cost["kv_write"] == costmodel.Cost(0, e * 4 * rows * H * d)
    assert cost["embedding"] == costmodel.Cost(0, e * 2 * rows * h)
    for op in costmodel.ELEMENTWISE_LAYER_OPS + ("embedding", "final_norm"):
        assert cost[op].oi < 1, op  # element-wise: well below 1 FLOP/B


def test_rotary_and_kv_write_follow_gqa():
    dims = model_dims("llama-3-8b")  # 32 heads, 8 KV heads, d 128
    b, n, e = 2, 16, 2
    assert costmodel.op_cost("rotary", dims, b, n, 1, e).flops == 3 * b * n * (32 + 8) * 128
    assert costmodel.op_cost("kv_write", dims, b, n, 1, e).bytes == e * 4 * b * n * 8 * 128


def test_paper_ops_unchanged_and_step_uses_all_ops():
    """The analytic tables keep the paper's ops; the step total adds every element-wise op."""
    assert costmodel.ALL_OPS == costmodel.LAYER_OPS + ("lm_head",)
    assert not set(costmodel.ELEMENTWISE_LAYER_OPS) & set(costmodel.ALL_OPS)
    assert set(costmodel.STEP_LAYER_OPS) == set(costmodel.LAYER_OPS) | set(costmodel.ELEMENTWISE_LAYER_OPS)
    b, n, s, e, layers = 2, 4, 100, 2, 3
    total = costmodel.step_cost(LLAMA33, b, n, s, e, layers, medusa=False, num_heads=0)
    per_layer = [costmodel.op_cost(op, LLAMA33, b, n, s, e) for op in costmodel.STEP_LAYER_OPS]
    once = [costmodel.op_cost(op, LLAMA33, b, n, s, e) for op in ("embedding", "final_norm", "lm_head")]
    assert total.flops == layers * sum(c.flops for c in per_layer) + sum(c.flops for c in once)
    assert total.bytes == layers * sum(c.bytes for c in per_layer) + sum(c.bytes for c in once)


def test_step_shape_is_the_one_definition():
    """keys = kv_len + the step's own tokens; the heads on every tree token or on the accepted one."""
    assert costmodel.step_shape("ar", 64, 512) == (1, 513, 0)
    assert costmodel.step_shape("medusa", 64, 512) == (64, 576, 64)
    assert costmodel.step_shape("medusa", 64, 512, "accepted") == (64, 576, 1)
    with pytest.raises(ValueError, match="medusa_heads"):
        costmodel.step_shape("medusa", 64, 512, "all")
    with pytest.raises(ValueError, match="phase"):
        costmodel.step_shape("init", 64, 512)


def test_measured_ops_time_the_hooked_ops():
    ops = [op for op, _ in costmodel.measured_ops("medusa")]
    assert ops[:3] == ["input_norm", "q_proj", "k_proj"] and ops[-3:] == ["medusa_heads", "remainder", "step"]
    assert {"post_attn_norm", "final_norm", "embedding"} <= set(ops)
    assert not {"rotary", "kv_write", "silu_mul", "attn_residual", "mlp_residual"} & set(ops)  # no hook reaches them


def test_launch_counts():
    assert costmodel.launches("q_proj", 2) == 1 and costmodel.launches("rotary", 4) == 10
    assert costmodel.launches("input_norm", 4) == 6 and costmodel.launches("input_norm", 2) == 8
    assert costmodel.launches("softmax", 4) == costmodel.launches("softmax", 2) == 1  # lean eager: no cast
    assert costmodel.launches("qk", 2) == 1  # scale as the GEMM's alpha
    assert costmodel.launches("medusa_heads", 2, num_heads=4, head_layers=1) == 4 * 4 + 1
    with pytest.raises(ValueError, match="launch count"):
        costmodel.launches("step", 2)


class _Kernels:
    """Counts the kernels the ATen ops dispatched inside the block launch: every op but views and
    allocations (a ``to`` that copies into a new dtype counts; one that returns its input does not)."""

    def __enter__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        outer = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                name = str(func)
                if name.startswith("aten.empty"):
                    return out
                if not func.is_view or (name.startswith("aten.to.") and out.data_ptr() != args[0].data_ptr()):
                    outer.ops.append(str(func))
                return out

        self.ops, self.mode = [], Mode()
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self.mode.__exit__(*exc)


@pytest.mark.parametrize("dtype,e", [("float32", 4), ("float16", 2)])
def test_launch_counts_match_the_installed_transformers(dtype, e):
    """LAUNCHES is counted from the code; this recounts it on the modules and functions that run."""
    import torch
    from transformers.activations import ACT2FN
    from transformers.models.llama.modeling_llama import LlamaRMSNorm, apply_rotary_pos_emb

    from medusa_roofline.measure.attention import eager_pv, eager_qk, eager_softmax

    dt = getattr(torch, dtype)
    x = torch.randn(2, 3, 8, dtype=dt)
    q, k = torch.randn(2, 4, 3, 8, dtype=dt), torch.randn(2, 2, 3, 8, dtype=dt)
    cos = sin = torch.randn(2, 3, 8, dtype=dt)
    scores = torch.randn(2, 4, 3, 3, dtype=dt)
    norm, silu = LlamaRMSNorm(8).to(dt), ACT2FN["silu"]
    cases = {
        "input_norm": lambda: norm(x),
        "rotary": lambda: apply_rotary_pos_emb(q, k, cos, sin),
        "silu_mul": lambda: silu(x) * x,
        "attn_residual": lambda: x + x,
        "qk": lambda: eager_qk(q, k, 0.5),
        "softmax": lambda: eager_softmax(scores),
        "pv": lambda: eager_pv(scores, k),
    }
    with torch.inference_mode():
        for op, run in cases.items():
            with _Kernels() as count:
                run()
            assert len(count.ops) == costmodel.launches(op, e), (op, count.ops)
