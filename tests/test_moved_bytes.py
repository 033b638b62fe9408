"""Bytes the kernels move: the cost model's moved-byte formulas by hand, checked against the ATen ops the
eager attention and the Medusa heads actually launch (measure/traffic.py), with no copy hidden inside a
kernel (the profiler sees nested ops), and the eager path's numbers still those of transformers' eager."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from medusa_roofline.analytic import costmodel, moved
from medusa_roofline.decoding.heads import MedusaHeads
from medusa_roofline.decoding.tree import build_tree, load_acceptance_table
from medusa_roofline.decoding.tree_buffers import tree_attention_mask, tree_buffers
from medusa_roofline.measure import attention
from medusa_roofline.measure.eager import eager_pv, eager_qk, eager_softmax, masked_from
from medusa_roofline.measure.instrument import timed_attention_forward
from medusa_roofline.measure.traffic import count_traffic, footprint
from medusa_roofline.models.source import ModelDims

COPIES = {"aten::copy_", "aten::clone", "aten::contiguous", "aten::_to_copy"}


def point(b, heads, kv_heads, n_tree, past=40, d=16, dtype=torch.float32, seed=0):
    """Q as the projection leaves it, K/V with the step's own tokens appended, the tree's additive mask."""
    gen = torch.Generator().manual_seed(seed)
    n = n_tree or 1
    q = torch.randn(b, n, heads, d, generator=gen).transpose(1, 2).to(dtype)
    k = torch.randn(b, kv_heads, past + n, d, generator=gen).to(dtype)
    v = torch.randn(b, kv_heads, past + n, d, generator=gen).to(dtype)
    if n_tree:
        mask = tree_attention_mask(tree_buffers(build_tree(load_acceptance_table(), n_tree)), past, b, dtype, "cpu")
    else:
        mask = torch.zeros(b, 1, 1, past + 1, dtype=dtype)
    return q, k, v, mask


def test_moved_closed_forms_by_hand():
    # qk, b=2, H=8, H_kv=2, n=4, s=10, d=16, e=2: counted e*(bHnd + bHkv s d + bHns) = 2*(1024+640+640)
    assert costmodel.qk(2, 4, 10, 8, 2, 16, 2).bytes == 4608
    # + Q copied (read + write 2*bHnd = 2048 elements) + mask over n-1 = 3 columns (2*bHn*3 = 384, b*n*3 = 24)
    assert moved.eager_qk_moved(2, 4, 10, 8, 2, 16, 2, masked_keys=3) == 4608 + 2 * (2048 + 384 + 24)
    assert moved.eager_qk_moved(1, 1, 10, 8, 2, 16, 2) == costmodel.qk(1, 1, 10, 8, 2, 16, 2).bytes  # ar: a view
    assert not moved.query_copied(1, 4, 8, 8)  # MHA, b = 1: [H, n, d] is a strided view
    assert moved.query_copied(2, 4, 8, 8) and moved.query_copied(1, 4, 8, 2)
    assert moved.tree_masked_keys("ar", 1) == 0 and moved.tree_masked_keys("medusa", 16) == 15
    # heads: hidden 4, vocab 10, 1 head, 1 block, b*n = 6 tokens, e = 2:
    # block linear 2*(16 + 24 + 24) + bias 2*4 + SiLU 2*2*24 + add 2*3*24; projection 2*(40 + 24 + 60); stack 2*2*60
    small = ModelDims(hidden=4, heads=2, kv_heads=1, head_dim=2, intermediate=8, layers=3, vocab=10, max_positions=64)
    assert moved.medusa_heads_moved(small, 2, 3, 2, 1) == 128 + 8 + 96 + 144 + 248 + 240


@pytest.mark.parametrize("b,heads,kv_heads", [(1, 8, 8), (2, 8, 8), (1, 8, 2), (3, 8, 2)])
@pytest.mark.parametrize("n_tree", [0, 16], ids=["ar", "medusa-16"])
def test_eager_ops_move_what_the_cost_model_says(b, heads, kv_heads, n_tree):
    q, k, v, mask = point(b, heads, kv_heads, n_tree)
    n, s, d = q.shape[2], k.shape[2], q.shape[3]
    phase = "medusa" if n_tree else "ar"
    with torch.no_grad():
        eager_qk(q, k, 0.25, mask)  # finds the mask's columns once, outside the counted call
        scores, qk_traffic = count_traffic(eager_qk, q, k, 0.25, mask)
        probs, sm_traffic = count_traffic(eager_softmax, scores)
        _, pv_traffic = count_traffic(eager_pv, probs, v)
    dims = ModelDims(hidden=heads * d, heads=heads, kv_heads=kv_heads, head_dim=d, intermediate=64, layers=1,
                     vocab=32, max_positions=4096)
    for op, traffic in (("qk", qk_traffic), ("softmax", sm_traffic), ("pv", pv_traffic)):
        assert traffic.total == moved.moved_bytes(op, phase, dims, b, n, s, 4, 1, 0), (op, traffic.ops)
    assert [name for name in qk_traffic.names() if name == "clone"] == (
        ["clone"] if moved.query_copied(b, n, heads, kv_heads) else [])
    assert ("add_" in qk_traffic.names()) == bool(n_tree)  # ar's mask hides nothing: no pass at all
    assert sm_traffic.names() == ["_softmax"] and pv_traffic.names() == ["bmm"]


def test_no_copy_hides_inside_the_kernels():
    """The profiler records nested ATen calls too: the only copies are the ones the counter saw (Q's)."""
    for b, heads, kv_heads, n_tree in ((1, 8, 8, 16), (2, 8, 2, 16), (2, 8, 2, 0)):
        q, k, v, mask = point(b, heads, kv_heads, n_tree)
        with torch.no_grad():
            eager_qk(q, k, 0.25, mask)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                eager_pv(eager_softmax(eager_qk(q, k, 0.25, mask)), v)
        copies = [e.name for e in prof.events() if e.name in COPIES]
        expected = moved.query_copied(b, q.shape[2], heads, kv_heads)
        assert copies == (["aten::clone", "aten::copy_"] if expected else []), copies


def test_medusa_heads_move_what_the_cost_model_says():
    dims = ModelDims(hidden=32, heads=4, kv_heads=4, head_dim=8, intermediate=64, layers=1, vocab=50, max_positions=64)
    heads = MedusaHeads(dims.hidden, dims.vocab, num_heads=3, num_layers=1)
    hidden = torch.randn(2, 5, dims.hidden)
    with torch.no_grad():
        _, traffic = count_traffic(heads, hidden)
    assert traffic.total == moved.medusa_heads_moved(dims, 2, 5, 4, 3, 1), traffic.ops


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_norms_and_embedding_move_what_the_cost_model_says(dtype):
    """transformers' RMSNorm (float32 inside, casts in 16-bit) and the embedding gather, against the ATen ops."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    e = torch.finfo(dtype).bits // 8
    dims = ModelDims(hidden=64, heads=4, kv_heads=4, head_dim=16, intermediate=128, layers=2, vocab=100,
                     max_positions=64)
    norm, table = LlamaRMSNorm(dims.hidden).to(dtype), torch.nn.Embedding(dims.vocab, dims.hidden).to(dtype)
    ids = torch.randperm(dims.vocab)[:6].reshape(2, 3)  # distinct ids: six rows gathered
    with torch.no_grad():
        _, norm_traffic = count_traffic(norm, torch.randn(2, 3, dims.hidden).to(dtype))
        _, gather = count_traffic(table, ids)
    for op in costmodel.NORM_OPS:
        assert norm_traffic.total == moved.moved_bytes(op, "ar", dims, 2, 3, 3, e, 1, 0), norm_traffic.ops
    # the counter charges the whole table as the gather's operand; the gather reads only its 6 rows
    assert gather.total - footprint(table.weight) + 6 * dims.hidden * e == moved.moved_bytes(
        "embedding", "ar", dims, 2, 3, 3, e, 1, 0)
    # by hand, t = 6 rows of h = 64, float32: 28·t·h + 24·t + 4·h
    assert moved.rms_norm_moved(2, 3, 64, 4) == 28 * 384 + 24 * 6 + 4 * 64
    assert moved.embedding_moved(2, 3, 64, 2) == 8 * 6 + 2 * 2 * 384


def test_counter_conventions():
    x = torch.randn(4, 8)
    with torch.no_grad():
        _, views = count_traffic(lambda: x.t().reshape(8, 4)[:2].expand(3, 2, 4))
        assert views.total == 0  # views move nothing
        _, flat = count_traffic(lambda: x.t().reshape(32))  # a transpose flattened: one copy, read + written
        assert flat.ops == [("clone", 128, 128)]
        _, copy = count_traffic(lambda: torch.empty(4, 8).copy_(x))
        assert (copy.read, copy.written) == (128, 128)  # copy_ overwrites: its destination is not read
        out = torch.empty(2, 4, 4)
        _, gemm = count_traffic(lambda: out.baddbmm_(torch.randn(2, 4, 3), torch.randn(2, 3, 4), beta=0.0))
        assert gemm.ops[-1] == ("baddbmm_", 4 * 2 * (12 + 12), 4 * 32)  # beta = 0: out written, not read
    assert footprint(torch.zeros(5).expand(7, 5)) == 20  # a broadcast dimension counts once
    with torch.inference_mode(), pytest.raises(ValueError, match="inference mode"):
        count_traffic(lambda: x + 1)


def test_masked_from_is_found_once_per_mask_and_never_stale():
    q, k, v, mask = point(2, 4, 4, 16)
    assert masked_from(mask) == k.shape[2] - 16 + 1  # cached keys and the root column are visible to all
    assert masked_from(torch.zeros(2, 1, 1, 9)) is None and masked_from(None) is None
    with torch.no_grad():
        eager_qk(q, k, 0.25, mask)
        _, traffic = count_traffic(eager_qk, q, k, 0.25, mask)
    assert not {"ne", "any", "nonzero"} & set(traffic.names())  # remembered: no search inside a timed call
    changed = mask.clone()
    changed[..., 0] = -1.0
    assert masked_from(changed) == 0
    changed[..., 0] = 0.0  # an in-place edit bumps the version: found again
    assert masked_from(changed) == k.shape[2] - 16 + 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("heads,kv_heads", [(8, 8), (8, 2)], ids=["mha", "gqa"])
def test_lean_eager_path_agrees_with_transformers_eager(dtype, heads, kv_heads):
    from transformers.models.llama.modeling_llama import eager_attention_forward

    q, k, v, mask = point(2, heads, kv_heads, 16, dtype=dtype)
    module = SimpleNamespace(num_key_value_groups=heads // kv_heads, training=False)
    with torch.no_grad():
        ref, ref_w = eager_attention_forward(module, q, k, v, mask, 0.25)
        out, w = timed_attention_forward(module, q, k, v, mask, 0.25)
    assert out.dtype == w.dtype == dtype
    torch.testing.assert_close(out, ref, **attention.tolerance(dtype))
    torch.testing.assert_close(w, ref_w, **attention.tolerance(dtype))


def test_the_byte_tables_in_the_docs_are_current():
    """docs/bytes.md shows what `python benchmarks/moved_bytes.py --check` prints for the cost model today."""
    import importlib.util
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("moved_bytes", repo / "benchmarks" / "moved_bytes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    doc = (repo / "docs" / "bytes.md").read_text().splitlines()
    rows = [line for line in module.micro_table(check=False)[2:] + module.sweep_table()[2:]]
    missing = [row for row in rows if not any(d.startswith(row[:-1]) for d in doc)]
    assert not missing, f"docs/bytes.md is stale; rerun benchmarks/moved_bytes.py --check: {missing[:3]}"
    assert sum("| yes |" in d for d in doc) == 3 * 8  # every eager (op, mode) agreed with the launched ATen ops
