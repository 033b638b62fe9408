"""Measured rows joined with the cost model at the shapes actually run, and with both roofs.

For every measured row (sweep or micro-benchmark) with ``status == "ok"``:

* **Shapes.** The cost model is evaluated at what ran, not at the paper's accounting: b = ``batch``,
  n = ``q_len`` (query tokens run), s = ``keys`` (keys the matmuls actually attended: kv_len + q_len
  on the eager path), e = bytes of ``dtype``. Attention ops ``qk``/``softmax``/``pv`` are counted *unfused*
  (the eager path materialises scores and probabilities); op ``attn`` (one fused kernel: SDPA or
  FlexAttention, ``attention_backend`` column) is counted *fused*: the FLOPs of qk + softmax + pv, and
  Q, K, V read once, O written once (:func:`~medusa_roofline.analytic.costmodel.attention_fused`).
* **Per-op rows** (``input_norm``, ``q_proj`` ... ``down_proj``, ``qk``, ``softmax``, ``pv``,
  ``post_attn_norm``) are ONE decoder layer, like their times. ``embedding``, ``final_norm`` and
  ``lm_head`` run once on all ``q_len`` positions. ``medusa_heads`` is :func:`medusa_heads_cost` on the
  ``heads_tokens`` positions per sequence the sweep ran them on (all ``q_len`` for tables without the
  column).
* **step** is the whole step (:func:`~medusa_roofline.analytic.costmodel.step_cost`): ``layers`` x
  every per-layer op of the step (the paper's and the element-wise ones: RMSNorms, rotary embedding,
  the KV write, residual adds, SiLU·up) + embedding, final norm and ``lm_head`` (+ ``medusa_heads`` for
  the medusa phase). Not counted (the step time includes them): the mask add outside softmax, HF's
  ``torch.cat`` copy of every layer's cache beyond the new tokens' write, reshapes that copy. Its
  ``bytes_moved`` covers the ops the sweep times (norms and embedding included), not the unhooked
  element-wise ops (:func:`~medusa_roofline.analytic.moved.moved_bytes`).
* **remainder** (the step's time no op row covers: RoPE, residual adds, SiLU·up, the KV write, heads
  glue) has no analytic count: its ``flops``, both byte counts, both OIs, achieved rates, roofs and
  fractions are NaN and ``bound`` is ``uncounted``; only its time is kept (the predictor predicts it
  from its ops, :mod:`.prediction`).
* **Two byte counts.** ``bytes_counted`` is the paper's accounting at the shapes run (the cost model's
  ``bytes``: each input read once, each output written once), and ``oi_counted`` = flops / it is what
  the paper-style charts put on the x axis. ``bytes_moved`` is what the kernels this project launches
  for the op read and write (:func:`~medusa_roofline.analytic.moved.moved_bytes`, per backend and
  op: e.g. a copy of Q for a grouped GEMM, the tree mask added over n - 1 columns, the Medusa heads'
  bias, SiLU, residual and stacked logits), ``oi_moved`` = flops / it; NaN where a kernel's traffic is
  not modelled (SDPA's MATH kernel, uncompiled flex). Every column derived from a byte count ends in
  the count it uses (``_counted`` or ``_moved``).
* **Roofs.** ``roof_measured_flops_per_s_moved`` = min(measured matmul peak in the row's dtype,
  measured bandwidth x oi_moved) from the ceilings; ``roof_spec_flops_per_s_moved`` the same with the
  datasheet entry (NaN when the device has none; the datasheet peak is the dense fp16/bf16 tensor-core
  figure, so it flatters float32 rows). The fractions of roof (``frac_of_*_roof_moved``) are the time
  at the roof, max(flops / peak, bytes_moved / bandwidth), over the measured time: for an op with FLOPs,
  achieved FLOP/s over the roof at ``oi_moved``; for one without (embedding), the bandwidth its kernels
  achieved over the roof's.
  ``bound`` is ``memory``/``compute`` against the measured roofs at ``oi_moved`` ("" when unmodelled).
* **Launch-bound points** (``launch_bound``, ``launch_reason``): a median time within
  :data:`FLOOR_FACTOR` x the launch floor (the row's own ``launch_floor_s``: a one-element kernel timed
  through the same path at that point; else the ceilings' ``launch_floor``), or flat while bytes grow
  (:func:`flag_launch_bound`). Their time is launch and timer overhead, not the op's traffic: the
  figures mark them.
* **sanity** is ``ok`` or ``;``-joined reasons: ``above_measured_roof`` / ``above_spec_roof`` (the moved
  bytes, or the counted ones where moved are unmodelled, crossed memory faster than the roof allows, or
  FLOPs ran faster than the peak, by more than ``tolerance``: usually data resident in a cache, or a
  miscount), ``device_mismatch`` (the row's device name differs from the ceilings'),
  ``threads_mismatch`` (a CPU row timed with another thread count than the ceilings were measured with).

A measurement is identified by (bench, model, device, mode, op, batch, kv_len) and, where the rows
carry it, ``attention_backend`` (sdpa and flex both time an ``attn`` op at every point).

Rows whose status is not ``ok`` are skipped; their number is logged and kept in
``result.attrs["skipped"]`` (and per status in ``attrs["skipped_by_status"]``). Every ok row yields
exactly one output row, in input order; duplicated measurement keys are an error.
"""

