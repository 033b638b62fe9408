"""Speedup arithmetic on hand-worked cases: expected tokens, roofline step latency, measured ratio."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medusa_roofline.analytic.costmodel import step_shape
from medusa_roofline.analytic.predict import Calibration, datasheet_calibration, step_time
from medusa_roofline.decoding.tree import DEFAULT_ACCEPTANCE, expected_accept_length
from medusa_roofline.models.source import ModelDims
from medusa_roofline.results.speedup import (COLUMNS, MEASURED_COLUMNS, acceptance_source, analytic_speedup,
                                             measured_speedup, tree_paths)

ONES = ModelDims(hidden=1, heads=1, kv_heads=1, head_dim=1, intermediate=1, layers=1, vocab=1, max_positions=0)


def test_expected_tokens_by_hand():
    table = np.array([[0.5, 0.2], [0.4, 0.1]])
    # 1 (root) + 0.5 + 0.2 + 0.5*0.4 + 0.5*0.1
    assert expected_accept_length(table, [(0,), (1,), (0, 0), (0, 1)]) == pytest.approx(1.95)
    assert expected_accept_length(table, []) == 1.0
    assert tree_paths(table, 1) == []
    assert tree_paths(table, 3) == [(0,), (1,)]  # 0.5 and 0.2 beat 0.5*0.4 = 0.2 on the tie (shorter first)


FREE = Calibration("hand", peak_flops=1.0, bandwidth=1.0, per_launch_s=0.0, source="by hand")
"""1 FLOP/s, 1 B/s, no launch cost: with every dimension 1 and 1-byte elements, each op costs max(FLOPs, bytes) s."""


def test_step_time_by_hand():
    """ONES, e = 1: the linears 8 x max(2n, 1 + 2n); norms 3 x 4n; residual adds 2 x 3n; silu_mul 5n;
    rotary 6n; kv_write 4n; embedding 2n -> 8 + 51 n, plus qk and pv max(2ns, n + s + ns) each and softmax 5ns."""
    # AR on a 1-token cache: n = 1, s = 2 -> 59 + 5 + 5 + 10 = 79
    shape = step_shape("ar", 1, 1)
    assert (shape.q_len, shape.keys, shape.heads_tokens) == (1, 2, 0)
    assert step_time(ONES, 1, shape.q_len, shape.keys, 1, FREE) == 79
    # tree of 2: n = 2, s = 3 -> 110 + 12 + 12 + 30 = 164; one head (linear + vocab projection) on t tokens 2 (1 + 2t)
    assert step_time(ONES, 1, 2, 3, 1, FREE) == 164
    assert step_time(ONES, 1, 2, 3, 1, FREE, num_heads=1, heads_tokens=2) == 174
    assert step_time(ONES, 1, 2, 3, 1, FREE, num_heads=1, heads_tokens=1) == 170
    # tree of 3: n = 3, s = 4 -> 161 + 24 + 24 + 60 = 269; heads on 3 tokens 14, on 1 token 6
    assert step_time(ONES, 1, 3, 4, 1, FREE, num_heads=1, heads_tokens=3) == 283
    assert step_time(ONES, 1, 3, 4, 1, FREE, num_heads=1, heads_tokens=1) == 275


@pytest.mark.parametrize("heads,medusa_times", [("tree", [85, 174, 283]), ("accepted", [85, 170, 275])])
def test_analytic_speedup_by_hand(heads, medusa_times):
    """The step switch's two settings on the hand-worked tiny config (float16 at 2 B/s = 1-byte elements at 1 B/s)."""
    table = np.array([[0.5, 0.3]])  # one Medusa head, top-2
    cal = Calibration("hand", 1.0, 2.0, 0.0, "by hand")
    df = analytic_speedup("ones", ONES, table, cal, dtype="float16", batch=1, kv_lens=[1], candidates=[3, 1, 2],
                          hardware="hw", medusa_heads=heads)
    assert list(df.columns) == COLUMNS
    assert df["candidates"].tolist() == [1, 2, 3]
    assert df["expected_tokens"].tolist() == pytest.approx([1.0, 1.5, 1.8])
    assert df["step_time_ar_s"].tolist() == pytest.approx([79, 79, 79])
    assert df["step_time_medusa_s"].tolist() == pytest.approx(medusa_times)
    assert df["speedup"].tolist() == pytest.approx([e * 79 / t for e, t in zip([1.0, 1.5, 1.8], medusa_times)])
    assert set(df["source"]) == {"analytic"} and set(df["series"]) == {"seq_len 1"}


def test_paper_case_peaks_then_falls():
    """Llama 7B, A100 80GB PCIe, batch 4: a speedup > 1.5 at moderate trees that large trees lose."""
    from medusa_roofline.analytic.hardware import load_table
    from medusa_roofline.decoding.tree import load_acceptance_table
    from medusa_roofline.models.source import model_dims

    repo = Path(__file__).resolve().parent.parent
    hw = load_table(repo / "config" / "hardware.yaml")["a100-80gb-pcie"]
    df = analytic_speedup("llama-7b", model_dims("llama-7b"), load_acceptance_table(), datasheet_calibration(hw),
                          "float16", 4, [128, 8192], [1, 16, 32, 64, 112])
    for _, grp in df.groupby("kv_len"):
        s = grp.set_index("candidates")["speedup"]
        assert s[1] < 1 and s[16] > 1.5 and s[112] < s[32]


