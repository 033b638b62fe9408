"""One rendering path for every figure: ``render(kind, inputs, params) -> (fig, points)``.

The Snakemake script of every figure rule (``scripts/figure.py``) and
``python -m medusa_roofline regenerate`` both call :func:`render`, so a figure rebuilt from an
archive goes through exactly the code that drew it in the workflow.

* ``inputs`` — the files a figure is drawn from, by role (:data:`KINDS` lists the roles of each
  kind): ``table`` (analytic table), ``metrics``, ``ceilings``, ``hardware_table``, ``acceptance``,
  ``model_config`` (a model's ``config.json``: the shapes, never weights), ``prediction`` (a
  prediction-error table), ``best_tree`` (a model's best-tree tables, every GPU), and the optional
  ``paper`` (the published chart's read-off table: the qk/pv charts draw its boxes when it is given) and
  ``generation`` (real Medusa generation's tokens per step, :mod:`..decoding.acceptance`).
* ``params`` — plain JSON values: ``title`` / ``model_display``, ``hardware`` (one datasheet entry
  of the hardware table), ``model`` (the name used in the points), ``dtype``, ``attention``,
  ``speedup`` / ``batch``, ``medusa_heads`` and ``per_launch_s`` (the step definition and the
  datasheet per-launch cost), and ``plot`` (``formats``, ``dpi``, ``width``, ``height``).

The Snakefile reads :data:`KINDS` when it is parsed (which figures exist, which rule draws them), so
the drawing modules (matplotlib, seaborn) are imported only inside the renderers (:mod:`.renderers`).

Beside every figure the workflow writes ``{stem}.recipe.json`` (:func:`make_recipe`): the kind,
the input paths as read (relative to the working directory when inside it) and the params, so
:func:`render_recipe` can redraw the figure and its points CSV from the recipe alone.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from .. import __version__
from ..core.errors import ConfigError, IntegrityError
from ..core.io import write_json
from ..core.paths import contained
from . import renderers

log = logging.getLogger("medusa_roofline.render")

RECIPE_SUFFIX = ".recipe.json"
RECIPE_VERSION = 1


# ------------------------------------------------------------------------------------ helpers


def plain(value):
    """``value`` as plain JSON data (dicts, lists, str, numbers, bool, None): what a recipe can hold.

    The workflow renders from this round-tripped form too, so a figure regenerated from its recipe
    sees exactly the values the workflow saw."""
    if hasattr(value, "items") and not isinstance(value, dict):
        value = dict(value.items())
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"figure params must be plain JSON values (a recipe records them): {err}") from None




@dataclass(frozen=True)
class FigureKind:
    """A figure kind: the rule that draws it, where its targets are (``targets``: analytic, speedup, measured,
    swept or fused pairs), the input roles it needs and may take (``optional``), extra params, its markers'
    point columns, its renderer, and the ``analytic.attention`` it is for (None: either; a kind that depends
    on it has one name per value, so a fused chart never overwrites an unfused one)."""

    rule: str
    targets: str
    roles: tuple[str, ...]
    x: str
    y: str
    draw: Callable
    params: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    attention: str | None = None


MEASURED_ROLES = ("metrics", "ceilings", "hardware_table")
SPEEDUP_ROLES = ("model_config", "acceptance")
PAPER_ROLE = "paper"


def _analytic(draw: Callable, attention: str | None = None, optional: tuple[str, ...] = ()) -> FigureKind:
    return FigureKind("analytic", "analytic", ("table",), "oi", "flops_per_s", draw, optional=optional,
                      attention=attention)


KINDS: dict[str, FigureKind] = {
    "qkpv_medusa": _analytic(renderers.qkpv_medusa, "unfused", (PAPER_ROLE,)),
    "qkpv_medusa_fused": _analytic(renderers.qkpv_medusa, "fused", (PAPER_ROLE,)),
    "all_ops": _analytic(renderers.all_ops, "unfused"),
    "all_ops_fused": _analytic(renderers.all_ops, "fused"),
    "mlp_spec": _analytic(renderers.mlp_spec),  # linears only: the same under either attention
    "speedup": FigureKind("speedup", "speedup", SPEEDUP_ROLES, "candidates", "speedup", renderers.speedup,
                          attention="unfused"),
    "speedup_fused": FigureKind("speedup", "speedup", SPEEDUP_ROLES, "candidates", "speedup", renderers.speedup,
                                attention="fused"),
    "qkpv_medusa_measured": FigureKind("measured", "measured", MEASURED_ROLES, "oi", "flops_per_s",
                                       renderers.qkpv_medusa_measured, optional=(PAPER_ROLE,)),
    "measured_vs_analytic": FigureKind("measured", "measured", MEASURED_ROLES, "bound_flops_per_s", "flops_per_s",
                                       renderers.measured_vs_analytic),
    "speedup_measured": FigureKind("measured", "swept", MEASURED_ROLES + ("acceptance", "model_config"),
                                   "candidates", "speedup", renderers.speedup_measured,
                                   params=("batch", "medusa_heads", "trees"),
                                   optional=("generation",)),
    "qkpv_backends": FigureKind("measured", "fused", MEASURED_ROLES, "oi", "flops_per_s", renderers.qkpv_backends),
    "prediction": FigureKind("measured", "measured", MEASURED_ROLES + ("prediction",), "predicted_s", "time_s_median",
                             renderers.prediction),
    "best_tree": FigureKind("best_tree", "best_tree", ("best_tree",), "batch", "best_candidates", renderers.best_tree),
}
"""Every figure kind. Adding one: its drawing function (figures_*.py), a renderer (renderers.py) and its entry."""


def rule_kinds(rule: str, attention: str) -> list[str]:
    """The kinds a figure rule draws under ``analytic.attention`` = ``attention`` (its ``figure`` wildcard's values)."""
    return [name for name, kind in KINDS.items() if kind.rule == rule and kind.attention in (None, attention)]


def render(kind: str, inputs: dict[str, str], params: dict):
    """Draw one figure of ``kind`` from its input files and params; returns ``(fig, points)``."""
    if kind not in KINDS:
        raise ConfigError(f"figure kind {kind!r} is unknown; known kinds: {', '.join(KINDS)}")
    spec = KINDS[kind]
    missing = [role for role in spec.roles if role not in inputs]
    if missing:
        raise ConfigError(f"figure {kind}: input(s) {', '.join(missing)} missing (needs {', '.join(spec.roles)})")
    return spec.draw(inputs, params)


# ------------------------------------------------------------------------------------- recipes


def recorded_path(path: str | Path, cwd: str | Path | None = None) -> str:
    """A path as a recipe records it: relative to ``cwd`` when inside it, else absolute (POSIX form)."""
    cwd = Path(os.getcwd() if cwd is None else cwd).resolve()
    p = Path(path)
    absolute = Path(os.path.normpath(p if p.is_absolute() else cwd / p))
    try:
        return absolute.relative_to(cwd).as_posix()
    except ValueError:
        return absolute.as_posix()


def make_recipe(kind: str, inputs: dict[str, str], params: dict, stem: str | Path,
                cwd: str | Path | None = None) -> dict:
    """What redraws a figure: kind, inputs (as :func:`recorded_path`), params and where it was written."""
    params = plain(params)
    formats = list(params.get("plot", {}).get("formats", []))
    stem = recorded_path(stem, cwd)
    return {
        "recipe_version": RECIPE_VERSION,
        "kind": kind,
        "inputs": {role: recorded_path(path, cwd) for role, path in sorted(inputs.items())},
        "params": params,
        "outputs": {"figures": [f"{stem}.{fmt}" for fmt in formats], "points": f"{stem}.csv"},
        "medusa_roofline": __version__,
    }


def write_figure(fig, points: pd.DataFrame, stem: str | Path, params: dict) -> list[str]:
    """``stem.{formats}`` and ``stem.csv`` (exactly the drawn points), as the plot params say."""
    plot = params["plot"]
    Path(stem).parent.mkdir(parents=True, exist_ok=True)
    from .roofline import save_figure

    return save_figure(fig, points, stem, plot["formats"], plot["dpi"])


def figure_inputs(kind: str, named) -> dict[str, str]:
    """A job's named inputs that are figure inputs of ``kind`` (not e.g. the ``code`` modules)."""
    roles = KINDS[kind].roles + KINDS[kind].optional if kind in KINDS else ()
    return {role: str(path) for role, path in dict(named.items()).items()
            if role in roles and isinstance(path, (str, os.PathLike))}


def save(fig, points: pd.DataFrame, kind: str, inputs: dict[str, str], params: dict, points_path: str | Path,
         recipe_path: str | Path) -> list[str]:
    """Write the figure files, ``points_path`` (exactly the drawn points) and the recipe beside them."""
    stem = str(points_path).removesuffix(".csv")
    written = write_figure(fig, points, stem, params)
    write_json(make_recipe(kind, inputs, params, stem), recipe_path)
    return written + [str(recipe_path)]


PLOT_FORMATS = ("pdf", "svg", "png")
DPI_RANGE = (50, 1200)  # as config/schema.yaml allows for plot.dpi


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_plot(plot, where: str) -> None:
    """A recipe's ``params.plot``: known formats only (they become file suffixes), sane dpi and size."""
    if not isinstance(plot, dict):
        raise IntegrityError(f"{where}: params.plot must be an object, got {type(plot).__name__}")
    formats = plot.get("formats")
    if not isinstance(formats, list) or not formats or any(f not in PLOT_FORMATS for f in formats):
        raise IntegrityError(f"{where}: params.plot.formats must be a non-empty list of {', '.join(PLOT_FORMATS)}, "
                             f"got {formats!r}")
    dpi = plot.get("dpi")
    if not _is_number(dpi) or not DPI_RANGE[0] <= dpi <= DPI_RANGE[1]:
        raise IntegrityError(f"{where}: params.plot.dpi must be a number in {DPI_RANGE[0]}..{DPI_RANGE[1]}, got {dpi!r}")
    for field in ("width", "height"):
        if not _is_number(plot.get(field)) or plot[field] <= 0:
            raise IntegrityError(f"{where}: params.plot.{field} must be a positive number, got {plot.get(field)!r}")


def check_recipe(recipe, where: str) -> dict:
    """A recipe's structure, as :func:`make_recipe` writes it; IntegrityError naming ``where`` otherwise."""
    if not isinstance(recipe, dict):
        raise IntegrityError(f"{where}: must hold a JSON object, got {type(recipe).__name__}")
    missing = [k for k in ("kind", "inputs", "params", "outputs") if k not in recipe]
    if missing:
        raise IntegrityError(f"{where}: lacks {', '.join(missing)}")
    if not isinstance(recipe["kind"], str):
        raise IntegrityError(f"{where}: kind must be a string, got {recipe['kind']!r}")
    inputs = recipe["inputs"]
    if not isinstance(inputs, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in inputs.items()):
        raise IntegrityError(f"{where}: inputs must map role names to path strings")
    if not isinstance(recipe["params"], dict):
        raise IntegrityError(f"{where}: params must be an object")
    check_plot(recipe["params"].get("plot"), where)
    outputs = recipe["outputs"]
    points = outputs.get("points") if isinstance(outputs, dict) else None
    if not isinstance(points, str) or not points.endswith(".csv"):
        raise IntegrityError(f"{where}: outputs.points must be the path of a .csv file, got {points!r}")
    return recipe


def load_recipe(path: str | Path, where: str | None = None) -> dict:
    """A recipe file, checked by :func:`check_recipe`; errors name ``where`` (default: the path) and,
    for malformed JSON, the line."""
    where = f"recipe {path if where is None else where}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{where}: cannot read: {err}") from None
    try:
        recipe = json.loads(text)
    except ValueError as err:
        line = f" line {err.lineno} column {err.colno}" if isinstance(err, json.JSONDecodeError) else ""
        raise IntegrityError(f"{where}{line}: not valid JSON: {getattr(err, 'msg', err)}") from None
    return check_recipe(recipe, where)


def output_stem(recipe: dict, out: str | Path, where: str = "recipe") -> Path:
    """Where a recipe's figure goes under ``out``: its ``outputs.points`` without ``.csv``, refused
    unless it is a relative path that stays inside ``out`` (symlinks resolved)."""
    return contained(out, recipe["outputs"]["points"], f"{where}: outputs.points").with_suffix("")


def render_recipe(recipe: dict, resolve: Callable[[str], str | Path] = str, out: str | Path = ".",
                  formats: list[str] | None = None) -> tuple[list[str], dict[str, str]]:
    """Redraw a recipe's figure: inputs through ``resolve``, outputs under ``out`` at their recorded
    relative paths (never outside ``out``: :func:`output_stem`). Returns (files written, inputs as resolved)."""
    inputs = {role: str(resolve(path)) for role, path in recipe["inputs"].items()}
    params = dict(recipe["params"])
    if formats is not None:
        params["plot"] = dict(params["plot"], formats=list(formats))
    check_plot(params["plot"], "recipe")
    stem = output_stem(recipe, out)
    fig, points = render(recipe["kind"], inputs, params)
    return write_figure(fig, points, stem, params), inputs