from __future__ import annotations

import logging
import math

import pandas as pd

from ..analytic import costmodel
from ..analytic.costmodel import MEDUSA_HEAD_LAYERS, UNCOUNTED_OPS, row_cost
from ..analytic.hardware import Hardware, measured_roofs
from ..analytic.moved import moved_bytes
from ..core.dtypes import DTYPE_BYTES
from ..core.errors import ConfigError
from ..models.source import ModelDims

log = logging.getLogger(__name__)

SOURCE = "measured"
UNCOUNTED_BOUND = "uncounted"
"""``bound`` of rows the cost model counts nothing for (:data:`~medusa_roofline.analytic.costmodel.UNCOUNTED_OPS`)."""
DEFAULT_TOLERANCE = 0.05
KEY_COLUMNS = ["bench", "model", "device", "mode", "op", "batch", "kv_len"]
BACKEND_COLUMN = "attention_backend"
IDENTIFYING = [
    "bench", "model", "device", "device_name", "mode", "phase", "op", "scope", "calls", "candidates", "tree",
    "batch", "kv_len", "q_len", "keys", "heads_tokens", "layers", "dtype", "attention_backend", "kernel", "reps", "status",
    "time_s_p10", "time_s_p90", "threads", "torch", "transformers", "cuda", "git_commit",
]
METRIC_COLUMNS = [
    "flops", "bytes_counted", "bytes_moved", "oi_counted", "oi_moved", "time_s_median", "achieved_flops_per_s",
    "achieved_bytes_per_s_counted", "achieved_bytes_per_s_moved", "roof_spec_flops_per_s_moved",
    "roof_measured_flops_per_s_moved", "frac_of_spec_roof_moved", "frac_of_measured_roof_moved",
    "bound", "launch_bound", "launch_reason", "source", "sanity",
]
FLOOR_FACTOR = 1.5
"""A point whose median time is within this factor of the launch floor is launch-bound."""
FLAT_BYTES_RATIO = 2.0
FLAT_TIME_RATIO = 1.25
"""Flat while bytes grow: another point of the same op moves >= 2x the bytes in <= 1.25x the time."""
FLAT_GROUP = ("bench", "model", "device", "attention_backend", "op", "mode")


def _roof(oi: float, peak: float, bandwidth: float) -> float:
    return costmodel.attainable_flops(oi, peak, bandwidth) if math.isfinite(oi) else math.nan


def launch_floor(ceilings: dict) -> float | None:
    """The device's launch floor in seconds (a one-element kernel, :mod:`~medusa_roofline.measure.ceilings`),
    or None for a ceilings file written before it was measured; rows with their own ``launch_floor_s``
    use that instead."""
    floor = ceilings.get("launch_floor", {}).get("floor_s")
    return float(floor) if floor else None


