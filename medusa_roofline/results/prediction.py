"""Prediction error: the roofline predictor against every measured row and every measured step.

For every ok metrics row (sweep or micro-benchmark) and every calibration that applies — ``measured``
(the device's ceilings and per-launch cost) always, ``datasheet`` when the device matches an entry of the
hardware table — one output row with the predicted time
(:mod:`medusa_roofline.analytic.predict`) beside the measured median and p10/p90:

* **Per-op rows** are predicted at the shapes they ran (b, q_len, keys, heads_tokens): one run of the
  op, ``max(flops / peak, bytes / bandwidth, launches x per_launch)``; per-layer rows are one layer, like
  their times.
* **step** rows are the sum over every op of the step at the instantiated ``layers``
  (:func:`~medusa_roofline.analytic.predict.step_time`) — the ops no hook times included.
* **remainder** rows (a step's time no op row covers, where the sweep writes one) are predicted as the
  step's ops the sweep does not time (:data:`~medusa_roofline.analytic.costmodel.HOOKED_OPS`: the rotary
  embedding, the KV write, the residual adds, SiLU·up).

``rel_error`` = predicted / measured - 1 (negative: the prediction is faster than what ran);
**Bytes.** ``bytes`` is what the prediction charged: under the ``measured`` calibration the bytes the
kernels move (:func:`~medusa_roofline.analytic.moved.moved_bytes`) wherever they are modelled — every
timed op, so a step sums moved bytes for its timed ops and counted bytes for RoPE, the KV write, the
residual adds and SiLU·up — and the counted bytes elsewhere; under ``datasheet`` the counted bytes (the
paper's accounting, as for every GPU of the hardware table). ``bytes_used`` says which.

``limiter`` says which term of the max won; ``launch_limited`` is true where it is the launches
(launches x ``per_launch_s``). ``launch_bound`` is the metrics' measured flag, carried over (the row's
median within 1.5x its timing floor ``launch_floor_s``, :mod:`.metrics`). The metrics' ``bytes_moved`` is
carried over beside it.
No parameter is fitted: the only inputs are the cost model, the roofs and the per-launch cost.

:func:`summarise` gives, per device, calibration and op family, the median and p90 of |rel_error|.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..analytic.costmodel import (ATTENTION_OPS, FUSED_ATTENTION_OP, HOOKED_OPS, LAYER_LINEAR_OPS, MEDUSA_HEAD_LAYERS,
                                  NORM_OPS, REMAINDER_OP, STEP_LAYER_OPS, STEP_MODEL_OPS, Cost, launches, measured_ops,
                                  row_cost, step_ops)
from ..analytic.hardware import Hardware
from ..analytic.moved import moved_bytes
from ..analytic.predict import Calibration, datasheet_calibration, limiter, measured_calibration, op_time
from ..core.dtypes import DTYPE_BYTES
from ..core.errors import ConfigError
from ..models.source import ModelDims
from .metrics import heads_tokens

OP_FAMILIES = {
    "linear": LAYER_LINEAR_OPS + ("lm_head",),
    "attention": ATTENTION_OPS + (FUSED_ATTENTION_OP,),
    "norm": NORM_OPS,
    "elementwise": tuple(op for op in STEP_LAYER_OPS + STEP_MODEL_OPS if op not in NORM_OPS + LAYER_LINEAR_OPS
                         + ("lm_head",) + ATTENTION_OPS),
    "medusa_heads": ("medusa_heads",),
    "remainder": (REMAINDER_OP,),
    "step": ("step",),
}
"""Op families the summary groups by (every op the predictor can time belongs to one)."""
FAMILY = {op: family for family, ops in OP_FAMILIES.items() for op in ops}
BAND = 0.20
"""The ±20 % band drawn around the diagonal of the prediction figure (and ``within_band``)."""
IDENTIFYING = ["bench", "model", "device", "device_name", "mode", "phase", "op", "scope", "calls", "candidates",
               "batch", "kv_len", "q_len", "keys", "heads_tokens", "layers", "dtype", "attention_backend", "sanity",
               "launch_bound", "bytes_moved"]
COLUMNS = IDENTIFYING + [
    "op_family", "flops", "bytes", "bytes_used", "launches", "time_s_median", "time_s_p10", "time_s_p90", "calibration",
    "peak_flops_per_s", "bandwidth_bytes_per_s", "per_launch_s", "predicted_s", "limiter", "rel_error",
    "abs_rel_error", "within_band", "launch_limited", "calibration_source",
]
SUMMARY_COLUMNS = ["device", "device_name", "calibration", "op_family", "rows", "median_abs_rel_error",
                   "p90_abs_rel_error", "median_rel_error", "launch_limited_rows", "within_band_rows"]


def unhooked_terms(phase: str, terms) -> list:
    """The step terms no measured row times: what a ``remainder`` row stands for."""
    timed = {op for op, _ in measured_ops(phase)} | set(HOOKED_OPS)
    return [t for t in terms if t.op not in timed]


def predicted_cost(op: str, cost: Cost, cal: Calibration, row, dims: ModelDims, shape: tuple, heads: int,
                   head_layers: int, tokens: int | None) -> Cost:
    """The cost the predictor charges ``op``: the measured calibration takes the bytes the kernels move where
    they are modelled (:func:`~medusa_roofline.analytic.moved.moved_bytes`), the datasheet one (and the
    measured one for the unmodelled ops) the counted bytes."""
    if cal.name != "measured":
        return cost
    backend, kernel = row.get("attention_backend"), row.get("kernel")
    moved = moved_bytes(op, row["phase"], dims, *shape, heads, head_layers,
                        backend=backend if isinstance(backend, str) else "eager",
                        kernel=kernel if isinstance(kernel, str) else "", heads_tokens=tokens)
    return cost if moved is None else Cost(cost.flops, moved)


def predict_row(row, dims: ModelDims, cal: Calibration, num_heads: int,
                head_layers: int = MEDUSA_HEAD_LAYERS) -> tuple[float, str, int, int, int]:
    """(predicted seconds, limiter, launches, flops, bytes used) of one measured row under ``cal``."""
    e = DTYPE_BYTES[row["dtype"]]
    b, n, s = int(row["batch"]), int(row["q_len"]), int(row["keys"])
    layers = int(row["layers"]) if pd.notna(row.get("layers")) else 0
    tokens = heads_tokens(row)
    op = row["op"]
    shape = (b, n, s, e, layers)
    if op in ("step", REMAINDER_OP):
        heads = num_heads if row["phase"] == "medusa" else 0
        terms = step_ops(dims, b, n, s, e, layers, heads, head_layers, heads_tokens=tokens)
        if op == REMAINDER_OP:
            terms = unhooked_terms(row["phase"], terms)
        costs = [predicted_cost(t.op, t.cost, cal, row, dims, shape, heads, head_layers, tokens) for t in terms]
        counts = [launches(t.op, e, heads, head_layers) for t in terms]
        times = [t.times * float(op_time(c, cal, k)) for t, c, k in zip(terms, costs, counts)]
        kinds = [limiter(c, cal, k) for c, k in zip(costs, counts)]
        share = {k: sum(x for x, kk in zip(times, kinds) if kk == k) for k in set(kinds)}
        return (sum(times), max(share, key=share.get), sum(t.times * k for t, k in zip(terms, counts)),
                sum(t.times * c.flops for t, c in zip(terms, costs)),
                sum(t.times * c.bytes for t, c in zip(terms, costs)))
    cost = predicted_cost(op, row_cost(op, row["phase"], dims, *shape, num_heads, head_layers, tokens), cal, row,
                          dims, shape, num_heads, head_layers, tokens)
    k = launches(op, e, num_heads, head_layers)
    return float(op_time(cost, cal, k)), limiter(cost, cal, k), k, cost.flops, cost.bytes


def prediction_table(metrics: pd.DataFrame, dims: ModelDims, calibrations: list[Calibration], num_heads: int,
                     head_layers: int = MEDUSA_HEAD_LAYERS) -> pd.DataFrame:
    """One row per (ok metrics row, calibration); see the module docstring for the columns."""
    if not calibrations:
        raise ConfigError("prediction: no calibration (measured ceilings or datasheet entry) to predict with")
    ok = metrics[metrics["status"].astype(str) == "ok"] if "status" in metrics.columns else metrics
    unknown = sorted(set(ok["op"]) - set(FAMILY))
    if unknown:
        raise ConfigError(f"prediction: no prediction for op(s) {', '.join(map(str, unknown))}")
    rows = []
    for record in ok.to_dict("records"):
        base = {c: record.get(c, math.nan) for c in IDENTIFYING}
        t = float(record["time_s_median"])
        for cal in calibrations:
            predicted, kind, k, flops, nbytes = predict_row(record, dims, cal, num_heads, head_layers)
            err = predicted / t - 1.0
            rows.append({
                **base, "op_family": FAMILY[record["op"]], "flops": flops, "bytes": nbytes,
                "bytes_used": "moved where modelled" if cal.name == "measured" else "counted", "launches": k,
                "time_s_median": t, "time_s_p10": record.get("time_s_p10", math.nan),
                "time_s_p90": record.get("time_s_p90", math.nan), "calibration": cal.name,
                "peak_flops_per_s": cal.peak_flops, "bandwidth_bytes_per_s": cal.bandwidth,
                "per_launch_s": cal.per_launch_s, "predicted_s": predicted, "limiter": kind, "rel_error": err,
                "abs_rel_error": abs(err), "within_band": abs(err) <= BAND, "launch_limited": kind == "launch",
                "calibration_source": cal.source,
            })
    return pd.DataFrame(rows, columns=COLUMNS)


def calibrations(ceilings: dict, datasheet: Hardware | None, dtype: str, per_launch_s: float) -> list[Calibration]:
    """The measured calibration (the ceilings in ``dtype``), and the datasheet one when the device is in the
    hardware table (its peak is the dense 16-bit tensor figure, which flatters float32 rows)."""
    cals = [measured_calibration(ceilings, dtype)]
    if datasheet is not None:
        cals.append(datasheet_calibration(datasheet, per_launch_s))
    return cals


def summarise(prediction: pd.DataFrame) -> pd.DataFrame:
    """Per (device, calibration, op family): rows, median and p90 of |rel_error|, median rel_error, and how
    many rows are launch-limited and within the ±20 % band."""
    rows = []
    order = {f: i for i, f in enumerate(OP_FAMILIES)}
    keys = ["device", "device_name", "calibration", "op_family"]
    for key, grp in prediction.groupby(keys, sort=False, dropna=False):
        err = grp["abs_rel_error"].to_numpy(float)
        rows.append({**dict(zip(keys, key)), "rows": len(grp),
                     "median_abs_rel_error": float(np.median(err)),
                     "p90_abs_rel_error": float(np.percentile(err, 90)),
                     "median_rel_error": float(np.median(grp["rel_error"].to_numpy(float))),
                     "launch_limited_rows": int(grp["launch_limited"].sum()),
                     "within_band_rows": int(grp["within_band"].sum())})
    out = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    out = out.assign(_f=out["op_family"].map(order)).sort_values(["device", "calibration", "_f"], kind="stable")
    return out.drop(columns="_f").reset_index(drop=True)
