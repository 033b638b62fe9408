"""Prediction error by hand: per-op rows, steps and the remainder against the predictor, the summary, the figure."""

from __future__ import annotations

import pandas as pd
import pytest

from medusa_roofline.analytic.costmodel import measured_ops
from medusa_roofline.analytic.predict import Calibration
from medusa_roofline.core.errors import ConfigError
from medusa_roofline.models.source import ModelDims
from medusa_roofline.results.prediction import COLUMNS, SUMMARY_COLUMNS, prediction_table, summarise

SMALL = ModelDims(hidden=4, heads=2, kv_heads=1, head_dim=2, intermediate=8, layers=3, vocab=10, max_positions=64)
CAL = Calibration("measured", peak_flops=1e3, bandwidth=1e3, per_launch_s=0.1, source="by hand")


def row(**kw) -> dict:
    base = {"bench": "sweep", "model": "small", "device": "cpu", "device_name": "Test CPU", "mode": "medusa-3",
            "phase": "medusa", "op": "q_proj", "scope": "layer", "calls": 3, "candidates": 3, "batch": 2, "kv_len": 7,
            "q_len": 3, "keys": 10, "heads_tokens": 3, "layers": 3, "dtype": "float16", "attention_backend": "eager",
            "status": "ok", "sanity": "ok", "time_s_median": 0.24, "time_s_p10": 0.2, "time_s_p90": 0.3}
    base.update(kw)
    return base


def test_per_op_row_by_hand():
    """q_proj, b·n = 6 tokens of 4 -> 4, float16: 192 FLOPs / 1e3 = 0.192 s beats 128 B / 1e3 and the 0.1 s floor."""
    out = prediction_table(pd.DataFrame([row()]), SMALL, [CAL], num_heads=2)
    assert list(out.columns) == COLUMNS and len(out) == 1
    r = out.iloc[0]
    assert (r["flops"], r["bytes"], r["launches"]) == (192, 128, 1)
    assert r["predicted_s"] == pytest.approx(0.192) and r["limiter"] == "compute"
    assert r["rel_error"] == pytest.approx(0.192 / 0.24 - 1) and r["abs_rel_error"] == pytest.approx(0.2)
    assert r["within_band"] and not r["launch_limited"] and r["op_family"] == "linear"
    assert (r["time_s_p10"], r["time_s_p90"], r["calibration"]) == (0.2, 0.3, "measured")


def test_every_calibration_gets_a_row():
    other = Calibration("datasheet", 1e6, 1e6, 1.0, "by hand")
    out = prediction_table(pd.DataFrame([row(op="input_norm")]), SMALL, [CAL, other], num_heads=2)
    assert out["calibration"].tolist() == ["measured", "datasheet"]
    # RMSNorm of 6 rows x 4 in float16: 8 launches (6 + 2 casts) x 1 s beat 96 FLOPs and 104 B at 1e6/s
    assert out.iloc[1]["predicted_s"] == pytest.approx(8.0) and bool(out.iloc[1]["launch_limited"])
    assert out.iloc[1]["op_family"] == "norm"


def test_step_prediction_is_its_parts():
    """The step's prediction = the per-op rows' (x calls) + what the remainder stands for."""
    ops = measured_ops("medusa")
    assert ("remainder", "model") in ops
    rows = [row(op=op, scope=scope, calls=3 if scope == "layer" else 1) for op, scope in ops]
    out = prediction_table(pd.DataFrame(rows), SMALL, [CAL], num_heads=2).set_index("op")
    parts = sum(out.loc[op, "predicted_s"] * out.loc[op, "calls"] for op, _ in ops if op != "step")
    assert out.loc["step", "predicted_s"] == pytest.approx(parts)
    assert out.loc["step", "op_family"] == "step"


def test_remainder_by_hand():
    """With a huge floor every op costs its launches: rotary 10, KV write 2, residual adds 1 + 1, SiLU·up 2 =
    16 launches per layer x 3 layers, nothing else (the hooked ops have rows of their own)."""
    floor = Calibration("measured", 1e30, 1e30, 1.0, "floor")
    out = prediction_table(pd.DataFrame([row(op="remainder", scope="model", calls=1)]), SMALL, [floor], num_heads=2)
    assert out.iloc[0]["predicted_s"] == pytest.approx(48.0) and out.iloc[0]["launches"] == 48


def test_heads_tokens_set_the_heads_prediction():
    tree = prediction_table(pd.DataFrame([row(op="medusa_heads", heads_tokens=3)]), SMALL, [CAL], num_heads=2)
    one = prediction_table(pd.DataFrame([row(op="medusa_heads", heads_tokens=1)]), SMALL, [CAL], num_heads=2)
    # 2 heads x (4x4 residual + 4x10 projection): 2 x 2 x b·t x 56 FLOPs -> 1344 (t = 3) and 448 (t = 1)
    assert (tree.iloc[0]["flops"], one.iloc[0]["flops"]) == (1344, 448)


def test_unknown_ops_and_no_calibration_are_errors():
    with pytest.raises(ConfigError, match="no prediction for op"):
        prediction_table(pd.DataFrame([row(op="mystery")]), SMALL, [CAL], num_heads=2)
    with pytest.raises(ConfigError, match="no calibration"):
        prediction_table(pd.DataFrame([row()]), SMALL, [], num_heads=2)


def test_summary_by_hand():
    rows = [row(time_s_median=0.192 / 0.8), row(kv_len=8, time_s_median=0.192 / 1.5), row(op="step", scope="model")]
    out = summarise(prediction_table(pd.DataFrame(rows), SMALL, [CAL], num_heads=2))
    assert list(out.columns) == SUMMARY_COLUMNS
    assert out["op_family"].tolist() == ["linear", "step"]
    linear = out.iloc[0]
    assert linear["rows"] == 2 and linear["within_band_rows"] == 1
    assert linear["median_abs_rel_error"] == pytest.approx((0.2 + 0.5) / 2)
    assert linear["p90_abs_rel_error"] == pytest.approx(0.2 + 0.9 * 0.3)
    assert linear["median_rel_error"] == pytest.approx((-0.2 + 0.5) / 2)


def test_prediction_figure_draws_every_row(tmp_path):
    from medusa_roofline.results.figures_measured import prediction_figure

    ops = measured_ops("medusa")
    rows = [row(op=op, scope=scope, calls=3 if scope == "layer" else 1) for op, scope in ops]
    table = prediction_table(pd.DataFrame(rows), SMALL, [CAL, Calibration("datasheet", 1e9, 1e9, 1e-6, "x")], 2)
    fig, points = prediction_figure(table, "title")
    assert len(points) == len(table) and set(points["series"]) == set(table["op_family"])
    assert len(fig.axes) == 2  # one panel per calibration