def flag_launch_bound(table: pd.DataFrame, floor_s=None, bytes_column: str = "bytes_moved",
                      group=FLAT_GROUP) -> pd.DataFrame:
    """``table`` with ``launch_bound`` (bool) and ``launch_reason``: time flat while bytes grow within a
    group (a point and another moving >= FLAT_BYTES_RATIO x its bytes in <= FLAT_TIME_RATIO x its time:
    both flagged), or a median time within FLOOR_FACTOR x ``floor_s`` (seconds, or one per row; NaN: none)."""
    table = table.copy()
    group = [c for c in group if c in table.columns]
    flat = pd.Series(False, index=table.index)
    for _, grp in (table.groupby(group, sort=False, dropna=False) if group else [(None, table)]):
        b = grp[bytes_column].to_numpy(float)
        t = grp["time_s_median"].to_numpy(float)
        pair = (b[None, :] >= FLAT_BYTES_RATIO * b[:, None]) & (t[None, :] <= FLAT_TIME_RATIO * t[:, None])
        flat.loc[grp.index] = pair.any(axis=1) | pair.any(axis=0)
    floors = pd.Series(floor_s, index=table.index, dtype=float)
    near = table["time_s_median"].astype(float) <= FLOOR_FACTOR * floors  # False where the floor is NaN
    table["launch_bound"] = flat | near
    table["launch_reason"] = ["; ".join(r for r, on in (("time flat while bytes grow", f),
                                                        (f"within {FLOOR_FACTOR:g}x the launch floor", n)) if on)
                              for f, n in zip(flat, near)]
    return table


def _roof_time(flops: float, nbytes: float, peak: float, bandwidth: float) -> float:
    """Seconds the op takes at its roof, max(flops / peak, bytes / bandwidth): time at the roof / time measured
    is the fraction of the roof achieved (achieved FLOP/s over the roof at the op's OI), defined for ops that
    do no arithmetic (embedding, KV write) too."""
    return max(flops / peak, nbytes / bandwidth)


def check_unique(measured: pd.DataFrame) -> None:
    """A measurement key (bench, model, device, mode, op, batch, kv_len[, attention_backend]) may occur only once."""
    keys = [c for c in KEY_COLUMNS + [BACKEND_COLUMN] if c in measured.columns]
    dup = measured.duplicated(keys, keep=False)
    if dup.any():
        first = measured.loc[dup, keys].iloc[0].to_dict()
        raise ConfigError(f"measured rows: {int(dup.sum())} rows share a key, e.g. {first}; "
                          "each (bench, model, device, mode, op, batch, kv_len, attention_backend) must be measured once")


