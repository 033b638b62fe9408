"""The paper's analytic charts beyond qk/pv: all layer ops (init vs ar) and the MLP in decoding vs Medusa.

Each function returns ``(fig, points)``; ``points`` holds exactly what is drawn, one row per marker,
with its ``series`` (the legend label), ``source`` (``analytic``) and ``provenance``.
"""

from __future__ import annotations

import math

import pandas as pd

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
ALL_OPS_STYLE = {  # group: (colour, marker size). Colour-blind-safe hues with distinct lightness; sizes
    # layered (largest drawn first) so that coinciding groups show as concentric markers, none hidden.
    "up/gate/down": ("#E69F00", 80),
    "qk/pv": ("#CC79A7", 36),
    "qkv mlp": ("#0072B2", 12),
}
PHASE_MARKER = {"init": "o", "ar": "^"}  # the paper's shapes: prefill circles, decoding triangles


def group_label(group: str, attention: str = "unfused") -> str:
    """A group's name in the series labels: the attention group says "fused" on a fused chart."""
    return f"{group} fused" if group == "qk/pv" and attention == "fused" else group


def all_ops_points(table: pd.DataFrame, provenance: str | None = None, attention: str = "unfused") -> pd.DataFrame:
    """Dots of the all-ops chart from an analytic table: the paper's six series, init and ar phases."""
    op_group = {op: group_label(g, attention) for g, ops in ALL_OPS_GROUPS.items() for op in ops}
    sel = table[table["op"].isin(op_group) & table["phase"].isin(["init", "ar"])].copy()
    sel["series"] = [f"{op_group[o]} {p}" for o, p in zip(sel["op"], sel["phase"])]
    order = {f"{group_label(g, attention)} {p}": i
             for i, (g, p) in enumerate((g, p) for g in ALL_OPS_GROUPS for p in ("init", "ar"))}
    sel = sel.assign(_s=sel["series"].map(order)).sort_values(["_s", "batch", "kv_len", "op"], kind="stable")
    return _analytic_point_frame(sel.drop(columns="_s"), provenance)


def _analytic_point_frame(sel: pd.DataFrame, provenance: str | None) -> pd.DataFrame:
    sel = sel.copy()
    sel["source"] = "analytic"
    sel["device"] = ""
    sel["flops_per_s"] = sel["roof_flops_per_s"]
    sel["provenance"] = analytic_provenance() if provenance is None else provenance
    return sel[POINT_COLUMNS].reset_index(drop=True)


def _arrow(ax, start, end, text, below: float = 0.45, gap_pt: float = 3.0):
    """An arrow parallel to a series (shifted down by ``below`` in y, log scale), its label written
    along it on its lower side, ``gap_pt`` away, so that label and arrow never touch."""
    (x0, y0), (x1, y1) = start, end
    ax.annotate("", xy=(x1, y1 * below), xytext=(x0, y0 * below),
                arrowprops={"arrowstyle": "->", "color": "0.2", "lw": 1.0}, zorder=4)
    p0, p1 = ax.transData.transform([(x0, y0 * below), (x1, y1 * below)])
    angle = math.degrees(math.atan2(p1[1] - p0[1], p1[0] - p0[0]))
    normal = (math.sin(math.radians(angle)) * gap_pt, -math.cos(math.radians(angle)) * gap_pt)
    ax.annotate(text, xy=(math.sqrt(x0 * x1), math.sqrt(y0 * y1) * below), xytext=normal, textcoords="offset points",
                rotation=angle, rotation_mode="anchor", ha="center", va="top", fontsize=style.LEGEND_PT,
                color="0.2", zorder=4)


