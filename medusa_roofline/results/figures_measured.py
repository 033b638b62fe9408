"""Charts of measured rows (and the speedup chart, analytic or measured), each returned as ``(fig, points)``.

``points`` holds exactly what is drawn, one row per marker or line vertex, with its ``series``
(the legend label), ``source`` (``analytic`` | ``measured``), ``device`` and ``provenance``;
:func:`.roofline.save_figure` writes the figure and that table.

* :func:`qkpv_medusa_measured` — measured qk/pv dots; datasheet roof dashed, measured roof dotted.
* :func:`qkpv_backends` — measured eager qk/pv dots beside fused ``attn`` dots (SDPA, FlexAttention).
* :func:`speedup_figure` — simulated or measured speedup vs candidates, one line per seq_len.
* :func:`measured_vs_analytic` — achieved FLOP/s against the cost model's bound, per op.

Series naming, colours and axes follow :mod:`.roofline` and :mod:`.style`.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D

from ..analytic.costmodel import FUSED_ATTENTION_OP, MODEL_OPS, STEP_LAYER_OPS, STEP_MODEL_OPS
from ..analytic.hardware import Hardware, measured_roofs
from ..decoding.tree import from_tree_file
from ..measure.backends import BACKENDS
from . import roofline, style
from .metrics import provenance_label
from .paper_table import PaperTable
from .roofline import POINT_COLUMNS, data_limits, draw_measured_roofs, new_axes, scatter_series

MEASURED_EXTRA = ["bench", "dtype", "q_len", "keys", "time_s_median", "bytes_moved", "oi_moved", "launch_bound",
                  "sanity"]
LAUNCH_LABEL = "launch-bound (time ≤ 1.5x launch floor, or flat while bytes grow)"


def measured_point_frame(sel: pd.DataFrame, hardware: str = "") -> pd.DataFrame:
    """Metrics rows -> POINT_COLUMNS (+ bench, dtype, shapes run, time, moved bytes, launch flag, sanity).

    x = ``oi`` is the paper's accounting (``oi_counted``, ``bytes`` = ``bytes_counted``), so measured dots
    sit where the paper's chart puts the same op; y = achieved FLOP/s."""
    sel = sel.copy()
    sel["source"] = "measured"
    sel["hardware"] = hardware
    sel["flops_per_s"] = sel["achieved_flops_per_s"]
    sel["oi"] = sel["oi_counted"]
    sel["bytes"] = sel["bytes_counted"]
    sel["provenance"] = [provenance_label(r) for _, r in sel.iterrows()]
    for col in MEASURED_EXTRA:
        if col not in sel.columns:
            sel[col] = False if col == "launch_bound" else ""
    sel["launch_bound"] = sel["launch_bound"].fillna(False).astype(bool)
    return sel[POINT_COLUMNS + MEASURED_EXTRA].reset_index(drop=True)


def mark_launch_bound(ax, points: pd.DataFrame, x: str = "oi", y: str = "flops_per_s", marker_size: float = 18):
    """A dark ring around every launch-bound point (their time is overhead, not traffic); returns the
    legend handle, or None when there is no such point."""
    pts = points[points["launch_bound"]]
    if not len(pts):
        return None
    return ax.scatter(pts[x], pts[y], s=marker_size * 3.2, facecolors="none", edgecolors="0.1", linewidths=0.8,
                      marker="o", label=LAUNCH_LABEL, zorder=5)


def _backend(frame: pd.DataFrame) -> pd.Series:
    """Each row's attention backend (``eager`` for tables written before the column existed)."""
    if "attention_backend" not in frame.columns:
        return pd.Series("eager", index=frame.index)
    return frame["attention_backend"].fillna("eager").astype(str)


def qkpv_measured_points(metrics: pd.DataFrame, hardware: str = "") -> pd.DataFrame:
    """Measured (eager) qk/pv dots: micro-benchmark rows when there are any, else the sweep's per-op rows."""
    sel = metrics[metrics["op"].isin(["qk", "pv"]) & metrics["phase"].isin(["ar", "medusa"])
                  & (_backend(metrics) == "eager")].copy()
    if "bench" in sel.columns and (sel["bench"] == "microbench").any():
        sel = sel[sel["bench"] == "microbench"]
    sel["series"] = [roofline.ar_series_name() if p == "ar" else roofline.medusa_series_name(int(c))
                     for p, c in zip(sel["phase"], sel["candidates"])]
    sel = sel.sort_values(["phase", "candidates", "batch", "kv_len", "op"], kind="stable")
    return measured_point_frame(sel, hardware)


