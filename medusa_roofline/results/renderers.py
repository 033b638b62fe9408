"""The renderers of the figure kinds (:data:`.render.KINDS`): each reads its input files, calls one drawing
function and returns ``(fig, points)``. Only :mod:`.render` calls them (one rendering path); the drawing
modules (matplotlib, seaborn) are imported inside the renderers, so the Snakefile can read the registry
at parse time without them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from ..analytic.hardware import detect_hardware, load_ceilings, load_table, parse_entry
from ..analytic.predict import datasheet_calibration, measured_calibration
from ..analytic.table import analytic_provenance
from ..core.errors import ConfigError
from ..decoding.tree import load_acceptance_table
from ..models.source import dims_from_config
from .paper_table import load_paper_table
from .speedup import ASSUMPTION, REAL, acceptance_source, analytic_speedup, measured_speedup

log = logging.getLogger("medusa_roofline.render")


def _size(params: dict) -> tuple[float, float]:
    return (params["plot"]["width"], params["plot"]["height"])


def _hardware(params: dict):
    entry = params["hardware"]
    return parse_entry(entry["key"], entry)


def model_dims_file(path: str | Path):
    """ModelDims from a ``config.json`` file (the shapes only: no weights, no transformers)."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"model config {path}: cannot read: {err}") from None
    return dims_from_config(raw, str(path))


def _datasheet_and_title(inputs: dict, params: dict, ceilings: dict):
    datasheet = detect_hardware(load_table(inputs["hardware_table"]), ceilings["device_name"])
    where = datasheet.display_name if datasheet is not None else ceilings["device_name"]
    return datasheet, f"{params['model_display']}, {where} (measured)"


def _paper(inputs: dict):
    """The published chart's read-off table when the figure draws the paper layer, else None."""
    return load_paper_table(inputs["paper"]) if "paper" in inputs else None


# ------------------------------------------------------------------------------------ renderers


def qkpv_medusa(inputs: dict, params: dict):
    from . import roofline

    hw = _hardware(params)
    table = pd.read_csv(inputs["table"])
    points = roofline.qkpv_points(table, params["attention"], provenance=analytic_provenance())
    return roofline.roofline_figure(points, hw, params["title"], size=_size(params), paper=_paper(inputs))


def all_ops(inputs: dict, params: dict):
    from . import figures_analytic

    table = pd.read_csv(inputs["table"])
    return figures_analytic.all_ops(table, _hardware(params), params["title"], _size(params), params["attention"])


def mlp_spec(inputs: dict, params: dict):
    from . import figures_analytic

    return figures_analytic.mlp_spec(pd.read_csv(inputs["table"]), _hardware(params), params["title"], _size(params))


def speedup(inputs: dict, params: dict):
    from . import figures_measured

    hw = _hardware(params)
    s = params["speedup"]
    cal = datasheet_calibration(hw, params["per_launch_s"])
    points = analytic_speedup(
        params["model"],
        model_dims_file(inputs["model_config"]),
        load_acceptance_table(inputs["acceptance"]),
        cal,
        params["dtype"],
        s["batch"],
        s["kv_len"],
        range(1, s["max_candidates"] + 1),
        hardware=hw.key,
        medusa_heads=params["medusa_heads"],
        fused=params["attention"] == "fused",
        provenance=f"{analytic_provenance()}; {cal.source}; {ASSUMPTION}",
        trees=s.get("trees") or {},  # absent from recipes written before tree files existed
    )
    return figures_measured.speedup_figure(
        points,
        params["title"],
        f"analytic roofline ({hw.display_name} datasheet), batch {s['batch']}, {params['dtype']}, "
        f"heads on {params['medusa_heads']} tokens",
        _size(params),
    )


def qkpv_medusa_measured(inputs: dict, params: dict):
    from . import figures_measured

    metrics = pd.read_csv(inputs["metrics"])
    ceilings = load_ceilings(inputs["ceilings"])
    datasheet, title = _datasheet_and_title(inputs, params, ceilings)
    return figures_measured.qkpv_medusa_measured(metrics, ceilings, datasheet, title, _size(params),
                                                 paper=_paper(inputs))


