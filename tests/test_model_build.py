"""Models and heads built where they run: meta first, allocated on the target, seeded fill there;
and the host memory a measuring rule should declare."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import AutoConfig, AutoModelForCausalLM

from medusa_roofline.analytic.memory import PROCESS_BASELINE_MB, estimate_working_set_bytes, rule_mem_mb, weight_params
from medusa_roofline.decoding.heads import MedusaHeads, random_heads
from medusa_roofline.models.init import FILL_BLOCK, seeded_normal_
from medusa_roofline.models.load import build_model
from medusa_roofline.models.source import PRESET_DIR, model_dims


class TensorLog(TorchDispatchMode):
    """Records (device, numel) of every tensor any torch op produces while active."""

    def __init__(self):
        super().__init__()
        self.made = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.made.append((t.device.type, t.numel()))
        return out


def test_no_weight_is_made_on_the_host_when_the_target_is_another_device():
    """Llama-33B (2 layers) + 4 heads for a non-CPU target: not one weight-sized tensor touches the CPU."""
    log = TensorLog()
    with log:
        model = build_model("llama-33b", torch.float16, "meta", layers=2)
        heads = random_heads(model, num_heads=4)
    assert {p.device.type for p in [*model.parameters(), *heads.parameters()]} == {"meta"}
    assert heads.medusa_head[0][1].weight.dtype == torch.float16, "heads take the model's dtype"
    cpu = [n for dev, n in log.made if dev == "cpu"]
    assert max(cpu, default=0) < 10_000, f"CPU tensors of {max(cpu)} elements were created"
    assert max(n for dev, n in log.made if dev == "meta") >= 32000 * 6656, "the weights were made on the target"


def test_random_weights_are_seeded_finite_and_shaped_like_hf_init():
    a, b = build_model("tiny", torch.float32), build_model("tiny", torch.float32)
    c = build_model("tiny", torch.float32, seed=1)
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.isfinite(pa).all() and torch.equal(pa, pb), name
        if "norm" in name:
            assert torch.equal(pa, torch.ones_like(pa)), name
        else:
            assert not torch.equal(pa, pc), name
            assert 0.015 < float(pa.detach().std()) < 0.025, name  # config initializer_range 0.02
    assert torch.equal(a.model.embed_tokens.weight[0], torch.zeros(64)), "padding row zero, as HF does"
    weights = [p for n, p in a.named_parameters() if p.ndim == 2]
    assert len({tuple(p.flatten()[:8].tolist()) for p in weights}) == len(weights), "every matrix differs"
    reference = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(PRESET_DIR / "tiny"))
    assert torch.equal(a.model.rotary_emb.inv_freq, reference.model.rotary_emb.inv_freq), "RoPE buffers recomputed"


def test_seeded_normal_tiles_large_tensors_from_distinct_offsets():
    big, other = torch.empty(2 * FILL_BLOCK + 5), torch.empty(2 * FILL_BLOCK + 5)
    seeded_normal_([big, other], 1.0, seed=3)
    assert torch.equal(big[:FILL_BLOCK], big[FILL_BLOCK:2 * FILL_BLOCK]), "repeats with the block's period"
    assert not torch.equal(big[:FILL_BLOCK], other[:FILL_BLOCK]), "each tensor starts at its own offset"
    assert 0.99 < float(big.std()) < 1.01 and abs(float(big.mean())) < 0.01
    rows = torch.empty(300, 6656)
    seeded_normal_([rows], 0.02, seed=0)
    assert len({tuple(r[:4].tolist()) for r in rows}) == 300, "no two rows of a matrix are equal"
    with pytest.raises(ValueError, match="one device at a time"):
        seeded_normal_([torch.empty(3), torch.empty(3, device="meta")], 1.0, seed=0)


def test_heads_built_on_the_target_in_the_model_dtype():
    h = MedusaHeads(64, 256, num_heads=2, dtype=torch.bfloat16)
    assert {p.dtype for p in h.parameters()} == {torch.bfloat16}
    assert torch.equal(h.medusa_head[0][0].linear.bias, torch.zeros(64, dtype=torch.bfloat16))
    model = build_model("tiny", torch.float64)
    assert {p.dtype for p in random_heads(model).parameters()} == {torch.float64}


def test_rule_mem_mb_by_hand():
    dims = model_dims("tiny")
    one = estimate_working_set_bytes(dims, 2, 2, 512, 112, 4, 4)
    want = PROCESS_BASELINE_MB["cpu"] + 1.25 * one / 2**20
    got = rule_mem_mb(dims, 2, [1, 2], [128, 512], [1, 112], 4, medusa_heads=4)
    assert got % 256 == 0 and want <= got < want + 256, "the largest point, with margin, rounded up"
    assert rule_mem_mb(dims, 2, [1], [128], [1], 2, device="cuda") == PROCESS_BASELINE_MB["cuda"]
    big = model_dims("llama-33b")
    ckpt = rule_mem_mb(big, 2, [1], [128], [1], 2, medusa_heads=4, device="cuda:0", checkpoint=True)
    assert ckpt >= PROCESS_BASELINE_MB["cuda"] + 1.25 * weight_params(big, 2, 4) * 2 / 2**20
    cpu33 = rule_mem_mb(big, 2, [16], [8192], [112], 4, medusa_heads=4)
    assert cpu33 > 1.25 * weight_params(big, 2, 4) * 4 / 2**20, "weights alone are 10 GB in float32"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_build_creates_no_weight_on_the_host():
    log = TensorLog()
    with log:
        model = build_model("llama-33b", torch.float16, "cuda", layers=2)
        heads = random_heads(model, num_heads=4)
    assert {p.device.type for p in [*model.parameters(), *heads.parameters()]} == {"cuda"}
    assert max((n for dev, n in log.made if dev == "cpu"), default=0) < 10_000
    assert all(torch.isfinite(p).all() for p in model.parameters())
