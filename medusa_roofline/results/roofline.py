"""Roofline drawing shared by every chart: roofs, ridge, axes fitted to the points, series of (OI, FLOP/s) dots,
and saving a figure beside the CSV of exactly its points."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..analytic.hardware import Hardware
from ..core.io import write_csv
from . import style

POINT_COLUMNS = [
    "series", "source", "model", "hardware", "device", "phase", "op", "candidates", "batch",
    "kv_len", "flops", "bytes", "oi", "flops_per_s", "provenance",
]
DEFAULT_XLIM = (0.5, 1e4)
DEFAULT_YLIM = (1e10, 1e15)


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


def draw_roofs(ax, hw: Hardware, xlim=DEFAULT_XLIM, linestyle="--", label_roofs: bool = True) -> None:
    """Dashed memory diagonal, compute ceiling and ridge line, labelled as in the paper."""
    x = np.logspace(np.log10(xlim[0]), np.log10(xlim[1]), 200)
    ax.plot(x, np.minimum(hw.bandwidth * x, hw.peak_flops * 10), linestyle, color="tab:blue", lw=1.2,
            label=style.bandwidth_label(hw.bandwidth) if label_roofs else None, zorder=1)
    ax.axhline(hw.peak_flops, linestyle=linestyle, color="tab:red", lw=1.2,
               label=style.flops_label(hw.peak_flops) if label_roofs else None, zorder=1)
    ax.axvline(hw.ridge, linestyle=linestyle, color="tab:green", lw=1.0,
               label=f"ridge {hw.ridge:,.0f} FLOP/B" if label_roofs else None, zorder=1)


def series_colors(points: pd.DataFrame) -> dict[str, object]:
    """Grey for AR series, the sequential palette over Medusa candidate counts."""
    medusa = points[points["phase"] == "medusa"][["series", "candidates"]].drop_duplicates()
    medusa = medusa.sort_values(["candidates", "series"])
    palette = style.sequential_palette(max(len(medusa), 1))
    colors = {s: palette[i] for i, s in enumerate(medusa["series"])}
    for s in points.loc[points["phase"] != "medusa", "series"].unique():
        colors[s] = style.AR_COLOR
    return colors


def series_order(points: pd.DataFrame) -> list[str]:
    firsts = points.drop_duplicates("series")
    key = firsts["phase"].map({"init": 0, "ar": 1, "medusa": 2})
    return list(firsts.assign(_k=key).sort_values(["_k", "candidates"], kind="stable")["series"])


def roofline_figure(points: pd.DataFrame, hw: Hardware, title: str, size=(6.0, 4.2),
                    xlim=DEFAULT_XLIM, ylim=DEFAULT_YLIM, marker_size: float = 18):
    """A log-log roofline with the hardware's roofs and one scatter series per `series` value."""
    style.apply_theme()
    fig, ax = plt.subplots(figsize=size)
    style.log_axes(ax, xlim, ylim)
    draw_roofs(ax, hw, xlim)
    colors = series_colors(points)
    for name in series_order(points):
        pts = points[points["series"] == name]
        ax.scatter(pts["oi"], pts["flops_per_s"], s=marker_size, color=colors[name], label=name,
                   edgecolor="white", linewidth=0.3, zorder=3)
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize="x-small", ncol=1)
    return fig


def _decade_floor(v: float) -> float:
    return 10 ** math.floor(math.log10(v))


def _decade_ceil(v: float) -> float:
    return 10 ** math.ceil(math.log10(v))


def data_limits(x, y, peaks=(), ridges=(), base_x=None, base_y=None):
    """Log limits (whole decades) covering the points, the roofs' peaks and ridges (and a base)."""
    xs = [v for v in list(np.asarray(x, float)) + list(ridges) if v > 0 and math.isfinite(v)]
    ys = [v for v in list(np.asarray(y, float)) + list(peaks) if v > 0 and math.isfinite(v)]
    def span(values, pad_lo, pad_hi, base, default):
        if not values:
            return base or default
        lo, hi = min(values), max(values)
        if base is not None and base[0] <= lo and hi <= base[1]:
            return base  # the paper's axes when everything fits
        lo, hi = lo / pad_lo, hi * pad_hi
        if base is not None:
            lo, hi = min(lo, base[0]), max(hi, base[1])
        return _decade_floor(lo), _decade_ceil(hi)

    return span(xs, 2, 4, base_x, (0.5, 1e4)), span(ys, 3, 3, base_y, (1e10, 1e15))


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


def scatter_series(ax, points, colors, order=None, x="oi", y="flops_per_s", marker_size=18, markers=None):
    for name in order or list(dict.fromkeys(points["series"])):
        pts = points[points["series"] == name]
        ax.scatter(pts[x], pts[y], s=marker_size, color=colors[name], label=name, marker=(markers or {}).get(name, "o"),
                   edgecolor="white", linewidth=0.3, zorder=3)


def new_axes(size):
    style.apply_theme()
    return plt.subplots(figsize=size)


def save_figure(fig, points: pd.DataFrame, stem, formats=("pdf", "svg", "png"), dpi: int = 200) -> list[str]:
    """Figure files ``stem.{fmt}`` and ``stem.csv`` with exactly the drawn points."""
    paths = style.save(fig, str(stem), formats, dpi)
    write_csv(points, f"{stem}.csv")
    return paths + [f"{stem}.csv"]
