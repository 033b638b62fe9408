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
