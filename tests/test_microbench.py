"""qk/softmax/pv micro-benchmark: row schema shared with the sweep, true model shapes, validation."""

from __future__ import annotations

import pytest
import torch

from medusa_roofline.core.errors import ConfigError
from medusa_roofline.decoding.tree import build_tree, load_acceptance_table
from medusa_roofline.decoding.tree_buffers import tree_buffers
from medusa_roofline.measure.microbench import attention_inputs, run_microbench
from medusa_roofline.measure.table import COLUMNS
from medusa_roofline.models.source import model_dims


def test_microbench_rows_tiny():
    df = run_microbench("tiny", ["ar", "medusa-4"], [1, 2], [8, 16], reps=2, warmup=1, progress=False)
    assert list(df.columns) == COLUMNS
    assert len(df) == 2 * 2 * 2 * 3
    assert set(df["op"]) == {"qk", "softmax", "pv"}
    assert (df["status"] == "ok").all() and (df["time_s_median"] > 0).all()
    assert (df["bench"] == "microbench").all() and (df["scope"] == "layer").all()
    ar, med = df[df["mode"] == "ar"], df[df["mode"] == "medusa-4"]
    assert (ar["q_len"] == 1).all() and (ar["phase"] == "ar").all() and (ar["candidates"] == 1).all()
    assert (med["q_len"] == 4).all() and (med["phase"] == "medusa").all() and (med["candidates"] == 4).all()
    assert (df["keys"] == df["kv_len"] + df["q_len"]).all()
    assert (df["heads"] == 4).all() and (df["kv_heads"] == 2).all() and (df["head_dim"] == 16).all()


def test_microbench_true_llama33b_shapes():
    dims = model_dims("llama-33b")
    buffers = tree_buffers(build_tree(load_acceptance_table(), 16))
    q, k, v, mask = attention_inputs(dims, 1, 128, 16, torch.float32, "cpu", buffers)
    assert q.shape == (1, 52, 16, 128) and k.shape == v.shape == (1, 52, 144, 128)
    assert mask.shape == (1, 1, 16, 144)
    df = run_microbench("llama-33b", ["ar", "medusa-16"], [1], [128], reps=2, warmup=1, progress=False)
    assert len(df) == 6 and (df["time_s_median"] > 0).all()
    assert (df["heads"] == 52).all() and (df["head_dim"] == 128).all() and (df["model"] == "llama-33b").all()


@pytest.mark.parametrize(
    "kwargs,key",
    [
        (dict(modes=["nope"]), "modes"),
        (dict(modes=[]), "modes"),
        (dict(dtype="float64"), "dtype"),
    ],
)
def test_microbench_validation(kwargs, key):
    args = dict(model_source="tiny", modes=["ar"], batches=[1], kv_lens=[8], progress=False)
    args.update(kwargs)
    with pytest.raises(ConfigError, match=rf"^{key}"):
        run_microbench(**args)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_microbench_cuda_llama33b():
    df = run_microbench("llama-33b", ["ar", "medusa-64"], [1, 8], [512, 2048], device="cuda", reps=10, warmup=3,
                        progress=False)
    assert (df["status"] == "ok").all() and (df["time_s_median"] > 0).all()
    assert df["dtype"].iloc[0] == "float16"
    # more keys -> more time for qk (memory-bound regime)
    qk = df[(df["op"] == "qk") & (df["mode"] == "ar") & (df["batch"] == 8)].set_index("kv_len")["time_s_median"]
    assert qk[2048] > qk[512]
