"""One look for every figure: seaborn theme, palettes, and the paper's label formats."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

AR_COLOR = "0.45"
AR_MARKER = "o"
CANDIDATE_MARKERS = ("s", "D", "^", "v", "P", "X", "p", "h", "<", ">", "d", "*")
"""One shape per candidate count (AR keeps the circle): with the palette's lightness steps, series stay
apart in greyscale and for colour-blind readers, not only in colour."""
EDGE_SHADE = 0.6
"""Filled markers get an edge of their own colour darkened to this fraction: pale colours stay visible on
white paper and in print, and layered markers keep their colours (a black edge would swamp them)."""
LEGEND_PT = 7.0
"""Legend and annotation text size in points (never smaller at the default figure size)."""
SI = [(1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, "")]


def apply_theme(font_scale: float = 0.8) -> None:
    sns.set_theme(context="paper", style="whitegrid", font_scale=font_scale)
    plt.rcParams.update({
        "svg.hashsalt": "medusa-roofline",  # deterministic SVG ids
        "svg.fonttype": "none",
        "pdf.fonttype": 42,
        "axes.titleweight": "bold",
        # titles sit at the top of their axes: nothing (tick labels, an x label) is drawn above any of our axes,
        # so matplotlib's automatic title placement, which measures every tick label of every axes on each
        # draw, has nothing to move them for (a third of a figure's save time)
        "axes.titley": 1.0,
        "legend.frameon": True,
        "legend.framealpha": 0.9,
        "legend.fontsize": LEGEND_PT,
        "legend.title_fontsize": LEGEND_PT,
    })


def si(value: float, digits: int = 3) -> str:
    """1e12 -> '1T', 3.12e14 -> '312T', 1000 -> '1k'."""
    for scale, suffix in SI:
        if abs(value) >= scale:
            return f"{value / scale:.{digits}g}{suffix}"
    return f"{value:.{digits}g}"


def bandwidth_label(bytes_per_s: float) -> str:
    """1.935e12 -> '1,935GB/s' (the paper's style)."""
    return f"{bytes_per_s / 1e9:,.0f}GB/s"


def flops_label(flops_per_s: float) -> str:
    """312e12 -> '312 TFLOP/s', 149.7e12 -> '149.7 TFLOP/s'."""
    return f"{flops_per_s / 1e12:,.4g} TFLOP/s"


def sequential_palette(n: int) -> list:
    """Orange (fewest candidates) through pink to indigo (most), as in the paper.

    plasma is perceptually uniform and its lightness falls monotonically, so the order survives
    greyscale and colour-vision deficiencies; its palest yellow is skipped (invisible on white)."""
    if n == 1:
        return [sns.color_palette("plasma", 8)[5]]
    return sns.color_palette("plasma_r", n + 3)[2 : n + 2]


def edge_color(color) -> tuple[float, float, float]:
    """``color`` darkened to :data:`EDGE_SHADE` (the edge of a filled marker of that colour)."""
    return tuple(EDGE_SHADE * c for c in to_rgb(color))


def candidate_marker(index: int) -> str:
    """The marker of the ``index``-th candidate count (0 = fewest), cycling through the shapes."""
    return CANDIDATE_MARKERS[index % len(CANDIDATE_MARKERS)]


def log_axes(ax, xlim: tuple[float, float], ylim: tuple[float, float]) -> None:
    """Log-log axes with SI tick labels: 1, 10, 100, 1k, 10k and 10G ... 100T."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(LogLocator(base=10, numticks=20))
        axis.set_major_formatter(FuncFormatter(lambda v, _: si(v)))
        axis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("Operational Intensity (FLOP/Byte)")
    ax.set_ylabel("Performance (FLOP/s)")


def save(fig, stem, formats=("pdf", "svg", "png"), dpi: int = 200) -> list[str]:
    """Save one figure in several formats without timestamps, so reruns are reproducible."""
    paths = []
    for fmt in formats:
        path = f"{stem}.{fmt}"
        metadata = {"png": {"Software": None}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}[fmt]
        fig.savefig(path, dpi=dpi, bbox_inches="tight", metadata=metadata)
        paths.append(path)
    plt.close(fig)
    return paths
