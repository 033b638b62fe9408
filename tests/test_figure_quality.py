"""Every figure kind is fit for a paper: every series the chart lists can be seen, every roof lies inside
the axes with room to spare, legend text is legible, labels do not sit on arrows.

Each kind of render.KINDS is rendered from small real inputs (the shipped model configs, hardware table
and acceptance table; measured rows at times a roofline allows) through the one rendering path.
"Visible" is measured on the drawn pixels: hiding a series' artists must change enough pixels, strongly
enough, so a series drawn under another series, under the legend or outside the axes fails.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.patches import Rectangle

from medusa_roofline.analytic.hardware import load_table
from medusa_roofline.analytic.predict import datasheet_calibration, measured_calibration
from medusa_roofline.analytic.table import analytic_table
from medusa_roofline.core.io import write_csv, write_json
from medusa_roofline.decoding.tree import load_acceptance_table, tree_paths_for
from medusa_roofline.models.source import model_dims
from medusa_roofline.results import render, roofline
from medusa_roofline.results.best_tree import best_tree_table
from medusa_roofline.results.metrics import compute_metrics
from medusa_roofline.results.prediction import prediction_table

REPO = Path(__file__).resolve().parent.parent
HARDWARE_TABLE = REPO / "config" / "hardware.yaml"
ACCEPTANCE = REPO / "config" / "acceptance" / "default.csv"
PAPER_TABLE = REPO / "config" / "paper" / "qkpv_llama-33b_a100-80gb-pcie.yaml"
PLOT = {"formats": ["png"], "dpi": 100, "width": 6.0, "height": 4.2}  # the default figure size
CANDIDATES = [16, 32, 48, 64, 80, 96, 112]
CEILINGS = {"device": "cpu", "device_name": "Test CPU", "bandwidth_bytes_per_s": 3e10, "peak_flops_per_s": 1.5e11,
            "bandwidth_kind": "read", "matmul": {"float32": {"median": 1.5e11}}, "per_launch_s": 2e-6}
LAYER = ["q_proj", "k_proj", "v_proj", "o_proj", "qk", "softmax", "pv", "gate_proj", "up_proj", "down_proj"]
STRONG = 60  # a pixel changes when a channel moves by more than this (of 255)
MIN_PIXELS = 8  # a series is visible when hiding it changes at least this many pixels (100 dpi)


def hardware_entry(key: str) -> dict:
    hw = load_table(HARDWARE_TABLE)[key]
    return {"key": hw.key, "display_name": hw.display_name, "bandwidth": hw.bandwidth,
            "peak_flops": hw.peak_flops, "source": hw.source}


def measured_rows(dims) -> pd.DataFrame:
    """Sweep and micro-benchmark rows (eager, sdpa, flex) of the tiny model, batch 1 and 2."""
    rows = []
    for mode, phase, q in [("ar", "ar", 1)] + [(f"medusa-{n}", "medusa", n) for n in (16, 32, 64)]:
        ops = LAYER + ["lm_head"] + (["medusa_heads"] if phase == "medusa" else []) + ["step"]
        for b in (1, 2):
            for s in (64, 256):
                base = {"model": "tiny", "device": "cpu", "device_name": "Test CPU", "mode": mode, "phase": phase,
                        "candidates": q, "batch": b, "kv_len": s, "q_len": q, "keys": s + q, "dtype": "float32",
                        "status": "ok", "torch": "2.x", "transformers": "5.x", "cuda": "", "git_commit": "0" * 16}
                rows += [dict(base, bench="sweep", op=op, layers=dims.layers, attention_backend="eager") for op in ops]
                rows += [dict(base, bench="microbench", op=op, layers=0, attention_backend="eager")
                         for op in ("qk", "softmax", "pv")]
                rows += [dict(base, bench="microbench", op="attn", layers=0, attention_backend=be, kernel="k")
                         for be in ("sdpa", "flex")]
    return pd.DataFrame(rows)


def measured_metrics(dims) -> pd.DataFrame:
    """Metrics whose times sit 1.2x ... 6x above the roofline's (deterministic, all distinct), as a real run's do."""
    rows = measured_rows(dims).assign(time_s_median=1.0)
    bound = compute_metrics(rows, {"tiny": dims}, CEILINGS, None)
    moved = bound["bytes_moved"].where(bound["bytes_moved"].notna(), bound["bytes_counted"])
    floor = np.maximum(bound["flops"] / CEILINGS["peak_flops_per_s"], moved / CEILINGS["bandwidth_bytes_per_s"])
    spread = (np.arange(len(rows)) * 0.6180339887) % 1.0  # low-discrepancy: every row its own time
    rows["time_s_median"] = floor.to_numpy() * (1.2 + 4.8 * spread)
    return compute_metrics(rows, {"tiny": dims}, CEILINGS, None)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Input files of every kind: analytic tables (Llama 33B on several GPUs), metrics, ceilings."""
    work = tmp_path_factory.mktemp("inputs")
    table = load_table(HARDWARE_TABLE)
    dims = model_dims("llama-33b")
    files = {}
    for key in ("a100-80gb-pcie", "h100-sxm", "b200", "mi300x"):
        for attention in ("unfused", "fused"):
            path = work / f"analytic-{key}-{attention}.csv"
            write_csv(analytic_table("llama-33b", dims, table[key], "float16", CANDIDATES, [1, 2, 4, 8, 16],
                                     [128, 512, 2048, 8192], attention), path)
            files[key, attention] = str(path)
    write_csv(measured_metrics(model_dims("tiny")), work / "metrics.csv")
    write_json(CEILINGS, work / "ceilings.json")
    files["measured"] = {"metrics": str(work / "metrics.csv"), "ceilings": str(work / "ceilings.json"),
                         "hardware_table": str(HARDWARE_TABLE)}
    metrics = pd.read_csv(work / "metrics.csv")
    cal = measured_calibration(dict(CEILINGS, per_launch_s=2e-6), "float32")
    write_csv(prediction_table(metrics, model_dims("tiny"), [cal], num_heads=4), work / "prediction.csv")
    acceptance = load_acceptance_table(ACCEPTANCE)
    write_csv(pd.concat([best_tree_table("llama-7b", model_dims("llama-7b"), acceptance, datasheet_calibration(table[k]),
                                         "float16", [1, 4, 16, 64], [128, 2048], 128, tree_paths_for(64, acceptance),
                                         k, table[k].display_name) for k in ("a100-80gb-pcie", "h100-sxm")]),
              work / "best_tree.csv")
    files["prediction"], files["best_tree"] = str(work / "prediction.csv"), str(work / "best_tree.csv")
    return files