def all_ops(table: pd.DataFrame, hw: Hardware, title: str, size=(6.0, 4.2), attention: str = "unfused"):
    """The paper's all-ops roofline (analytic); returns ``(fig, points)``.

    Colour and marker size say the op group, the shape the phase (init circles, ar triangles); the
    groups are drawn largest first, so where they coincide (every linear at OI ~ batch in decoding)
    they show as concentric markers. The legend keeps the paper's order."""
    points = all_ops_points(table, attention=attention)
    styles = {f"{group_label(g, attention)} {p}": roofline.SeriesStyle(color, PHASE_MARKER[p], area, zorder=3 + i / 10)
              for i, (g, (color, area)) in enumerate(ALL_OPS_STYLE.items()) for p in ("init", "ar")}
    fig, ax = roofline.roofline_axes(points, hw, size)
    roofline.scatter_series(ax, points, styles, sorted(dict.fromkeys(points["series"]), key=lambda s: styles[s].zorder))
    # "Increase bs": decoding MLP at the shortest context, smallest to largest batch.
    mlp = points[(points["series"] == "up/gate/down ar") & (points["op"] == "up_proj")]
    if mlp["batch"].nunique() > 1:
        mlp = mlp[mlp["kv_len"] == mlp["kv_len"].min()].sort_values("batch")
        _arrow(ax, mlp.iloc[0][["oi", "flops_per_s"]], mlp.iloc[-1][["oi", "flops_per_s"]], "Increase bs")
    # "Increase seq_len": prefill attention at the smallest batch, shortest to longest context.
    att = points[(points["series"] == f"{group_label('qk/pv', attention)} init") & (points["op"] == "qk")]
    if att["kv_len"].nunique() > 1:
        att = att[att["batch"] == att["batch"].min()].sort_values("kv_len")
        _arrow(ax, att.iloc[0][["oi", "flops_per_s"]], att.iloc[-1][["oi", "flops_per_s"]], "Increase seq_len")
    ax.set_title(title)
    handles, labels = ax.get_legend_handles_labels()
    order = [i for i, s in enumerate(labels) if s not in styles]  # the roofs, then the paper's series order
    order += [labels.index(s) for s in dict.fromkeys(points["series"])]
    roofline.place_legend(ax, [handles[i] for i in order], [labels[i] for i in order])
    return fig, points


MLP_PREFIX = "up/gate/down"


def mlp_spec_points(table: pd.DataFrame, provenance: str | None = None) -> pd.DataFrame:
    """up/gate/down in decoding (``ar``) and in Medusa verification, one series per tree size.

    Series are named as on the qk/pv chart ("up/gate/down Medusa (# cand.: 16)"); the paper's MLP chart
    calls them "up/gate/down spec: 16" (the caption says so)."""
    sel = table[table["op"].isin(MLP_OPS) & table["phase"].isin(["ar", "medusa"])].copy()
    sel["series"] = [roofline.ar_series_name(MLP_PREFIX) if p == "ar" else roofline.medusa_series_name(c, MLP_PREFIX)
                     for p, c in zip(sel["phase"], sel["candidates"])]
    sel = sel.assign(_p=sel["phase"].map({"ar": 0, "medusa": 1}))
    sel = sel.sort_values(["_p", "candidates", "batch", "kv_len", "op"], kind="stable").drop(columns="_p")
    return _analytic_point_frame(sel, provenance)


def mlp_spec(table: pd.DataFrame, hw: Hardware, title: str, size=(6.0, 4.2), marker_size: float = 30):
    """Decoding MLP vs Medusa's MLP at 16 … 112 candidates (analytic); returns ``(fig, points)``.

    A linear's OI depends only on the tokens per step (batch x candidates), so series coincide
    (ar at batch 16 = Medusa 16 at batch 1, Medusa 16 at batch 2 = Medusa 32 at batch 1, …): AR is
    drawn as large filled circles underneath, each tree size as open markers of its own shape on top
    (:func:`.roofline.candidate_styles`), so every series stays visible where they meet."""
    points = mlp_spec_points(table)
    styles = roofline.candidate_styles(points, marker_size, ar_size=marker_size * 1.6)
    fig, ax = roofline.roofline_axes(points, hw, size)
    roofline.scatter_series(ax, points, styles, roofline.series_order(points))
    ax.set_title(title)
    roofline.place_legend(ax)
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
                ax.plot(line["batch"], line["best_candidates"], "-o", ms=3, lw=1.2, color=color[s], label=f"kv_len {s}",
                        gid=roofline.DATA_GID)
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
    axes.flat[0].legend(loc="lower left", fontsize=style.LEGEND_PT)
    fig.suptitle(title, fontweight="bold", fontsize="medium")
    order = {p: i for i, p in enumerate(panels)}
    points = (points.assign(_p=points["panel"].map(order))
              .sort_values(["_p", "kv_len", "batch"], kind="stable").drop(columns="_p").reset_index(drop=True))
    return fig, points
