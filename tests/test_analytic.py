"""The analytic table: exact columns, row count, and the paper's qk/pv OI ranges."""

import pandas as pd
import pytest

from medusa_roofline.analytic.costmodel import ALL_OPS
from medusa_roofline.analytic.hardware import load_table
from medusa_roofline.analytic.table import COLUMNS, analytic_table
from medusa_roofline.core.paths import REPO_ROOT
from medusa_roofline.models.source import model_dims

HW = load_table(REPO_ROOT / "config" / "hardware.yaml")
PAPER_KV = [128, 256, 512, 1024, 2048, 4096, 8192]


@pytest.fixture(scope="module")
def llama33_a100():
    return analytic_table("llama-33b", model_dims("llama-33b"), HW["a100-80gb-pcie"], "float16",
                          [16, 32, 48, 64, 80, 96, 112], [1, 2, 4, 8, 16], PAPER_KV)


def test_columns_and_row_count():
    df = analytic_table("tiny", model_dims("tiny"), HW["a40"], "float16", [16, 32], [1, 2, 4], [128, 256])
    assert list(df.columns) == COLUMNS
    phases_per_kv = 1 + 1 + 2  # init, ar, two Medusa sizes
    assert len(df) == len(ALL_OPS) * 3 * 2 * phases_per_kv
    assert not df.duplicated(["phase", "op", "candidates", "batch", "kv_len"]).any()
    assert set(df["bound"]) <= {"memory", "compute"}
    assert (df["oi"] == df["flops"] / df["bytes"]).all()


def test_candidates_column_semantics():
    df = analytic_table("tiny", model_dims("tiny"), HW["a40"], "float16", [16], [1], [256])
    assert set(df[df.phase == "ar"]["candidates"]) == {1}
    assert set(df[df.phase == "init"]["candidates"]) == {256}
    assert set(df[df.phase == "medusa"]["candidates"]) == {16}


def test_paper_qkpv_ranges(llama33_a100):
    qkpv = llama33_a100[llama33_a100.op.isin(["qk", "pv"])]
    ar = qkpv[qkpv.phase == "ar"]["oi"]
    assert 0.98 <= ar.min() and ar.max() <= 0.993
    m = qkpv[qkpv.phase == "medusa"].groupby("candidates")["oi"]
    assert m.min()[16] == pytest.approx(12.8, abs=0.01) and m.max()[16] == pytest.approx(14.2, abs=0.01)
    assert m.min()[112] == pytest.approx(40.7, abs=0.05) and m.max()[112] == pytest.approx(59.3, abs=0.05)
    # memory-bound everywhere, below the ridge at ~161 FLOP/B
    assert (qkpv[qkpv.phase != "init"]["bound"] == "memory").all()


def test_attention_oi_identical_for_every_batch(llama33_a100):
    attention = llama33_a100[llama33_a100.op.isin(["qk", "softmax", "pv"])]
    spread = attention.groupby(["phase", "op", "candidates", "kv_len"])["oi"].agg(lambda s: s.max() - s.min())
    assert (spread == 0).all()


def test_roof_is_min_of_peak_and_bandwidth(llama33_a100):
    hw = HW["a100-80gb-pcie"]
    expected = (llama33_a100["oi"] * hw.bandwidth).clip(upper=hw.peak_flops)
    pd.testing.assert_series_equal(llama33_a100["roof_flops_per_s"], expected, check_names=False)


def test_linear_oi_grows_with_batch(llama33_a100):
    up = llama33_a100[(llama33_a100.op == "up_proj") & (llama33_a100.phase == "ar") & (llama33_a100.kv_len == 128)]
    assert up.sort_values("batch")["oi"].is_monotonic_increasing