def job(kind: str, files, hardware: str = "a100-80gb-pcie", paper: bool = True):
    """(inputs, params) of ``kind`` as the workflow's rules give them."""
    spec = render.KINDS[kind]
    attention = spec.attention or "unfused"
    measured = {"model_display": "Tiny Llama", "plot": PLOT}
    if spec.rule == "analytic":
        inputs = {"table": files[hardware, attention]}
        if paper and render.PAPER_ROLE in spec.optional:
            inputs[render.PAPER_ROLE] = str(PAPER_TABLE)
        return inputs, {"hardware": hardware_entry(hardware), "title": "Llama 33B", "dtype": "float16",
                        "attention": attention, "plot": PLOT}
    if spec.rule == "speedup":
        return ({"model_config": str(REPO / "config/models/llama-7b/config.json"), "acceptance": str(ACCEPTANCE)},
                {"hardware": hardware_entry(hardware), "title": "Llama 7B", "dtype": "float16", "attention": attention,
                 "model": "llama-7b", "speedup": {"batch": 4, "kv_len": [128, 512, 2048, 8192], "max_candidates": 112},
                 "medusa_heads": "tree", "per_launch_s": 3e-6, "plot": PLOT})
    if spec.rule == "best_tree":
        return {"best_tree": files["best_tree"]}, {"model_display": "Llama 7B", "plot": PLOT}
    inputs = dict(files["measured"])
    if kind == "speedup_measured":
        inputs.update(acceptance=str(ACCEPTANCE), model_config=str(REPO / "config/models/tiny/config.json"))
        return inputs, dict(measured, model="tiny", batch=2, medusa_heads="tree")
    if "prediction" in spec.roles:
        inputs["prediction"] = files["prediction"]
    if paper and render.PAPER_ROLE in spec.optional:
        inputs[render.PAPER_ROLE] = str(PAPER_TABLE)
    return inputs, measured


# ------------------------------------------------------------------------------------ pixel helpers


def pixels(fig) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(int)