def compute_metrics(measured: pd.DataFrame, dims_by_model: dict[str, ModelDims], ceilings: dict,
                    datasheet: Hardware | None, num_medusa_heads: int = 4,
                    head_layers: int = MEDUSA_HEAD_LAYERS, tolerance: float = DEFAULT_TOLERANCE) -> pd.DataFrame:
    """One metrics row per ok measured row (see the module docstring for every column)."""
    missing = [c for c in ("model", "op", "phase", "batch", "q_len", "keys", "dtype", "status", "time_s_median")
               if c not in measured.columns]
    if missing:
        raise ConfigError(f"measured rows: missing column(s) {', '.join(missing)}")
    measured = measured.copy()
    if "bench" not in measured.columns:
        measured["bench"] = "sweep"
    if "layers" not in measured.columns:
        measured["layers"] = 0
    check_unique(measured)
    ok = measured["status"].astype(str) == "ok"
    skipped_by_status = measured.loc[~ok, "status"].astype(str).value_counts().sort_index().to_dict()
    skipped = int((~ok).sum())
    if skipped:
        log.info("skipped %d measured row(s) with status != ok: %s", skipped, skipped_by_status)
    rows = measured.loc[ok].reset_index(drop=True)
    unknown_models = sorted(set(rows["model"]) - set(dims_by_model))
    if unknown_models:
        raise ConfigError(f"measured rows: no model dimensions for {', '.join(unknown_models)}")
    unknown_dtypes = sorted(set(rows["dtype"]) - set(DTYPE_BYTES))
    if unknown_dtypes:
        raise ConfigError(f"measured rows: unknown dtype(s) {', '.join(map(str, unknown_dtypes))}")

    out = [_uncounted(float(r.time_s_median)) if r.op in UNCOUNTED_OPS else
           _metrics_row(r, dims_by_model[r.model], ceilings, datasheet, num_medusa_heads, head_layers, tolerance)
           for r in rows.itertuples(index=False)]
    ident = [c for c in IDENTIFYING if c in rows.columns]
    extra = [c for c in rows.columns if c not in ident and c not in METRIC_COLUMNS]
    result = pd.concat([rows[ident + extra].reset_index(drop=True),
                        pd.DataFrame(out, columns=METRIC_COLUMNS)], axis=1)
    moved = result["bytes_moved"].where(result["bytes_moved"].notna(), result["bytes_counted"])
    floors = pd.Series(launch_floor(ceilings), index=result.index, dtype=float)
    if "launch_floor_s" in result.columns:  # the row's own floor, measured at its point through its path
        own = pd.to_numeric(result["launch_floor_s"], errors="coerce")
        floors = own.where(own.notna(), floors)
    flagged_launch = flag_launch_bound(result.assign(_bytes=moved), floors, "_bytes")
    result["launch_bound"] = flagged_launch["launch_bound"].to_numpy()
    result["launch_reason"] = flagged_launch["launch_reason"].to_numpy()
    result.attrs["skipped"] = skipped
    result.attrs["skipped_by_status"] = skipped_by_status
    flagged = result.loc[result["sanity"] != "ok", "sanity"].value_counts().to_dict()
    if flagged:
        log.warning("sanity flags on %d row(s): %s", int(sum(flagged.values())), flagged)
    if result["launch_bound"].any():
        log.info("%d row(s) launch-bound", int(result["launch_bound"].sum()))
    return result


def _uncounted(t: float) -> dict:
    """A metrics row for an op the cost model counts nothing for (``remainder``): its time, and NaN for
    every count and roof, so no figure or fraction can use a made-up FLOP or byte number."""
    row = dict.fromkeys(METRIC_COLUMNS, math.nan)
    row.update(time_s_median=t, bound=UNCOUNTED_BOUND, launch_bound=False, launch_reason="", source=SOURCE,
               sanity="ok")
    return row


def heads_tokens(row) -> int | None:
    """Positions per sequence a row's Medusa heads ran on (None: all ``q_len``, for tables without the column)."""
    value = row.get("heads_tokens") if isinstance(row, dict) else getattr(row, "heads_tokens", None)
    return None if value is None or pd.isna(value) else int(value)


