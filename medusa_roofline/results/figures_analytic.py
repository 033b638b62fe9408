"""The paper's analytic charts beyond qk/pv: all layer ops (init vs ar) and the MLP in decoding vs Medusa.

Each function returns ``(fig, points)``; ``points`` holds exactly what is drawn, one row per marker,
with its ``series`` (the legend label), ``source`` (``analytic``) and ``provenance``.
"""

from __future__ import annotations

import math

import pandas as pd
import seaborn as sns

from ..analytic.costmodel import MLP_OPS
from ..analytic.hardware import Hardware
from ..analytic.table import analytic_provenance
from . import roofline, style
from .roofline import POINT_COLUMNS

ALL_OPS_GROUPS = {
    "qkv mlp": ("q_proj", "k_proj", "v_proj"),
    "up/gate/down": ("gate_proj", "up_proj", "down_proj"),
    "qk/pv": ("qk", "pv"),
}
"""The paper's all-ops groups: "qkv mlp" are the q/k/v projection linears (o_proj is not drawn)."""
PAIRED = {"qkv mlp": (1, 0), "up/gate/down": (3, 2), "qk/pv": (5, 4)}  # (init, ar) in sns "Paired"


def all_ops_points(table: pd.DataFrame, provenance: str | None = None) -> pd.DataFrame:
    """Dots of the all-ops chart from an analytic table: the paper's six series, init and ar phases."""
    op_group = {op: g for g, ops in ALL_OPS_GROUPS.items() for op in ops}
    sel = table[table["op"].isin(op_group) & table["phase"].isin(["init", "ar"])].copy()
    sel["series"] = [f"{op_group[o]} {p}" for o, p in zip(sel["op"], sel["phase"])]
    order = {f"{g} {p}": i for i, (g, p) in enumerate((g, p) for g in ALL_OPS_GROUPS for p in ("init", "ar"))}
    sel = sel.assign(_s=sel["series"].map(order)).sort_values(["_s", "batch", "kv_len", "op"], kind="stable")
    return _analytic_point_frame(sel.drop(columns="_s"), provenance)


def _analytic_point_frame(sel: pd.DataFrame, provenance: str | None) -> pd.DataFrame:
    sel = sel.copy()
    sel["source"] = "analytic"
    sel["device"] = ""
    sel["flops_per_s"] = sel["roof_flops_per_s"]
    sel["provenance"] = analytic_provenance() if provenance is None else provenance
    return sel[POINT_COLUMNS].reset_index(drop=True)


def _arrow(ax, start, end, text, below: float = 0.45):
    """An arrow parallel to a series (shifted down by ``below`` in y, log scale), labelled at its middle."""
    (x0, y0), (x1, y1) = start, end
    ax.annotate("", xy=(x1, y1 * below), xytext=(x0, y0 * below),
                arrowprops={"arrowstyle": "->", "color": "0.2", "lw": 1.0}, zorder=4)
    xm, ym = math.sqrt(x0 * x1), math.sqrt(y0 * y1) * below
    ax.text(xm, ym * 0.75, text, ha="center", va="top", fontsize="x-small", color="0.2", zorder=4)


def all_ops(table: pd.DataFrame, hw: Hardware, title: str, size=(6.0, 4.2), marker_size: float = 14):
    """The paper's all-ops roofline (analytic); returns ``(fig, points)``."""
    points = all_ops_points(table)
    paired = sns.color_palette("Paired", 12)
    colors = {f"{g} {p}": paired[PAIRED[g][0 if p == "init" else 1]] for g in ALL_OPS_GROUPS for p in ("init", "ar")}
    markers = {name: ("o" if name.endswith("init") else "^") for name in colors}
    xlim, ylim = roofline.data_limits(points["oi"], points["flops_per_s"], [hw.peak_flops], [hw.ridge],
                             roofline.DEFAULT_XLIM, roofline.DEFAULT_YLIM)
    fig, ax = roofline.new_axes(size)
    style.log_axes(ax, xlim, ylim)
    roofline.draw_roofs(ax, hw, xlim)
    roofline.scatter_series(ax, points, colors, x="oi", y="flops_per_s", marker_size=marker_size, markers=markers)
    # "Increase bs": decoding MLP at the shortest context, smallest to largest batch.
    mlp = points[(points["series"] == "up/gate/down ar") & (points["op"] == "up_proj")]
    if mlp["batch"].nunique() > 1:
        mlp = mlp[mlp["kv_len"] == mlp["kv_len"].min()].sort_values("batch")
        _arrow(ax, mlp.iloc[0][["oi", "flops_per_s"]], mlp.iloc[-1][["oi", "flops_per_s"]], "Increase bs")
    # "Increase seq_len": prefill attention at the smallest batch, shortest to longest context.
    att = points[(points["series"] == "qk/pv init") & (points["op"] == "qk")]
    if att["kv_len"].nunique() > 1:
        att = att[att["batch"] == att["batch"].min()].sort_values("kv_len")
        _arrow(ax, att.iloc[0][["oi", "flops_per_s"]], att.iloc[-1][["oi", "flops_per_s"]], "Increase seq_len")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize="x-small")
    return fig, points


