"""Roofline drawing shared by every chart: roofs, ridge, axes that hold every roof and point with
margins, series of (OI, FLOP/s) markers that stay apart in colour, greyscale and for colour-blind
readers, the paper's read-off boxes, a legend that covers no data, and saving a figure beside the CSV
of exactly its points."""

from __future__ import annotations

import math
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import to_rgba
from matplotlib.patches import Rectangle

from ..analytic.hardware import Hardware
from ..core.io import write_csv
from . import style
from .paper_table import PaperTable

POINT_COLUMNS = [
    "series", "source", "model", "hardware", "device", "phase", "op", "candidates", "batch",
    "kv_len", "flops", "bytes", "oi", "flops_per_s", "provenance",
]
BOX_COLUMNS = ["oi_low", "oi_high", "flops_per_s_low", "flops_per_s_high"]
"""Extra columns of a points CSV whose chart carries the paper layer (empty on marker rows)."""
PAPER_SERIES = "paper (read off the figure)"
PAPER_SOURCE = "paper"
DEFAULT_XLIM = (0.5, 1e4)
DEFAULT_YLIM = (1e10, 1e15)
MARGIN = 1.6
"""The least room (a factor, log scale: 0.2 decade) between the frame and any roof or point."""
DATA_GID = "data"
"""Artists tagged with this gid are data: the legend must not cover them."""


def medusa_series_name(candidates: int, prefix: str = "qk/pv", attention: str = "unfused") -> str:
    suffix = " fused" if attention == "fused" else ""
    return f"{prefix}{suffix} Medusa (# cand.: {candidates})"


def ar_series_name(prefix: str = "qk/pv", attention: str = "unfused") -> str:
    return f"{prefix}{' fused' if attention == 'fused' else ''} ar"


def qkpv_points(table: pd.DataFrame, attention: str = "unfused", provenance: str = "") -> pd.DataFrame:
    """The qk/pv chart's dots from an analytic table: one per (phase, candidates, batch, kv_len, op)."""
    sel = table[table["op"].isin(["qk", "pv"]) & table["phase"].isin(["ar", "medusa"])].copy()
    sel["series"] = [
        ar_series_name(attention=attention) if p == "ar" else medusa_series_name(c, attention=attention)
        for p, c in zip(sel["phase"], sel["candidates"])
    ]
    sel["source"] = "analytic"
    sel["device"] = ""
    sel["flops_per_s"] = sel["roof_flops_per_s"]
    sel["provenance"] = provenance
    sel = sel.sort_values(["phase", "candidates", "batch", "kv_len", "op"], kind="stable")
    return sel[POINT_COLUMNS].reset_index(drop=True)


# ------------------------------------------------------------------------------------ series styles


@dataclass(frozen=True)
class SeriesStyle:
    """How one series is drawn. Open (unfilled) markers of distinct shapes stay visible where series
    coincide; ``zorder`` puts small markers above large ones."""

    color: object
    marker: str = style.AR_MARKER
    size: float = 18
    filled: bool = True
    zorder: float = 3


def candidate_styles(points: pd.DataFrame, size: float = 22, ar_size: float | None = None) -> dict[str, SeriesStyle]:
    """Grey filled circles for AR series underneath; per candidate count a palette colour and its own
    marker shape, open: where tree sizes meet on the chart (a short context at n candidates sits among
    long contexts at fewer; tokens per step coincide across batch x candidates), every outline shows."""
    medusa = points[points["phase"] == "medusa"][["series", "candidates"]].drop_duplicates()
    counts = sorted(medusa["candidates"].unique())
    palette = style.sequential_palette(max(len(counts), 1))
    rank = {c: i for i, c in enumerate(counts)}
    styles = {s: SeriesStyle(palette[rank[c]], style.candidate_marker(rank[c]), size, False, 3.1)
              for s, c in zip(medusa["series"], medusa["candidates"])}
    for s in points.loc[points["phase"] != "medusa", "series"].unique():
        styles[s] = SeriesStyle(style.AR_COLOR, style.AR_MARKER, ar_size or size, True, 3)
    return styles