def ink(fig, artists, base=None) -> np.ndarray:
    """The pixels that ``artists`` change, strongly (a boolean mask)."""
    base = pixels(fig) if base is None else base
    for a in artists:
        a.set_visible(False)
    hidden = pixels(fig)
    for a in artists:
        a.set_visible(True)
    return np.abs(base - hidden).max(axis=2) > STRONG


def series_artists(ax) -> dict[str, list]:
    """Every labelled data artist, by label: scatters, lines and the paper boxes (one label for all)."""
    out: dict[str, list] = {}
    for a in ax.collections + ax.lines:
        if a.get_gid() == roofline.DATA_GID and not a.get_label().startswith("_"):
            out.setdefault(a.get_label(), []).append(a)
    boxes = [p for p in ax.patches if isinstance(p, Rectangle) and p.get_gid() == roofline.DATA_GID]
    if boxes:
        out[roofline.PAPER_SERIES] = boxes
    return out


def covered_markers(ax, group, shown: np.ndarray, least: int = 3) -> tuple[list[tuple[float, float]], int]:
    """Data positions of the markers of ``group`` (scatters) inside the axes of which fewer than ``least``
    pixels within the marker's extent show (covered by other series, the legend or a label), and how
    many markers lie inside the axes. Markers of one series may cover each other."""
    height = shown.shape[0]
    x0, x1 = sorted(ax.get_xlim())
    y0, y1 = sorted(ax.get_ylim())
    out, total = [], 0
    for artist in group:
        if not hasattr(artist, "get_offsets"):
            continue
        side_pt = math.sqrt(float(np.max(artist.get_sizes())))
        extent_pt = side_pt / 2 * math.sqrt(2) + float(np.max(artist.get_linewidths()))
        radius = max(2.0, extent_pt * ax.figure.dpi / 72)  # the whole marker, outline and square corners included
        r = int(math.ceil(radius))
        dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
        disc = dx**2 + dy**2 <= radius**2
        for (x, y), (px, py) in zip(artist.get_offsets(), ax.transData.transform(artist.get_offsets())):
            if not (x0 <= x <= x1 and y0 <= y <= y1):
                continue
            total += 1
            row, col = int(round(height - py)), int(round(px))  # buffer rows run top-down
            window = np.pad(shown, r)[row : row + 2 * r + 1, col : col + 2 * r + 1]
            if int((window & disc).sum()) < least:
                out.append((float(x), float(y)))
    return out, total


def horizontal_and_vertical_lines(ax):
    """(y of every axhline, x of every axvline): the compute roofs and ridges."""
    ys = [ln.get_ydata()[0] for ln in ax.lines if list(ln.get_xdata()) == [0, 1] and len(set(ln.get_ydata())) == 1]
    xs = [ln.get_xdata()[0] for ln in ax.lines if list(ln.get_ydata()) == [0, 1] and len(set(ln.get_xdata())) == 1]
    return ys, xs


def inside(value: float, lim, log: bool) -> bool:
    """``value`` inside ``lim`` with a margin (a factor of 1.2 on log axes, 2 % of the span on linear ones)."""
    lo, hi = sorted(lim)
    if log:
        return lo * 1.2 <= value <= hi / 1.2
    pad = 0.02 * (hi - lo)
    return lo + pad <= value <= hi - pad