def mlp_spec_points(table: pd.DataFrame, provenance: str | None = None) -> pd.DataFrame:
    """up/gate/down in decoding (``ar``) and in Medusa verification, one series per tree size."""
    sel = table[table["op"].isin(MLP_OPS) & table["phase"].isin(["ar", "medusa"])].copy()
    sel["series"] = ["up/gate/down ar" if p == "ar" else f"up/gate/down spec: {c}"
                     for p, c in zip(sel["phase"], sel["candidates"])]
    sel = sel.assign(_p=sel["phase"].map({"ar": 0, "medusa": 1}))
    sel = sel.sort_values(["_p", "candidates", "batch", "kv_len", "op"], kind="stable").drop(columns="_p")
    return _analytic_point_frame(sel, provenance)


def mlp_spec(table: pd.DataFrame, hw: Hardware, title: str, size=(6.0, 4.2), marker_size: float = 18):
    """Decoding MLP vs Medusa's MLP at 16 … 112 candidates (analytic); returns ``(fig, points)``."""
    points = mlp_spec_points(table)
    xlim, ylim = roofline.data_limits(points["oi"], points["flops_per_s"], [hw.peak_flops], [hw.ridge],
                             roofline.DEFAULT_XLIM, roofline.DEFAULT_YLIM)
    fig, ax = roofline.new_axes(size)
    style.log_axes(ax, xlim, ylim)
    roofline.draw_roofs(ax, hw, xlim)
    roofline.scatter_series(ax, points, roofline.series_colors(points), roofline.series_order(points), marker_size=marker_size)
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize="x-small")
    return fig, points


# ----------------------------------------------------------------------------------- best tree


def best_tree_figure(table: pd.DataFrame, title: str, size=(6.0, 4.2)):
    """Best tree size against batch, one line per kv_len, one panel per GPU (hardware x calibration) in
    table order; the reference tree's size dashed. Returns ``(fig, points)`` (the table's rows as drawn)."""
    import matplotlib.pyplot as plt

    points = table.copy()
    points["panel"] = [name if cal == "datasheet" else f"{name} ({cal})"
                       for name, cal in zip(points["display_name"], points["calibration"])]
    points["series"] = [f"kv_len {s}" for s in points["kv_len"]]
    panels = list(dict.fromkeys(points["panel"]))
    cols = min(len(panels), 3) or 1
    rows = math.ceil(len(panels) / cols) or 1
    style.apply_theme()
    fig, axes = plt.subplots(rows, cols, figsize=(size[0] * cols / 2, size[1] * rows / 1.6), squeeze=False,
                             sharex=True, sharey=True)
    kv = sorted(points["kv_len"].unique())
    palette = style.sequential_palette(max(len(kv), 1))
    color = {s: palette[i] for i, s in enumerate(kv)}
    for ax, panel in zip(axes.flat, panels):
        pts = points[points["panel"] == panel]
        for s in kv:
            line = pts[pts["kv_len"] == s].sort_values("batch")
            if len(line):
                ax.plot(line["batch"], line["best_candidates"], "-o", ms=3, lw=1.2, color=color[s], label=f"kv_len {s}")
        if len(pts):
            ref, name = int(pts["reference_candidates"].iloc[0]), pts["reference_tree"].iloc[0]
            ax.axhline(ref, color="0.4", lw=0.8, ls="--", label=f"{name} ({ref} nodes)", zorder=0)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_title(panel, fontsize="small")
        ax.grid(True, which="both", lw=0.3)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("batch")
    for ax in axes[:, 0]:
        ax.set_ylabel("best # candidates")
    axes.flat[0].legend(loc="lower left", fontsize="xx-small")
    fig.suptitle(title, fontweight="bold", fontsize="medium")
    order = {p: i for i, p in enumerate(panels)}
    points = (points.assign(_p=points["panel"].map(order))
              .sort_values(["_p", "kv_len", "batch"], kind="stable").drop(columns="_p").reset_index(drop=True))
    return fig, points