def series_order(points: pd.DataFrame) -> list[str]:
    firsts = points.drop_duplicates("series")
    key = firsts["phase"].map({"init": 0, "ar": 1, "medusa": 2})
    return list(firsts.assign(_k=key).sort_values(["_k", "candidates"], kind="stable")["series"])


def scatter_series(ax, points, styles: dict[str, SeriesStyle], order=None, x="oi", y="flops_per_s"):
    """One scatter per series (legend label = series), styled by ``styles``; tagged as data."""
    for name in order or list(dict.fromkeys(points["series"])):
        pts, st = points[points["series"] == name], styles[name]
        face, edge, width = (st.color, style.edge_color(st.color), 0.5) if st.filled else ("none", st.color, 1.1)
        ax.scatter(pts[x], pts[y], s=st.size, marker=st.marker, facecolors=face, edgecolors=edge,
                   linewidths=width, label=name, zorder=st.zorder, gid=DATA_GID)


# ------------------------------------------------------------------------------------ axes and roofs


def _half_decade(v: float, rounding) -> float:
    """``v`` rounded (``math.floor`` or ``math.ceil``) to a power of sqrt(10)."""
    return 10 ** (rounding(round(2 * math.log10(v), 9)) / 2)


def data_limits(x, y, peaks=(), ridges=(), base_x=None, base_y=None):
    """Log limits holding every point, peak (y) and ridge (x) with a :data:`MARGIN` to the frame, rounded
    out to half decades, and never smaller than ``base_x`` / ``base_y`` (the paper's axes) when given."""
    xs = [v for v in list(np.asarray(x, float)) + list(ridges) if v > 0 and math.isfinite(v)]
    ys = [v for v in list(np.asarray(y, float)) + list(peaks) if v > 0 and math.isfinite(v)]

    def span(values, base, default):
        if not values:
            return base or default
        lo, hi = min(values) / MARGIN, max(values) * MARGIN
        if base is not None:
            if base[0] <= lo and hi <= base[1]:
                return base  # the paper's axes when everything fits with room to spare
            lo, hi = min(lo, base[0]), max(hi, base[1])
        return _half_decade(lo, math.floor), _half_decade(hi, math.ceil)

    return span(xs, base_x, DEFAULT_XLIM), span(ys, base_y, DEFAULT_YLIM)


def roofline_axes(points: pd.DataFrame, hw: Hardware, size, extra_x=(), extra_y=()):
    """Log-log axes (the paper's, widened to hold every roof and point) with the hardware's roofs."""
    xlim, ylim = data_limits(list(points["oi"]) + list(extra_x), list(points["flops_per_s"]) + list(extra_y),
                             [hw.peak_flops], [hw.ridge], DEFAULT_XLIM, DEFAULT_YLIM)
    fig, ax = new_axes(size)
    style.log_axes(ax, xlim, ylim)
    draw_roofs(ax, hw, xlim)
    return fig, ax


def draw_roofs(ax, hw: Hardware, xlim=DEFAULT_XLIM, linestyle="--", label_roofs: bool = True) -> None:
    """Dashed memory diagonal, compute ceiling and ridge line, labelled as in the paper."""
    x = np.logspace(np.log10(xlim[0]), np.log10(xlim[1]), 200)
    ax.plot(x, np.minimum(hw.bandwidth * x, hw.peak_flops * 10), linestyle, color="tab:blue", lw=1.2,
            label=style.bandwidth_label(hw.bandwidth) if label_roofs else None, zorder=1)
    ax.axhline(hw.peak_flops, linestyle=linestyle, color="tab:red", lw=1.2,
               label=style.flops_label(hw.peak_flops) if label_roofs else None, zorder=1)
    ax.axvline(hw.ridge, linestyle=linestyle, color="tab:green", lw=1.0,
               label=f"ridge {hw.ridge:,.0f} FLOP/B" if label_roofs else None, zorder=1)