def qkpv_backends(inputs: dict, params: dict):
    from . import figures_measured

    metrics = pd.read_csv(inputs["metrics"])
    ceilings = load_ceilings(inputs["ceilings"])
    datasheet, title = _datasheet_and_title(inputs, params, ceilings)
    return figures_measured.qkpv_backends(metrics, ceilings, datasheet, f"{title}: eager vs fused attention", _size(params))


def measured_vs_analytic(inputs: dict, params: dict):
    from . import figures_measured

    metrics = pd.read_csv(inputs["metrics"])
    ceilings = load_ceilings(inputs["ceilings"])
    datasheet, title = _datasheet_and_title(inputs, params, ceilings)
    hardware = datasheet.key if datasheet is not None else ""
    return figures_measured.measured_vs_analytic(metrics, title, _size(params), hardware=hardware)


def speedup_measured(inputs: dict, params: dict):
    from . import figures_measured

    metrics = pd.read_csv(inputs["metrics"])
    ceilings = load_ceilings(inputs["ceilings"])
    datasheet, title = _datasheet_and_title(inputs, params, ceilings)
    hardware = datasheet.key if datasheet is not None else ""
    dims = model_dims_file(inputs["model_config"])
    table = load_acceptance_table(inputs["acceptance"])
    label = acceptance_source(inputs["acceptance"])
    generation = pd.read_csv(inputs["generation"]) if inputs.get("generation") else None
    measured = measured_speedup(metrics, table, dims.layers, None, hardware, acceptance=label, generation=generation,
                                trees=params.get("trees") or {})
    batch = params["batch"]
    if len(measured) and batch not in set(measured["batch"]):
        batch = int(measured["batch"].max())
        log.warning("speedup.batch %s was not measured; using batch %s", params["batch"], batch)
    measured = measured[measured["batch"] == batch].reset_index(drop=True)
    if measured.empty:
        log.warning("no (ar, medusa-N) step pair measured: the figure is empty")
    dtype = metrics["dtype"].iloc[0] if len(metrics) else "float16"
    cal = measured_calibration(ceilings, dtype)
    overlay = analytic_speedup(
        params["model"],
        dims,
        table,
        cal,
        dtype,
        batch,
        sorted(measured["kv_len"].unique()),
        range(1, int(measured["candidates"].max()) + 1) if len(measured) else [],
        hardware=hardware,
        device=str(measured["device"].iloc[0]) if len(measured) else "",
        medusa_heads=params["medusa_heads"],
        provenance=f"{analytic_provenance()} at measured roofs; {cal.source}; acceptance: {label}; {ASSUMPTION}",
    )
    overlay["series"] = overlay["series"] + f" (analytic, measured roofs, {label})"
    overlay["acceptance"] = label
    sources = label + (f" and {REAL}" if generation is not None else "")
    return figures_measured.speedup_figure(
        pd.concat([df for df in (measured, overlay) if len(df)] or [measured], ignore_index=True),
        title,
        f"measured step latency x {sources} (markers; bars: the step times' p10-p90) vs analytic roofline at "
        f"the measured roofs (dashed), batch {batch}, {dtype}",
        _size(params),
    )


def prediction(inputs: dict, params: dict):
    from . import figures_measured

    prediction = pd.read_csv(inputs["prediction"])
    ceilings = load_ceilings(inputs["ceilings"])
    _, title = _datasheet_and_title(inputs, params, ceilings)
    return figures_measured.prediction_figure(prediction, f"{title}: predicted vs measured time", _size(params))


def best_tree(inputs: dict, params: dict):
    from . import figures_analytic

    table = pd.read_csv(inputs["best_tree"])
    return figures_analytic.best_tree_figure(table, f"{params['model_display']}: best Medusa tree size",
                                             _size(params))
