"""The measured table: its columns, and the check that keeps an impossible measurement from being written."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ..core.errors import MeasurementError
from ..core.io import write_csv

COLUMNS = [
    "bench", "model", "device", "device_name", "mode", "phase", "op", "scope", "calls",
    "candidates", "tree", "batch", "kv_len", "q_len", "keys", "heads_tokens", "layers", "heads", "kv_heads", "head_dim",
    "dtype", "attention_backend", "kernel", "compiles", "reps", "warmup", "time_s_median", "time_s_p10", "time_s_p90",
    "host_s_median", "launch_floor_s", "status", "est_bytes", "threads", "torch", "transformers", "cuda", "git_commit",
    "git_dirty", "hostname", "seed",
]
"""Columns of every measured table (sweep and micro-benchmark rows alike).

Beside the device times (``time_s_*``), what a launch-bound check needs, measured, never assumed:

* ``host_s_median`` — CUDA only (empty on the CPU, where the interval is host time): median host
  seconds between the row's two marks (enqueue, hooks, Python). A device time close to it means
  the GPU waited for the host.
* ``launch_floor_s`` — the smallest interval the row's timing path records at that point: a
  one-element kernel timed the same way (per-op sweep rows: a 1x1 ``nn.Linear`` through the same
  hooks and :class:`~.op_timer.OpTimer`, ``remainder`` included; ``step`` and micro-benchmark rows: ``x.add_(1)`` through
  :func:`~.timing.time_callable` with the same flush and graph settings).
* ``compiles`` — graphs ``torch.compile`` built while preparing the row's point (compiled
  FlexAttention; empty for what is not compiled).
"""

POINT_KEY = ("model", "mode", "op", "batch", "kv_len")
TIME_COLUMNS = ("time_s_median", "time_s_p10", "time_s_p90")
OPTIONAL_TIME_COLUMNS = ("host_s_median", "launch_floor_s")
STATUSES = ("ok", "oom")


def _point(row) -> str:
    return " ".join(f"{c}={row[c]}" for c in POINT_KEY if c in row)


def validate_measured(df: pd.DataFrame) -> pd.DataFrame:
    """Reject what cannot be a measurement before it is written; returns ``df`` unchanged.

    Every row needs a status in :data:`STATUSES`. ``ok`` rows need finite, positive times with
    ``p10 <= median <= p90``, and ``host_s_median``/``launch_floor_s``/``compiles`` empty or sane;
    ``oom`` rows (never ran) carry NaN times and are allowed. The error names the point (model,
    mode, op, batch, kv_len).
    """
    missing = [c for c in (*POINT_KEY, *TIME_COLUMNS, "status") if c not in df.columns]
    if missing:
        raise MeasurementError(f"measured table lacks column(s) {', '.join(missing)}")
    for row in df.to_dict("records"):
        status = row["status"]
        if status not in STATUSES:
            raise MeasurementError(f"point {_point(row)}: status {status!r} is not one of {', '.join(STATUSES)}")
        if status != "ok":
            continue
        times = {}
        for col in TIME_COLUMNS:
            try:
                value = float(row[col])
            except (TypeError, ValueError):
                value = math.nan
            if not math.isfinite(value) or value <= 0:
                raise MeasurementError(f"point {_point(row)}: {col} is {row[col]!r}; a measured (status ok) time "
                                       "must be a finite number of seconds > 0")
            times[col] = value
        if not times["time_s_p10"] <= times["time_s_median"] <= times["time_s_p90"]:
            raise MeasurementError(f"point {_point(row)}: p10 {times['time_s_p10']!r} <= median "
                                   f"{times['time_s_median']!r} <= p90 {times['time_s_p90']!r} does not hold")
        for col in OPTIONAL_TIME_COLUMNS:
            value = _number(row.get(col))
            if value is not None and not (math.isfinite(value) and value > 0):
                raise MeasurementError(f"point {_point(row)}: {col} is {row[col]!r}; it must be empty or a "
                                       "finite number of seconds > 0")
        compiles = _number(row.get("compiles"))
        if compiles is not None and not (compiles >= 0 and float(compiles).is_integer()):
            raise MeasurementError(f"point {_point(row)}: compiles is {row['compiles']!r}; it must be empty or a "
                                   "count >= 0")
    return df


def _number(value) -> float | None:
    """None for an empty cell (missing, None, NaN, ""), else the value as a float (NaN if it is not one)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return None if math.isnan(number) else number


CLOSURE_COLUMNS = ["model", "mode", "batch", "kv_len", "step_s", "ops_s", "remainder_s", "covered_s", "gap"]


def step_closure(df: pd.DataFrame) -> pd.DataFrame:
    """Per measured sweep point: do the op rows plus ``remainder`` add up to the measured ``step``?

    ``ops_s`` = sum of every op row's median x ``calls`` (per-layer rows are one layer's time),
    ``covered_s`` = ``ops_s`` + ``remainder_s``, ``gap`` = covered / step - 1 (positive: the per-op
    pass took longer than the uninstrumented step, e.g. instrumentation overhead). Points without an
    ok ``step`` and ``remainder`` row are left out.
    """
    ok = df[df["status"].astype(str) == "ok"]
    rows = []
    for (model, mode, b, s), grp in ok.groupby(["model", "mode", "batch", "kv_len"], sort=True):
        by_op = grp.set_index("op")
        if "step" not in by_op.index or "remainder" not in by_op.index:
            continue
        step = float(by_op.loc["step", "time_s_median"])
        parts = grp[~grp["op"].isin(["step", "remainder"])]
        ops = float((parts["time_s_median"] * parts["calls"]).sum())
        rem = float(by_op.loc["remainder", "time_s_median"])
        rows.append({"model": model, "mode": mode, "batch": int(b), "kv_len": int(s), "step_s": step, "ops_s": ops,
                     "remainder_s": rem, "covered_s": ops + rem, "gap": (ops + rem) / step - 1.0})
    return pd.DataFrame(rows, columns=CLOSURE_COLUMNS)


def write_measured_csv(df: pd.DataFrame, path: str | Path) -> None:
    """:func:`validate_measured`, then the atomic :func:`write_csv`: a bad table is never written."""
    write_csv(validate_measured(df), path)