def _ridge_text(ridge: float) -> str:
    return f"{ridge:,.0f}" if ridge >= 100 else f"{ridge:.3g}"


def peak_label(flops_per_s: float) -> str:
    """style.flops_label for TFLOP/s-class devices ('312 TFLOP/s'); GFLOP/s below ('73.8 GFLOP/s')."""
    return style.flops_label(flops_per_s) if flops_per_s >= 1e12 else f"{flops_per_s / 1e9:,.4g} GFLOP/s"


def draw_measured_roofs(ax, peak: float, bandwidth: float, xlim, linestyle=":", prefix: str = "measured") -> None:
    """The measured roof: dotted memory diagonal, compute ceiling and ridge (line + marker).
    Call after the y limits are set (the diagonal is clipped beyond them)."""
    x = np.logspace(np.log10(xlim[0]), np.log10(xlim[1]), 200)
    ridge = peak / bandwidth
    ax.plot(x, np.minimum(bandwidth * x, ax.get_ylim()[1] * 10), linestyle, color="tab:blue", lw=1.6,
            label=f"{prefix} {style.bandwidth_label(bandwidth)}", zorder=1)
    ax.axhline(peak, linestyle=linestyle, color="tab:red", lw=1.6, label=f"{prefix} {peak_label(peak)}", zorder=1)
    ax.axvline(ridge, linestyle=linestyle, color="tab:green", lw=1.2,
               label=f"{prefix} ridge {_ridge_text(ridge)} FLOP/B", zorder=1)
    ax.plot([ridge], [peak], marker="D", ms=4, color="tab:green", zorder=2)


def roofline_figure(points: pd.DataFrame, hw: Hardware, title: str, size=(6.0, 4.2), marker_size: float = 22,
                    paper: PaperTable | None = None):
    """The qk/pv roofline: the hardware's roofs, one styled scatter per series and, with ``paper``,
    the published chart's read-off boxes. Returns ``(fig, points)``: ``points`` gains the boxes drawn."""
    boxes = paper_box_points(paper)
    fig, ax = roofline_axes(points, hw, size, *box_extent(boxes))
    styles = candidate_styles(points, marker_size)
    scatter_series(ax, points, styles, series_order(points))
    draw_paper_boxes(ax, boxes, points, styles)
    ax.set_title(title)
    place_legend(ax)
    return fig, with_boxes(points, boxes)


# ------------------------------------------------------------------------------------ the paper layer


def paper_box_points(paper: PaperTable | None) -> pd.DataFrame:
    """One row per read-off box (POINT_COLUMNS + BOX_COLUMNS; no marker, so ``oi``/``flops_per_s`` empty)."""
    rows = [] if paper is None else [{
        "series": PAPER_SERIES, "source": PAPER_SOURCE, "model": paper.model, "hardware": paper.hardware,
        "device": "", "phase": r.phase, "op": "qk/pv", "candidates": r.candidates,
        "provenance": f"{paper.source}; read off the figure (approximate)",
        "oi_low": r.oi[0], "oi_high": r.oi[1],
        "flops_per_s_low": r.flops_per_s[0], "flops_per_s_high": r.flops_per_s[1],
    } for r in paper.ranges]
    return pd.DataFrame(rows, columns=POINT_COLUMNS + BOX_COLUMNS)


def box_extent(boxes: pd.DataFrame) -> tuple[list[float], list[float]]:
    """The boxes' corner coordinates (x values, y values): the axes must hold them too."""
    return (boxes["oi_low"].tolist() + boxes["oi_high"].tolist(),
            boxes["flops_per_s_low"].tolist() + boxes["flops_per_s_high"].tolist())