def measured_roofline_axes(points: pd.DataFrame, ceilings: dict, datasheet: Hardware | None, size,
                           extra_x=(), extra_y=()):
    """Log-log axes fitted to the points and both roofs: datasheet dashed (when known), measured dotted.
    A device without a datasheet entry is said so on the chart (once, top left)."""
    dtype = points["dtype"].iloc[0] if len(points) else None
    peak, bandwidth = measured_roofs(ceilings, dtype)
    peaks, ridges = [peak], [peak / bandwidth]
    if datasheet is not None:
        peaks.append(datasheet.peak_flops)
        ridges.append(datasheet.ridge)
    xlim, ylim = data_limits(list(points["oi"]) + list(extra_x), list(points["flops_per_s"]) + list(extra_y),
                             peaks, ridges)
    fig, ax = new_axes(size)
    style.log_axes(ax, xlim, ylim)
    if datasheet is not None:
        roofline.draw_roofs(ax, datasheet, xlim, linestyle="--")
    else:
        note(ax, f"{ceilings.get('device_name') or 'this device'}: no datasheet entry, measured roofs only")
    draw_measured_roofs(ax, peak, bandwidth, xlim)
    return fig, ax


def note(ax, text: str) -> None:
    """A short grey note in the top-left corner (below any earlier note): above the roofs, where no
    point can be."""
    line = sum(1 for t in ax.texts if t.get_gid() == "note")
    ax.text(0.02, 0.98 - 0.06 * line, text, transform=ax.transAxes, ha="left", va="top", fontsize=style.LEGEND_PT,
            color="0.3", gid="note", bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 1.0})


def qkpv_medusa_measured(metrics: pd.DataFrame, ceilings: dict, datasheet: Hardware | None, title: str,
                         size=(6.0, 4.2), marker_size: float = 22, paper: PaperTable | None = None):
    """Measured qk/pv on the local device with the datasheet roof (dashed, when known), the measured roof
    (dotted, ridge marked) and, with ``paper``, the published chart's read-off boxes; returns ``(fig, points)``."""
    points = qkpv_measured_points(metrics, datasheet.key if datasheet is not None else "")
    boxes = roofline.paper_box_points(paper)
    fig, ax = measured_roofline_axes(points, ceilings, datasheet, size, *roofline.box_extent(boxes))
    styles = roofline.candidate_styles(points, marker_size)
    if len(points):
        scatter_series(ax, points, styles, roofline.series_order(points))
        mark_launch_bound(ax, points, marker_size=marker_size)
    else:
        ax.text(0.5, 0.5, "no measured qk/pv rows", transform=ax.transAxes, ha="center")
    roofline.draw_paper_boxes(ax, boxes, points, styles)
    ax.set_title(title)
    roofline.place_legend(ax)
    return fig, roofline.with_boxes(points, boxes)


BACKEND_EXTRA = ["attention_backend", "kernel"]


def backend_marker(backend: str) -> str:
    return BACKENDS[backend].marker if backend in BACKENDS else "D"


def backend_series_prefix(backend: str) -> str:
    return "qk/pv eager" if backend == "eager" else f"attn {backend}"