def _metrics_row(r, dims: ModelDims, ceilings: dict, datasheet: Hardware | None, num_heads: int, head_layers: int,
                 tolerance: float) -> dict:
    """The metric columns of one ok measured row (see the module docstring)."""
    e = DTYPE_BYTES[r.dtype]
    layers = int(r.layers) if pd.notna(r.layers) else 0
    shape = (dims, int(r.batch), int(r.q_len), int(r.keys), e, layers, num_heads, head_layers)
    tokens = heads_tokens(r)
    cost = row_cost(r.op, r.phase, *shape, heads_tokens=tokens)
    backend = getattr(r, "attention_backend", "eager")
    kernel = getattr(r, "kernel", "")
    moved = moved_bytes(r.op, r.phase, *shape, backend=backend if isinstance(backend, str) else "eager",
                        kernel=kernel if isinstance(kernel, str) else "", heads_tokens=tokens)
    t = float(r.time_s_median)
    good_time = t > 0 and math.isfinite(t)
    oi_moved = cost.flops / moved if moved else math.nan
    peak_m, bw_m = measured_roofs(ceilings, r.dtype)
    roof_m = _roof(oi_moved, peak_m, bw_m)
    roof_s = _roof(oi_moved, datasheet.peak_flops, datasheet.bandwidth) if datasheet is not None else math.nan
    achieved = cost.flops / t if good_time else math.nan
    frac_m = _roof_time(cost.flops, moved, peak_m, bw_m) / t if good_time and moved else math.nan
    frac_s = (_roof_time(cost.flops, moved, datasheet.peak_flops, datasheet.bandwidth) / t
              if datasheet is not None and good_time and moved else math.nan)
    check_bytes = moved if moved else cost.bytes  # counted <= moved: a sound lower bound for the check
    reasons = [] if good_time else ["bad_time"]
    if _above(cost.flops, check_bytes, t, peak_m, bw_m, tolerance):
        reasons.append("above_measured_roof")
    if datasheet is not None and _above(cost.flops, check_bytes, t, datasheet.peak_flops, datasheet.bandwidth,
                                        tolerance):
        reasons.append("above_spec_roof")
    ceil_name = str(ceilings.get("device_name", ""))
    dev_name = getattr(r, "device_name", "")
    if ceil_name and isinstance(dev_name, str) and dev_name and dev_name != ceil_name:
        reasons.append("device_mismatch")
    row_threads, ceil_threads = getattr(r, "threads", None), ceilings.get("threads")
    if (ceilings.get("device_type") == "cpu" and ceil_threads is not None and pd.notna(row_threads)
            and int(row_threads) != int(ceil_threads)):
        reasons.append("threads_mismatch")
    return {
        "flops": cost.flops, "bytes_counted": cost.bytes, "bytes_moved": moved if moved else math.nan,
        "oi_counted": cost.oi, "oi_moved": oi_moved, "time_s_median": t, "achieved_flops_per_s": achieved,
        "achieved_bytes_per_s_counted": cost.bytes / t if good_time else math.nan,
        "achieved_bytes_per_s_moved": moved / t if good_time and moved else math.nan,
        "roof_spec_flops_per_s_moved": roof_s, "roof_measured_flops_per_s_moved": roof_m,
        "frac_of_spec_roof_moved": frac_s, "frac_of_measured_roof_moved": frac_m,
        "bound": costmodel.bound(oi_moved, peak_m, bw_m) if moved else "",
        "launch_bound": False, "launch_reason": "", "source": SOURCE, "sanity": ";".join(reasons) or "ok",
    }


def _above(flops: float, nbytes: float, t: float, peak: float, bandwidth: float, tolerance: float) -> bool:
    """Whether a row ran faster than a roof allows: its bytes crossed memory faster than ``bandwidth``
    or its FLOPs faster than ``peak`` (each by more than ``tolerance``)."""
    if not t > 0:
        return False
    return nbytes / t > bandwidth * (1 + tolerance) or flops / t > peak * (1 + tolerance)


def load_measured(sources) -> pd.DataFrame:
    """Concatenate measured CSVs in the order given. ``sources``: ``(path, bench)`` pairs (or bare
    paths, bench "sweep"); ``bench`` fills the column where a file has none."""
    frames = []
    for item in sources:
        path, bench = item if isinstance(item, tuple) else (item, "sweep")
        df = pd.read_csv(path)
        if "bench" not in df.columns:
            df.insert(0, "bench", bench)
        frames.append(df)
    if not frames:
        raise ConfigError("measured rows: no measured CSV was given")
    return pd.concat(frames, ignore_index=True)


def provenance_label(row) -> str:
    """'torch X, transformers Y, cuda Z, git abc123, <device name>' from a measured row."""
    def get(name):
        value = row.get(name, "") if hasattr(row, "get") else getattr(row, name, "")
        return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)

    parts = [f"torch {get('torch')}" if get("torch") else "", f"transformers {get('transformers')}" if get("transformers") else "",
             f"cuda {get('cuda')}" if get("cuda") else "", f"git {get('git_commit')[:12]}" if get("git_commit") else "",
             get("device_name")]
    return ", ".join(p for p in parts if p) or "measured"
