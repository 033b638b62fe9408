"""Every figure's CSV is exactly what is drawn: compare artists' data with the points table."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection

from medusa_roofline.analytic.hardware import Hardware
from medusa_roofline.analytic.predict import Calibration, datasheet_calibration
from medusa_roofline.analytic.table import analytic_table
from medusa_roofline.decoding.tree import Tree
from medusa_roofline.models.source import ModelDims
from medusa_roofline.results import figures_analytic, render, roofline
from medusa_roofline.results import figures_measured as figures
from medusa_roofline.results.metrics import compute_metrics
from medusa_roofline.results.roofline import POINT_COLUMNS
from medusa_roofline.results.speedup import analytic_speedup

TINY = ModelDims(hidden=64, heads=4, kv_heads=2, head_dim=16, intermediate=128, layers=2, vocab=256, max_positions=4096)
A100 = Hardware("a100-80gb-pcie", "A100 80GB PCIe", 1.935e12, 312e12, "datasheet")
CEILINGS = {"device": "cpu", "device_name": "Test CPU", "bandwidth_bytes_per_s": 3e10, "peak_flops_per_s": 1.5e11,
            "bandwidth_kind": "read", "matmul": {"float32": {"median": 1.5e11}}, "per_launch_s": 2e-6}
LAYER = ["q_proj", "k_proj", "v_proj", "o_proj", "qk", "softmax", "pv", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def table():
    return analytic_table("tiny", TINY, A100, "float16", [16, 32], [1, 2, 4], [128, 256, 512])


@pytest.fixture(scope="module")
def metrics():
    rows = []
    for mode, phase, q in (("ar", "ar", 1), ("medusa-16", "medusa", 16), ("medusa-32", "medusa", 32)):
        ops = LAYER + ["lm_head"] + (["medusa_heads"] if phase == "medusa" else []) + ["step"]
        for bench in ("sweep", "microbench"):
            for b in (1, 4):
                for s in (64, 128):
                    for op in ops if bench == "sweep" else ["qk", "softmax", "pv"]:
                        rows.append({
                            "bench": bench, "model": "tiny", "device": "cpu", "device_name": "Test CPU",
                            "mode": mode, "phase": phase, "op": op, "candidates": q, "batch": b, "kv_len": s,
                            "q_len": q, "keys": s + q, "layers": 2 if bench == "sweep" else 0, "dtype": "float32",
                            "time_s_median": 1e-5 * (1 + len(rows) % 11) * b * q, "status": "ok",
                            "torch": "2.x", "transformers": "5.x", "cuda": "", "git_commit": "0123456789abcdef",
                        })
    return compute_metrics(pd.DataFrame(rows), {"tiny": TINY}, CEILINGS, None)


def scatter_data(ax) -> dict[str, np.ndarray]:
    return {c.get_label(): np.asarray(c.get_offsets()) for c in ax.collections
            if isinstance(c, PathCollection) and not c.get_label().startswith("_")
            and c.get_label() != figures.LAUNCH_LABEL}


def test_all_ops_fused_says_so_in_its_series(table):
    fused = analytic_table("tiny", TINY, A100, "float16", [16], [1, 2], [128, 256], attention="fused")
    fig, points = figures_analytic.all_ops(fused, A100, "t", attention="fused")
    assert {"qk/pv fused init", "qk/pv fused ar", "qkv mlp ar"} <= set(points["series"])
    assert_scatter_matches(fig, points, "all_ops_fused")
    plt.close(fig)


def assert_scatter_matches(fig, points, kind):
    x, y = render.KINDS[kind].x, render.KINDS[kind].y
    drawn = scatter_data(fig.axes[0])
    assert set(drawn) == set(points["series"])
    for name, xy in drawn.items():
        pts = points[points["series"] == name]
        np.testing.assert_allclose(xy, pts[[x, y]].to_numpy(float), rtol=1e-12)
    assert sum(len(v) for v in drawn.values()) == len(points)
    if "launch_bound" in points.columns:  # launch-bound points, and only those, wear a ring
        rings = [c for c in fig.axes[0].collections if c.get_label() == figures.LAUNCH_LABEL]
        flagged = points.loc[points["launch_bound"], [x, y]].to_numpy(float)
        assert len(rings) == (1 if len(flagged) else 0)
        if rings:
            np.testing.assert_allclose(np.asarray(rings[0].get_offsets()), flagged, rtol=1e-12)


def assert_common_columns(points, source):
    assert {"series", "source", "device", "provenance"} <= set(points.columns)
    assert (points["source"] == source).all()
    assert points["provenance"].astype(bool).all()


def test_all_ops(table, tmp_path):
    fig, points = figures_analytic.all_ops(table, A100, "Tiny Llama, A100 80GB PCIe")
    assert list(dict.fromkeys(points["series"])) == [
        "qkv mlp init", "qkv mlp ar", "up/gate/down init", "up/gate/down ar", "qk/pv init", "qk/pv ar"]
    assert list(points.columns) == POINT_COLUMNS
    assert set(points["op"]) == {"q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "down_proj", "qk", "pv"}
    assert len(points) == (3 + 3 + 2) * 2 * 3 * 3  # ops x (init, ar) x batch x kv_len
    assert_common_columns(points, "analytic")
    assert_scatter_matches(fig, points, "all_ops")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "Increase bs" in texts and "Increase seq_len" in texts
    paths = roofline.save_figure(fig, points, tmp_path / "all_ops", ["png", "svg"], 60)
    assert [p.rsplit(".", 1)[1] for p in paths] == ["png", "svg", "csv"]
    back = pd.read_csv(tmp_path / "all_ops.csv")
    np.testing.assert_allclose(back[["oi", "flops_per_s"]], points[["oi", "flops_per_s"]], rtol=1e-5)


def test_mlp_spec(table):
    fig, points = figures_analytic.mlp_spec(table, A100, "t")
    assert list(dict.fromkeys(points["series"])) == [  # named as on the qk/pv chart (the paper: "spec: 16")
        "up/gate/down ar", "up/gate/down Medusa (# cand.: 16)", "up/gate/down Medusa (# cand.: 32)"]
    assert set(points["op"]) == {"gate_proj", "up_proj", "down_proj"}
    assert_common_columns(points, "analytic")
    assert_scatter_matches(fig, points, "mlp_spec")
    plt.close(fig)


@pytest.mark.parametrize("datasheet", [None, A100])
def test_qkpv_medusa_measured(metrics, datasheet):
    fig, points = figures.qkpv_medusa_measured(metrics, CEILINGS, datasheet, "Tiny Llama, Test CPU (measured)")
    assert set(points["bench"]) == {"microbench"}  # micro-benchmark rows preferred when present
    assert set(points["op"]) == {"qk", "pv"}
    assert set(points["series"]) == {"qk/pv ar", "qk/pv Medusa (# cand.: 16)", "qk/pv Medusa (# cand.: 32)"}
    assert_common_columns(points, "measured")
    assert (points["device"] == "cpu").all() and points["provenance"].str.contains("torch 2.x").all()
    sel = metrics[(metrics["bench"] == "microbench") & metrics["op"].isin(["qk", "pv"])]
    assert len(points) == len(sel)
    assert_scatter_matches(fig, points, "qkpv_medusa_measured")
    labels = {ln.get_label(): ln.get_linestyle() for ln in fig.axes[0].lines}
    assert labels["measured 30GB/s"] == ":" and labels["measured 150 GFLOP/s"] == ":"
    assert any(lbl.startswith("measured ridge 5") for lbl in labels)
    assert ("1,935GB/s" in labels) == (datasheet is not None)
    if datasheet is not None:
        assert labels["1,935GB/s"] == "--"
    plt.close(fig)


def test_measured_vs_analytic(metrics):
    fig, points = figures.measured_vs_analytic(metrics, "t")
    assert len(points) == len(metrics)
    assert {"step", "qk (microbench)", "qk"} <= set(points["series"])
    np.testing.assert_allclose(points["frac_of_bound"], points["flops_per_s"] / points["bound_flops_per_s"])
    assert_common_columns(points, "measured")
    assert_scatter_matches(fig, points, "measured_vs_analytic")
    plt.close(fig)


def line_data(ax) -> dict[str, np.ndarray]:
    return {ln.get_label(): np.column_stack([ln.get_xdata(), ln.get_ydata()]) for ln in ax.lines
            if not ln.get_label().startswith("_")}


def test_speedup_figure():
    table = np.array([[0.6, 0.2], [0.4, 0.1]])
    pts = analytic_speedup("tiny", TINY, table, datasheet_calibration(A100), "float16", 4, [128, 512],
                           range(1, 8), hardware=A100.key)
    fig, points = figures.speedup_figure(pts.sample(frac=1, random_state=0), "Tiny Llama, A100", "analytic")
    drawn = line_data(fig.axes[0])
    assert drawn.pop("no speedup (1.0)")[:, 1].tolist() == [1.0, 1.0]  # the 1.0 line, named in the legend
    assert set(drawn) == {"seq_len 128", "seq_len 512"}
    for name, xy in drawn.items():
        np.testing.assert_allclose(xy, points[points["series"] == name][["candidates", "speedup"]].to_numpy(float))
    assert list(points["candidates"][:7]) == list(range(1, 8))  # sorted as drawn
    assert_common_columns(points, "analytic")
    assert fig.axes[0].get_title() == "analytic"
    plt.close(fig)


def test_speedup_figure_mixed_sources_dashes_the_analytic_lines():
    table = np.array([[0.6]])
    analytic = analytic_speedup("tiny", TINY, table, Calibration("measured", 1e12, 1e11, 1e-6, "test"), "float32", 1,
                                [64], [1, 2])
    analytic["series"] += " (analytic, measured roofs)"
    measured = analytic.assign(source="measured", series="seq_len 64", speedup=[0.9, 1.1])
    fig, points = figures.speedup_figure(pd.concat([analytic, measured]), "t", "s")
    styles = {ln.get_label(): (ln.get_linestyle(), ln.get_markevery()) for ln in fig.axes[0].lines
              if not ln.get_label().startswith("_") and ln.get_label() != "no speedup (1.0)"}
    assert styles == {"seq_len 64": ("-", 1), "seq_len 64 (analytic, measured roofs)": ("--", (0, 1))}
    assert list(points["source"]) == ["measured", "measured", "analytic", "analytic"]
    plt.close(fig)


def test_prediction_figure_draws_exactly_its_points(metrics):
    from medusa_roofline.results.prediction import prediction_table

    table = prediction_table(metrics, TINY, [Calibration("measured", 1.5e11, 3e10, 2e-6, "test")], num_heads=4)
    fig, points = figures.prediction_figure(table, "t")
    drawn = np.concatenate([np.asarray(c.get_offsets()) for c in fig.axes[0].collections
                            if isinstance(c, PathCollection) and len(c.get_offsets())])
    want = points[["predicted_s", "time_s_median"]].to_numpy(float)
    np.testing.assert_allclose(np.sort(drawn, axis=0), np.sort(want, axis=0))
    assert set(points["series"]) == set(points["op_family"]) and len(points) == len(table)
    plt.close(fig)


def test_best_tree_figure_draws_exactly_its_points():
    from medusa_roofline.results.best_tree import best_tree_table

    tables = [best_tree_table("tiny", TINY, np.array([[0.6, 0.2], [0.4, 0.1]]), datasheet_calibration(hw), "float16",
                              [1, 2, 4], [128, 512], 7, Tree("t", ((0,), (1,))), hw.key, hw.display_name)
              for hw in (A100, Hardware("a40", "A40", 6.96e11, 1.497e14, "datasheet"))]
    fig, points = figures_analytic.best_tree_figure(pd.concat(tables), "Tiny Llama")
    assert list(dict.fromkeys(points["panel"])) == ["A100 80GB PCIe", "A40"]  # one panel per GPU, in table order
    for ax, panel in zip(fig.axes, ["A100 80GB PCIe", "A40"]):
        lines = {ln.get_label(): np.column_stack([ln.get_xdata(), ln.get_ydata()]) for ln in ax.lines
                 if ln.get_label().startswith("kv_len")}
        pts = points[points["panel"] == panel]
        assert set(lines) == set(pts["series"])
        for name, xy in lines.items():
            np.testing.assert_allclose(xy, pts[pts["series"] == name][["batch", "best_candidates"]].to_numpy(float))
    plt.close(fig)


def test_speedup_figure_real_generation_and_error_bars():
    table = np.array([[0.6]])
    base = analytic_speedup("tiny", TINY, table, Calibration("measured", 1e12, 1e11, 0.0, "test"), "float32", 1,
                            [64], [1, 2]).assign(source="measured")
    rows = pd.concat([base.assign(series="seq_len 64 (measured table)", acceptance="measured table"),
                      base.assign(series="seq_len 64 (real generation)", acceptance="real generation")])
    rows = rows.assign(speedup_p10=rows["speedup"] * 0.8, speedup_p90=rows["speedup"] * 1.1)
    fig, points = figures.speedup_figure(rows, "t", "s")
    ax = fig.axes[0]
    styles = {ln.get_label(): (ln.get_linestyle(), ln.get_marker()) for ln in ax.lines
              if not ln.get_label().startswith("_")}
    assert styles == {"seq_len 64 (measured table)": ("-", "s"), "seq_len 64 (real generation)": (":", "o"),
                      "no speedup (1.0)": ("-.", "None")}
    bars = [c for c in ax.containers if type(c).__name__ == "ErrorbarContainer"]
    assert len(bars) == 2
    segments = np.concatenate([np.asarray(b.lines[2][0].get_segments()) for b in bars])
    want = points[["speedup_p10", "speedup_p90"]].to_numpy()
    np.testing.assert_allclose(np.sort(segments[:, :, 1], axis=1), want)
    plt.close(fig)


def test_speedup_measured_render_with_real_generation(metrics, tmp_path):
    import json

    from medusa_roofline.core.paths import REPO_ROOT

    metrics.to_csv(tmp_path / "metrics.csv", index=False)
    (tmp_path / "ceilings.json").write_text(json.dumps(CEILINGS))
    pd.DataFrame({"candidates": [16], "tokens_per_step": [2.5]}).to_csv(tmp_path / "generation.csv", index=False)
    inputs = {"metrics": str(tmp_path / "metrics.csv"), "ceilings": str(tmp_path / "ceilings.json"),
              "hardware_table": str(REPO_ROOT / "config" / "hardware.yaml"),
              "acceptance": str(REPO_ROOT / "config" / "acceptance" / "default.csv"),
              "model_config": str(REPO_ROOT / "config" / "models" / "tiny" / "config.json"),
              "generation": str(tmp_path / "generation.csv")}
    params = {"model": "tiny", "model_display": "Tiny", "batch": 1, "medusa_heads": "tree", "plot": {"width": 6, "height": 4}}
    fig, points = render.render("speedup_measured", inputs, params)
    measured = points[points["source"] == "measured"]
    assert set(measured["acceptance"]) == {"shipped table", "real generation"}
    real = measured[measured["acceptance"] == "real generation"]
    assert set(real["candidates"]) == {16} and (real["expected_tokens"] == 2.5).all()
    analytic = points.loc[points["source"] == "analytic", "series"]
    assert analytic.str.endswith("(analytic, measured roofs, shipped table)").all()
    assert "measured step latency x shipped table and real generation" in fig.axes[0].get_title()
    measured_table = tmp_path / "acceptance.csv"
    pd.read_csv(inputs["acceptance"]).assign(count=1, total=2).to_csv(measured_table, index=False)
    _, again = render.render("speedup_measured", dict(inputs, acceptance=str(measured_table), generation=""), params)
    assert set(again.loc[again["source"] == "measured", "acceptance"]) == {"measured table"}
    plt.close(fig)