def qkpv_backends_points(metrics: pd.DataFrame, hardware: str = "") -> pd.DataFrame:
    """Eager qk/pv dots and fused ``attn`` dots of every other backend, ar and Medusa.

    Micro-benchmark rows when there are any, else the sweep's. Series: ``qk/pv eager ar``,
    ``qk/pv eager Medusa (# cand.: N)``, ``attn sdpa ar``, ``attn flex Medusa (# cand.: N)``, …;
    rows sorted by backend (eager, sdpa, flex), phase, candidates, batch, kv_len, op."""
    backend = _backend(metrics)
    wanted = ((backend == "eager") & metrics["op"].isin(["qk", "pv"])) | ((backend != "eager") & (metrics["op"] == "attn"))
    sel = metrics[wanted & metrics["phase"].isin(["ar", "medusa"])].copy()
    sel["attention_backend"] = _backend(sel)
    if "kernel" not in sel.columns:
        sel["kernel"] = ""
    sel["kernel"] = sel["kernel"].fillna("").astype(str)
    if "bench" in sel.columns and (sel["bench"] == "microbench").any():
        sel = sel[sel["bench"] == "microbench"]
    sel["series"] = [roofline.ar_series_name(backend_series_prefix(be)) if p == "ar"
                     else roofline.medusa_series_name(int(c), backend_series_prefix(be))
                     for be, p, c in zip(sel["attention_backend"], sel["phase"], sel["candidates"])]
    rank = {be: i for i, be in enumerate(BACKENDS)}
    sel = sel.assign(_b=sel["attention_backend"].map(rank).fillna(len(rank)))
    sel = sel.sort_values(["_b", "attention_backend", "phase", "candidates", "batch", "kv_len", "op"], kind="stable")
    frame = measured_point_frame(sel.drop(columns="_b"), hardware)
    for col in BACKEND_EXTRA:
        frame[col] = sel[col].to_numpy()
    return frame


def qkpv_backends(metrics: pd.DataFrame, ceilings: dict, datasheet: Hardware | None, title: str,
                  size=(6.0, 4.2), marker_size: float = 18):
    """Eager qk/pv vs fused attention on the roofline: colour = candidates (grey: ar), marker = backend;
    datasheet roof dashed (when known), measured roof dotted. Returns ``(fig, points)``.

    Eager dots are capped near OI n·d/(n+d) by the score traffic; fused dots move right (the score
    matrix never reaches memory), towards OI ≈ 2n/e for s ≫ n (n in float16, MHA)."""
    points = qkpv_backends_points(metrics, datasheet.key if datasheet is not None else "")
    fig, ax = measured_roofline_axes(points, ceilings, datasheet, size)
    cands = sorted(points.loc[points["phase"] == "medusa", "candidates"].unique())
    palette = style.sequential_palette(max(len(cands), 1))
    cand_color = {c: palette[i] for i, c in enumerate(cands)}
    for name in dict.fromkeys(points["series"]):
        pts = points[points["series"] == name]
        first = pts.iloc[0]
        color = style.AR_COLOR if first["phase"] != "medusa" else cand_color[first["candidates"]]
        ax.scatter(pts["oi"], pts["flops_per_s"], s=marker_size, color=color, label=name,
                   marker=backend_marker(first["attention_backend"]), edgecolor=style.edge_color(color), linewidth=0.5,
                   zorder=3 if first["attention_backend"] == "eager" else 4, gid=roofline.DATA_GID)
    ring = mark_launch_bound(ax, points, marker_size=marker_size)
    handles = [ln for ln in ax.lines if not ln.get_label().startswith("_")]  # the roofs
    labels = [h.get_label() for h in handles]
    for be in dict.fromkeys(points["attention_backend"]):
        handles.append(Line2D([], [], ls="", marker=backend_marker(be), color="0.2", ms=5))
        labels.append(BACKENDS[be].label if be in BACKENDS else f"{be} attn (fused)")
    if (points["phase"] == "ar").any():
        handles.append(Line2D([], [], ls="", marker="o", color=style.AR_COLOR, ms=5))
        labels.append("ar")
    for c in cands:
        handles.append(Line2D([], [], ls="", marker="o", color=cand_color[c], ms=5))
        labels.append(f"Medusa (# cand.: {c})")
    if ring is not None:
        handles.append(ring)
        labels.append(LAUNCH_LABEL)
    if not len(points):
        ax.text(0.5, 0.5, "no measured qk/pv or attn rows", transform=ax.transAxes, ha="center")
    elif set(points["attention_backend"]) == {"eager"}:
        note(ax, "no fused backend measured (microbench.attention_backends)")
    ax.set_title(title)
    roofline.place_legend(ax, handles, labels, ncol=2)
    return fig, points