def with_boxes(points: pd.DataFrame, boxes: pd.DataFrame) -> pd.DataFrame:
    """The points CSV of a chart: its markers, then the paper boxes drawn (if any) in the BOX_COLUMNS.
    Integer columns stay integers (nullable), so the marker rows are written exactly as without boxes."""
    if boxes.empty:
        return points
    columns = list(points.columns) + [c for c in BOX_COLUMNS if c not in points.columns]
    left, right = points.reindex(columns=columns), boxes.reindex(columns=columns)
    for col in columns:
        dtype = (points if col in points.columns else boxes)[col].dtype
        dtype = "Int64" if pd.api.types.is_integer_dtype(dtype) else dtype
        if pd.api.types.is_bool_dtype(dtype) and col not in boxes.columns:
            right[col] = False  # a flag of the markers (e.g. launch_bound): not set on a paper box
        left[col], right[col] = left[col].astype(dtype), right[col].astype(dtype)
    return pd.concat([left, right], ignore_index=True)


def draw_paper_boxes(ax, boxes: pd.DataFrame, points: pd.DataFrame, styles: dict[str, SeriesStyle]) -> None:
    """Translucent boxes in the colour of the series they belong to (same phase and candidates; grey
    when the chart lacks it), one legend entry. A box sits at its series' OI, beside its dots."""
    color_of = {(p, int(c)): styles[s].color
                for s, p, c in zip(points["series"], points["phase"], points["candidates"])}
    for i, (_, box) in enumerate(boxes.iterrows()):
        color = color_of.get((box["phase"], int(box["candidates"])), "0.5")
        (x0, x1), (y0, y1) = (box["oi_low"], box["oi_high"]), (box["flops_per_s_low"], box["flops_per_s_high"])
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, facecolor=to_rgba(color, 0.3), edgecolor=color, lw=0.8,
                               zorder=2, gid=DATA_GID, label=PAPER_SERIES if i == 0 else None))


# ------------------------------------------------------------------------------------ legend, figure


def data_display_points(ax) -> np.ndarray:
    """Display coordinates of every data artist's points (markers, line vertices, box corners)."""
    xy = []
    for artist in ax.get_children():
        if artist.get_gid() != DATA_GID or not artist.get_visible():
            continue
        if hasattr(artist, "get_offsets"):
            xy.append(np.asarray(artist.get_offsets(), float))
        elif hasattr(artist, "get_xydata"):
            xy.append(np.asarray(artist.get_xydata(), float))
        elif isinstance(artist, Rectangle):
            (x0, y0), w, h = artist.get_xy(), artist.get_width(), artist.get_height()
            xy.append(np.array([[x0, y0], [x0 + w, y0], [x0, y0 + h], [x0 + w, y0 + h]], float))
    xy = [a for a in xy if a.size]
    return ax.transData.transform(np.vstack(xy)) if xy else np.empty((0, 2))


def place_legend(ax, handles=None, labels=None, ncol: int = 1, pad_pt: float = 4.0):
    """The legend inside the axes where it covers no data (lower right as in the paper, else another
    corner), else outside on the right."""
    args = (handles, labels) if handles is not None else ()
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    pts = data_display_points(ax)
    pad = pad_pt * fig.dpi / 72
    for loc in ("lower right", "upper left", "lower left", "upper right"):
        legend = ax.legend(*args, loc=loc, ncol=ncol)
        box = legend.get_window_extent(renderer).padded(pad)
        inside = (pts[:, 0] >= box.x0) & (pts[:, 0] <= box.x1) & (pts[:, 1] >= box.y0) & (pts[:, 1] <= box.y1)
        if not inside.any():
            return legend
        legend.remove()
    return ax.legend(*args, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, ncol=ncol)


def new_axes(size):
    style.apply_theme()
    return plt.subplots(figsize=size)


def save_figure(fig, points: pd.DataFrame, stem, formats=("pdf", "svg", "png"), dpi: int = 200) -> list[str]:
    """Figure files ``stem.{fmt}`` and ``stem.csv`` with exactly the drawn points."""
    paths = style.save(fig, str(stem), formats, dpi)
    write_csv(points, f"{stem}.csv")
    return paths + [f"{stem}.csv"]