def step_rows(layers=1):
    rows = []
    for mode, phase, q, times in (("ar", "ar", 1, {"step": 10e-3, "lm_head": 2e-3}),
                                  ("medusa-2", "medusa", 2, {"step": 12e-3, "lm_head": 3e-3, "medusa_heads": 1e-3})):
        for op, t in times.items():
            rows.append({"bench": "sweep", "model": "m", "device": "cpu", "device_name": "cpu", "mode": mode,
                         "phase": phase, "op": op, "candidates": q, "batch": 4, "kv_len": 64, "q_len": q,
                         "layers": layers, "time_s_median": t, "status": "ok"})
    return pd.DataFrame(rows)


def test_measured_speedup_by_hand():
    table = np.array([[0.5]])
    df = measured_speedup(step_rows(), table)
    assert len(df) == 1
    row = df.iloc[0]
    assert (row["step_time_ar_s"], row["step_time_medusa_s"]) == (10e-3, 12e-3)
    assert row["speedup"] == pytest.approx(1.5 / 1.2) and row["source"] == "measured"
    # 1 of 2 layers ran: ar (10 - 2) x 2 + 2 = 18 ms; medusa (12 - 3 - 1) x 2 + 4 = 20 ms
    scaled = measured_speedup(step_rows(), table, model_layers=2).iloc[0]
    assert (scaled["step_time_ar_s"], scaled["step_time_medusa_s"]) == pytest.approx((18e-3, 20e-3))
    assert scaled["speedup"] == pytest.approx(1.5 * 18 / 20)
    assert "scaled to 2" in scaled["provenance"]
    assert measured_speedup(step_rows(), table, batch=8).empty


def test_measured_speedup_skips_points_without_an_ok_ar_step():
    rows = step_rows()
    rows.loc[(rows["mode"] == "ar") & (rows["op"] == "step"), "status"] = "oom"
    assert measured_speedup(rows, np.array([[0.5]])).empty


def test_measured_speedup_says_its_acceptance_source_and_adds_real_generation():
    generation = pd.DataFrame({"candidates": [2, 16], "tokens_per_step": [1.3, 3.0]})
    df = measured_speedup(step_rows(), np.array([[0.5]]), acceptance="measured table", generation=generation)
    assert list(df.columns) == MEASURED_COLUMNS
    assert list(df["acceptance"]) == ["measured table", "real generation"]  # no medusa-16 step: no row for it
    assert list(df["series"]) == ["seq_len 64 (measured step latency x measured table)",
                                  "seq_len 64 (measured step latency x real generation)"]
    assert list(df["expected_tokens"]) == [1.5, 1.3]
    assert df["speedup"].tolist() == pytest.approx([1.5 / 1.2, 1.3 / 1.2])
    assert "acceptance: real generation" in df["provenance"].iloc[1]
    # without p10/p90 columns the band collapses onto the median
    assert df["speedup_p10"].tolist() == df["speedup_p90"].tolist() == df["speedup"].tolist()
    with pytest.raises(ValueError, match="must be one of"):
        measured_speedup(step_rows(), np.array([[0.5]]), acceptance="real generation")


def test_measured_speedup_band_from_step_time_quantiles():
    rows = step_rows().assign(time_s_p10=lambda d: d["time_s_median"] * 0.9,
                              time_s_p90=lambda d: d["time_s_median"] * 1.2)
    row = measured_speedup(rows, np.array([[0.5]])).iloc[0]
    # low end: fast ar (p10) over slow medusa (p90); high end: the reverse
    assert row["speedup_p10"] == pytest.approx(1.5 * 9e-3 / 14.4e-3)
    assert row["speedup_p90"] == pytest.approx(1.5 * 12e-3 / 10.8e-3)
    assert row["speedup_p10"] < row["speedup"] < row["speedup_p90"]


def test_acceptance_source_from_the_file(tmp_path):
    shipped = DEFAULT_ACCEPTANCE.read_bytes()
    assert acceptance_source(DEFAULT_ACCEPTANCE) == "shipped table"
    (tmp_path / "copy.csv").write_bytes(shipped)
    assert acceptance_source(tmp_path / "copy.csv") == "shipped table"  # by content (an unpacked archive)
    (tmp_path / "edited.csv").write_bytes(shipped.replace(b"0.560388", b"0.6"))
    assert acceptance_source(tmp_path / "edited.csv") == "given table"
    (tmp_path / "measured.csv").write_text("head,rank,accuracy,count,total,ci95_low,ci95_high\n0,0,0.5,5,10,0.2,0.8\n")
    assert acceptance_source(tmp_path / "measured.csv") == "measured table"


def test_two_runs_agree_when_their_bands_overlap():
    from medusa_roofline.results.speedup import bands_agree

    rows = step_rows()
    rows["time_s_p10"], rows["time_s_p90"] = rows["time_s_median"] * 0.95, rows["time_s_median"] * 1.05
    first = measured_speedup(rows, np.array([[0.5]]))
    slower = rows.copy()
    slower.loc[slower["phase"] == "medusa", ["time_s_median", "time_s_p10", "time_s_p90"]] *= 1.02
    assert bands_agree(first, measured_speedup(slower, np.array([[0.5]])))["agree"].all()
    slower.loc[slower["phase"] == "medusa", ["time_s_median", "time_s_p10", "time_s_p90"]] *= 1.5
    assert not bands_agree(first, measured_speedup(slower, np.array([[0.5]])))["agree"].any()