def measured_vs_analytic_points(metrics: pd.DataFrame, roof: str = "measured", hardware: str = "") -> pd.DataFrame:
    """Per op: achieved FLOP/s (y) against the cost model's bound at the OI of the bytes its kernels move
    (x, ``roof`` roofs: ``roof_*_flops_per_s_moved``)."""
    col = {"measured": "roof_measured_flops_per_s_moved", "spec": "roof_spec_flops_per_s_moved"}[roof]
    # ops without FLOPs (embedding) have a zero roof in FLOP/s: nothing to draw on log axes
    sel = metrics[metrics[col] > 0].copy() if col in metrics.columns else metrics.iloc[0:0].copy()
    bench = sel["bench"] if "bench" in sel.columns else pd.Series("sweep", index=sel.index)
    label = [op if be == "eager" else f"{op} {be}" for op, be in zip(sel["op"], _backend(sel))]
    sel["series"] = [op if b != "microbench" else f"{op} (microbench)" for op, b in zip(label, bench)]
    op_order = {op: i for i, op in enumerate(ORDERED_OPS)}
    sel = sel.assign(_b=(bench == "microbench").astype(int), _o=pd.Series(label, index=sel.index).map(op_order)
                     .fillna(len(op_order)))
    sel = sel.sort_values(["_b", "_o", "phase", "candidates", "batch", "kv_len"], kind="stable")
    frame = measured_point_frame(sel.drop(columns=["_b", "_o"]), hardware)
    frame["bound_flops_per_s"] = sel[col].to_numpy()
    frame["bound_roof"] = roof
    frame["frac_of_bound"] = frame["flops_per_s"] / frame["bound_flops_per_s"]
    return frame


ORDERED_OPS = (STEP_LAYER_OPS + STEP_MODEL_OPS + MODEL_OPS[1:]
               + tuple(f"{FUSED_ATTENTION_OP} {be}" for be, b in BACKENDS.items() if b.fused))
"""Legend order of the measured-vs-analytic chart: the cost model's op order, then each fused backend."""


def measured_vs_analytic(metrics: pd.DataFrame, title: str, size=(6.0, 4.2), roof: str = "measured",
                         hardware: str = "", marker_size: float = 14):
    """Achieved vs analytic bound, one colour per op, with the y = x line (the bound) and 10 % of it;
    returns ``(fig, points)``. Distance below the diagonal is the gap to the roofline."""
    points = measured_vs_analytic_points(metrics, roof, hardware)
    names = list(dict.fromkeys(points["series"]))
    tab20 = sns.color_palette("tab20", 20)
    palette = tab20[0::2] + tab20[1::2]  # 20 distinct colours, the strong ones first
    op_index = {op: i for i, op in enumerate(ORDERED_OPS)}
    colors = {name: palette[op_index.get(name.removesuffix(" (microbench)"), len(ORDERED_OPS)) % len(palette)]
              for name in names}
    shapes = (style.AR_MARKER,) + style.CANDIDATE_MARKERS
    op_of = {name: name.removesuffix(" (microbench)") for name in names}
    styles = {name: roofline.SeriesStyle(colors[name], "*" if name == "step" else
                                         shapes[op_index.get(op_of[name], len(ORDERED_OPS)) % len(shapes)],
                                         marker_size * (2 if name == "step" or name != op_of[name] else 1),
                                         filled=name == "step", zorder=3.2 if name == "step" else 3)
              for name in names}
    # One colour and shape per op, open markers (micro-benchmark rows: the op's marker, larger): ops that
    # are compute-bound share one x (the peak), and every outline stays visible where they meet.
    lo_hi = pd.concat([points["bound_flops_per_s"], points["flops_per_s"]])
    lim, _ = data_limits(lo_hi, lo_hi)
    fig, ax = new_axes(size)
    style.log_axes(ax, lim, lim)
    line = np.array(lim)
    ax.plot(line, line, "-", color="0.3", lw=1.0, label="bound (measured = analytic)", zorder=1)
    ax.plot(line, line * 0.1, ":", color="0.5", lw=0.8, label="10 % of bound", zorder=1)
    scatter_series(ax, points, styles, sorted(names, key=lambda n: styles[n].zorder), x="bound_flops_per_s",
                   y="flops_per_s")
    mark_launch_bound(ax, points, x="bound_flops_per_s", marker_size=marker_size)
    which = "measured ceilings" if roof == "measured" else "datasheet"
    ax.set_xlabel(f"Analytic bound (FLOP/s): moved bytes x {which}")
    ax.set_ylabel("Measured (FLOP/s)")
    ax.set_title(title)
    roofline.place_legend(ax, ncol=2)
    return fig, points


