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
  ``torch.cat`` copy of every layer's cache beyond the new tokens' write, reshapes that copy.
* **remainder** (the step's time no op row covers: RoPE, residual adds, SiLU·up, the KV write, heads
  glue) has no analytic count: its ``flops``, ``bytes``, ``oi``, achieved rates, roofs and fractions are
  NaN and ``bound`` is ``uncounted``; only its time is kept (the predictor predicts it from its ops,
  :mod:`.prediction`).
* **Roofs.** ``roof_measured_flops_per_s`` = min(measured matmul peak in the row's dtype,
  measured bandwidth x oi) from the ceilings; ``roof_spec_flops_per_s`` the same with the datasheet
  entry (NaN when the device has none; the datasheet peak is the dense fp16/bf16 tensor-core figure,
  so it flatters float32 rows). ``bound`` is ``memory``/``compute`` against the measured roofs.
  ``frac_of_*_roof`` is the time at the roof, max(flops / peak, bytes / bandwidth), over the measured time
  (for an op with FLOPs: achieved FLOP/s over the roof at its OI; for one without, achieved B/s over the
  bandwidth).
* **sanity** is ``ok`` or ``;``-joined reasons: ``above_measured_roof`` / ``above_spec_roof`` (achieved
  more than ``tolerance`` above a roof: usually data resident in a cache, or an accounting that
  over-counts work), ``device_mismatch`` (the row's device name differs from the ceilings').

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
    "bench", "model", "device", "device_name", "mode", "phase", "op", "scope", "calls", "candidates",
    "batch", "kv_len", "q_len", "keys", "heads_tokens", "layers", "dtype", "attention_backend", "kernel", "reps", "status",
    "time_s_p10", "time_s_p90", "threads", "torch", "transformers", "cuda", "git_commit",
]
METRIC_COLUMNS = [
    "flops", "bytes", "oi", "time_s_median", "achieved_flops_per_s", "achieved_bytes_per_s",
    "roof_spec_flops_per_s", "roof_measured_flops_per_s", "frac_of_spec_roof", "frac_of_measured_roof",
    "bound", "source", "sanity",
]


def _roof(oi: float, peak: float, bandwidth: float) -> float:
    return costmodel.attainable_flops(oi, peak, bandwidth)


def _roof_time(cost, peak: float, bandwidth: float) -> float:
    """Seconds the op takes at its roof, max(flops / peak, bytes / bandwidth): time at the roof / time measured
    is the fraction of the roof achieved (achieved FLOP/s over the roof at the op's OI), defined for ops that
    do no arithmetic (embedding, KV write) too."""
    return max(cost.flops / peak, cost.bytes / bandwidth)


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

    ceil_name = str(ceilings.get("device_name", ""))
    out = []
    for r in rows.itertuples(index=False):
        if r.op in UNCOUNTED_OPS:
            out.append(_uncounted(float(r.time_s_median)))
            continue
        dims = dims_by_model[r.model]
        e = DTYPE_BYTES[r.dtype]
        layers = int(r.layers) if pd.notna(r.layers) else 0
        cost = row_cost(r.op, r.phase, dims, int(r.batch), int(r.q_len), int(r.keys), e, layers,
                        num_medusa_heads, head_layers, heads_tokens(r))
        t = float(r.time_s_median)
        oi = cost.oi
        peak_m, bw_m = measured_roofs(ceilings, r.dtype)
        roof_m = _roof(oi, peak_m, bw_m)
        roof_s = _roof(oi, datasheet.peak_flops, datasheet.bandwidth) if datasheet is not None else math.nan
        achieved = cost.flops / t if t > 0 else math.nan
        frac_m = _roof_time(cost, peak_m, bw_m) / t if t > 0 else math.nan
        frac_s = (_roof_time(cost, datasheet.peak_flops, datasheet.bandwidth) / t
                  if datasheet is not None and t > 0 else math.nan)
        reasons = []
        if not (t > 0 and math.isfinite(t)):
            reasons.append("bad_time")
        if frac_m > 1 + tolerance:
            reasons.append("above_measured_roof")
        if datasheet is not None and frac_s > 1 + tolerance:
            reasons.append("above_spec_roof")
        dev_name = getattr(r, "device_name", "")
        if ceil_name and isinstance(dev_name, str) and dev_name and dev_name != ceil_name:
            reasons.append("device_mismatch")
        out.append({
            "flops": cost.flops, "bytes": cost.bytes, "oi": oi, "time_s_median": t,
            "achieved_flops_per_s": achieved,
            "achieved_bytes_per_s": cost.bytes / t if t > 0 else math.nan,
            "roof_spec_flops_per_s": roof_s, "roof_measured_flops_per_s": roof_m,
            "frac_of_spec_roof": frac_s,
            "frac_of_measured_roof": frac_m,
            "bound": costmodel.bound(oi, peak_m, bw_m),
            "source": SOURCE,
            "sanity": ";".join(reasons) or "ok",
        })
    ident = [c for c in IDENTIFYING if c in rows.columns]
    extra = [c for c in rows.columns if c not in ident and c not in METRIC_COLUMNS]
    result = pd.concat([rows[ident + extra].reset_index(drop=True),
                        pd.DataFrame(out, columns=METRIC_COLUMNS)], axis=1)
    result.attrs["skipped"] = skipped
    result.attrs["skipped_by_status"] = skipped_by_status
    flagged = result.loc[result["sanity"] != "ok", "sanity"].value_counts().to_dict()
    if flagged:
        log.warning("sanity flags on %d row(s): %s", int(sum(flagged.values())), flagged)
    return result


def _uncounted(t: float) -> dict:
    """A metrics row for an op the cost model counts nothing for (``remainder``): its time, and NaN for
    every count and roof, so no figure or fraction can use a made-up FLOP or byte number."""
    row = dict.fromkeys(METRIC_COLUMNS, math.nan)
    row.update(time_s_median=t, bound=UNCOUNTED_BOUND, source=SOURCE, sanity="ok")
    return row


def heads_tokens(row) -> int | None:
    """Positions per sequence a row's Medusa heads ran on (None: all ``q_len``, for tables without the column)."""
    value = row.get("heads_tokens") if isinstance(row, dict) else getattr(row, "heads_tokens", None)
    return None if value is None or pd.isna(value) else int(value)


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