def check_figure(kind: str, fig, points: pd.DataFrame) -> None:
    ax = fig.axes[0]
    x, y = render.KINDS[kind].x, render.KINDS[kind].y
    log = ax.get_xscale() == "log"
    # legible legend
    legend = ax.get_legend()
    assert legend is not None, f"{kind}: no legend"
    sizes = {t.get_text(): t.get_fontsize() for t in legend.get_texts()}
    assert min(sizes.values()) >= 7, f"{kind}: legend text below 7 pt: {sizes}"
    # every series has a point inside the axes ...
    markers = points[points["source"] != roofline.PAPER_SOURCE] if "source" in points.columns else points
    artists = series_artists(ax)
    assert set(markers["series"]) <= set(artists), f"{kind}: series without an artist"
    for name, pts in markers.groupby("series"):
        xs, ys = pts[x].to_numpy(float), pts[y].to_numpy(float)
        ok = ((xs >= min(ax.get_xlim())) & (xs <= max(ax.get_xlim())) & (ys >= min(ax.get_ylim()))
              & (ys <= max(ax.get_ylim())))
        assert ok.any(), f"{kind}: no point of {name!r} inside the axes"
    # ... and can be seen: hiding it changes the picture, and no marker of it is fully covered
    base = pixels(fig)
    for name, group in artists.items():
        shown = ink(fig, group, base)
        assert shown.sum() >= MIN_PIXELS, f"{kind}: series {name!r} is hidden ({shown.sum()} pixels show it)"
        hidden, total = covered_markers(ax, group, shown)
        if render.KINDS[kind].rule == "measured":  # data decide how crowded: at least one marker must show
            assert len(hidden) < total or not total, f"{kind}: every marker of {name!r} is fully covered"
        else:  # the paper's analytic charts: every marker shows
            assert not hidden, f"{kind}: {len(hidden)} marker(s) of {name!r} fully covered, e.g. at {hidden[0]}"
    # every roof inside the axes with room to spare
    ys, xs = horizontal_and_vertical_lines(ax)
    for value in ys:
        assert inside(value, ax.get_ylim(), ax.get_yscale() == "log"), \
            f"{kind}: roof at y={value:g} outside {ax.get_ylim()}"
    for value in xs:
        assert inside(value, ax.get_xlim(), log), f"{kind}: ridge at x={value:g} outside {ax.get_xlim()}"
    # labels never sit on an arrow
    arrows = [a for a in ax.texts if getattr(a, "arrow_patch", None) is not None]
    labels = [t for t in ax.texts if getattr(t, "arrow_patch", None) is None and t.get_text()]
    for arrow in arrows:
        for label in labels:
            overlap = ink(fig, [arrow], base) & ink(fig, [label], base)
            assert not overlap.any(), f"{kind}: label {label.get_text()!r} overlaps an arrow"


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(render.KINDS))
def test_every_series_is_visible_and_every_roof_inside(kind, inputs, tmp_path):
    kind_inputs, params = job(kind, inputs)
    with contextlib.chdir(tmp_path):
        fig, points = render.render(kind, kind_inputs, render.plain(params))
    try:
        check_figure(kind, fig, points)
    finally:
        plt.close(fig)


@pytest.mark.parametrize("hardware", ["h100-sxm", "b200", "mi300x"])
@pytest.mark.parametrize("kind", ["qkpv_medusa", "all_ops", "mlp_spec"])
def test_axes_hold_the_roofs_of_every_gpu(kind, hardware, inputs):
    """The 989 TFLOP/s H100 roof and the B200/MI300X roofs lie inside the axes, not on or off the frame."""
    kind_inputs, params = job(kind, inputs, hardware, paper=False)
    fig, points = render.render(kind, kind_inputs, render.plain(params))
    ax = fig.axes[0]
    hw = hardware_entry(hardware)
    assert inside(hw["peak_flops"], ax.get_ylim(), True)
    assert inside(hw["peak_flops"] / hw["bandwidth"], ax.get_xlim(), True)
    assert ax.get_ylim()[1] <= hw["peak_flops"] * 10, "no more than a decade of empty room above the roof"
    plt.close(fig)


def test_the_paper_layer_draws_the_shipped_ranges(inputs):
    """On the A100 PCIe qk/pv chart: one translucent box per read-off range, in the points CSV too."""
    kind_inputs, params = job("qkpv_medusa", inputs)
    fig, points = render.render("qkpv_medusa", kind_inputs, render.plain(params))
    boxes = points[points["source"] == roofline.PAPER_SOURCE]
    drawn = [p for p in fig.axes[0].patches if p.get_gid() == roofline.DATA_GID]
    assert len(boxes) == len(drawn) == 8
    for (_, row), patch in zip(boxes.iterrows(), drawn):
        (x0, y0), w, h = patch.get_xy(), patch.get_width(), patch.get_height()
        assert (x0, x0 + w, y0, y0 + h) == pytest.approx(tuple(row[c] for c in roofline.BOX_COLUMNS))
        assert 0 < patch.get_facecolor()[3] < 0.5  # translucent
    assert boxes["series"].eq("paper (read off the figure)").all() and boxes["oi"].isna().all()
    medusa16 = boxes[(boxes["phase"] == "medusa") & (boxes["candidates"] == 16)].iloc[0]
    assert (medusa16["oi_low"], medusa16["oi_high"], medusa16["flops_per_s_high"]) == (13, 15, 20e12)
    analytic = points[points["source"] == "analytic"]
    assert analytic["batch"].notna().all() and str(analytic["batch"].dtype) == "Int64"  # ints stay ints
    assert math.isclose(boxes["flops_per_s_low"].min(), 0.4e12)
    plt.close(fig)