# ----------------------------------------------------------------------------------- speedup


def speedup_figure(points: pd.DataFrame, title: str, subtitle: str, size=(6.0, 4.2), markers_per_line: int = 8):
    """Speedup vs candidates, one line per ``series`` (seq_len): colour and marker shape by kv_len.

    Long lines carry ``markers_per_line`` markers, staggered between lines so that they never sit on
    each other; measured series carry one at every point (circles on a dotted line for real-generation
    tokens per step) and, when the points carry ``speedup_p10``/``speedup_p90``, error bars; a tree
    file's own tree (series ``..., tree NAME``) is a star at each of its points. When a table mixes
    sources, analytic lines are dashed. The 1.0 line (no speedup) is drawn dark and named in the legend.
    Returns ``(fig, points)`` with points sorted as drawn (series, then candidates)."""
    points = points.copy()
    src_rank = points["source"].map({"measured": 0, "analytic": 1}).fillna(2)
    tree_rank = points["tree"].map(from_tree_file) if "tree" in points.columns else False
    points = (points.assign(_r=src_rank, _t=tree_rank)
              .sort_values(["_t", "_r", "kv_len", "series", "candidates"], kind="stable")
              .drop(columns=["_r", "_t"]).reset_index(drop=True))
    fig, ax = new_axes(size)
    kv = sorted(points["kv_len"].unique())
    palette = style.sequential_palette(max(len(kv), 1))
    rank = {s: i for i, s in enumerate(kv)}
    mixed = points["source"].nunique() > 1
    ax.axhline(1.0, color="0.15", lw=1.1, ls="-.", zorder=1.5, label="no speedup (1.0)")
    trees_named: set[str] = set()
    for name in dict.fromkeys(points["series"]):
        pts = points[points["series"] == name]
        measured = pts["source"].iloc[0] == "measured"
        i = rank[pts["kv_len"].iloc[0]]
        step = max(1, len(pts) // markers_per_line)
        real = "acceptance" in pts.columns and pts["acceptance"].iloc[0] == "real generation"
        explicit = "tree" in pts.columns and from_tree_file(pts["tree"].iloc[0])
        # circles (real generation) and stars (a tree file's own tree): no kv_len line uses them
        marker = "*" if explicit else "o" if real else style.candidate_marker(i)
        label = name
        if explicit:  # one legend entry per tree: its stars take the colour of their seq_len line
            tree = str(pts["tree"].iloc[0])
            label = "_nolegend_" if tree in trees_named else f"tree {tree} (stars; colour: seq_len)"
            trees_named.add(tree)
        line = "none" if explicit else ":" if real else "-" if measured or not mixed else "--"
        ax.plot(pts["candidates"], pts["speedup"], ls=line,
                marker=marker, ms=9 if explicit else 4 if measured else 3.5, markevery=1 if measured or explicit else
                ((i * max(1, step // len(kv))) % step, step), lw=1.4 if measured or not mixed else 1.0,
                color=palette[i], markeredgecolor=style.edge_color(palette[i]), markeredgewidth=0.4, label=label,
                zorder=3,
                gid=roofline.DATA_GID)
        if measured and {"speedup_p10", "speedup_p90"} <= set(pts.columns) and pts["speedup_p10"].notna().all():
            spread = [pts["speedup"] - pts["speedup_p10"], pts["speedup_p90"] - pts["speedup"]]
            ax.errorbar(pts["candidates"], pts["speedup"], yerr=np.clip(spread, 0, None), ls="none",
                        color=palette[i], elinewidth=0.8, capsize=1.5, label="_nolegend_", zorder=2.5)
    ax.set_xlabel("# candidate tokens (root included)")
    ax.set_ylabel("Speedup over autoregressive decoding")
    if len(points):
        ax.set_xlim(0, max(points["candidates"].max(), 1) * 1.03)
    ax.set_ylim(0, max([1.0] + list(points["speedup"].dropna())) * 1.12)
    fig.suptitle(title, fontweight="bold", fontsize="medium")
    ax.set_title(subtitle, fontsize=style.LEGEND_PT)
    roofline.place_legend(ax)
    return fig, points


# ----------------------------------------------------------------------------------- prediction


FAMILY_ORDER = ("linear", "attention", "norm", "elementwise", "medusa_heads", "remainder", "step")


def prediction_figure(prediction: pd.DataFrame, title: str, size=(6.0, 4.2), band: float = 0.2):
    """Predicted (x) against measured (y) time, log-log, one panel per calibration: the diagonal, a ±band
    region, one colour per op family, steps as stars, launch-limited points (the predictor's launches x
    per-launch cost won) as crosses (steps: hollow stars), the steps' median |error| in the corner. Returns
    ``(fig, points)``: the prediction rows as drawn, with ``series``."""
    points = prediction.copy()
    points["series"] = points["op_family"].astype(str)
    cals = [c for c in ("measured", "datasheet") if (points["calibration"] == c).any()] or ["measured"]
    rank = {f: i for i, f in enumerate(FAMILY_ORDER)}
    points = (points.assign(_c=points["calibration"].map({c: i for i, c in enumerate(cals)}),
                            _f=points["series"].map(rank).fillna(len(rank)))
              .sort_values(["_c", "_f", "phase", "candidates", "batch", "kv_len"], kind="stable")
              .drop(columns=["_c", "_f"]).reset_index(drop=True))
    values = pd.concat([points["predicted_s"], points["time_s_median"]])
    lim, _ = data_limits(values, values)
    style.apply_theme()
    fig, axes = plt.subplots(1, len(cals), figsize=(size[0] * (1 + 0.8 * (len(cals) - 1)), size[1]), squeeze=False)
    palette = sns.color_palette("tab10", len(FAMILY_ORDER))
    for ax, cal in zip(axes[0], cals):
        style.log_axes(ax, lim, lim)
        line = np.array(lim)
        ax.fill_between(line, line * (1 - band), line * (1 + band), color="0.85", zorder=0,
                        label=f"±{band:.0%} of predicted")
        ax.plot(line, line, "-", color="0.3", lw=1.0, label="measured = predicted", zorder=1)
        pts = points[points["calibration"] == cal]
        for family in dict.fromkeys(pts["series"]):
            fam = pts[pts["series"] == family]
            color = palette[rank.get(family, 0) % len(palette)]
            bound = fam["launch_limited"].astype(bool)
            labelled = False  # the family's first drawn subset carries its name (the legend, the figure checks)
            for launch, sel in ((False, fam[~bound]), (True, fam[bound])):
                if not len(sel):
                    continue
                step = family == "step"
                style_kw = ({"marker": "*", "facecolors": "none" if launch else color, "edgecolors": color}
                            if step else {"marker": "x", "color": color} if launch
                            else {"marker": "o", "color": color, "edgecolors": color})
                ax.scatter(sel["predicted_s"], sel["time_s_median"], s=40 if step else 14, linewidths=0.8,
                           zorder=3, label=None if labelled else family, gid=roofline.DATA_GID, **style_kw)
                labelled = True
        ax.scatter([], [], s=14, marker="x", color="0.2", label="launch-limited (steps: hollow)")
        steps = pts[pts["series"] == "step"]
        if len(steps):
            ax.text(0.98, 0.02, f"steps: median |error| {steps['abs_rel_error'].median():.0%}", ha="right",
                    va="bottom", transform=ax.transAxes, fontsize=style.LEGEND_PT)
        ax.set_xlabel(f"Predicted time (s), {cal} calibration")
        ax.set_ylabel("Measured time (s), median")
        ax.set_title(cal, fontsize="small")
        ax.legend(loc="upper left", fontsize=style.LEGEND_PT)
    fig.suptitle(title, fontweight="bold", fontsize="medium")
    return fig, points
