"""The analytic roofline table: every (phase, op, candidates, batch, kv_len) of a model on a GPU."""

from __future__ import annotations

import pandas as pd

from .. import __version__
from ..core.dtypes import DTYPE_BYTES
from ..models.source import ModelDims
from . import costmodel
from .hardware import Hardware

COLUMNS = [
    "model", "hardware", "phase", "op", "candidates", "batch", "kv_len", "dtype",
    "flops", "bytes", "oi", "roof_flops_per_s", "bound",
]
PHASE_ORDER = {"init": 0, "ar": 1, "medusa": 2}


def phase_points(candidates: list[int], kv_lens: list[int]):
    """(phase, candidates) pairs per kv_len: prefill, plain decoding, each Medusa tree size."""
    for kv_len in kv_lens:
        yield "init", kv_len, kv_len
        yield "ar", 1, kv_len
        for n in candidates:
            yield "medusa", n, kv_len


def analytic_table(model: str, dims: ModelDims, hw: Hardware, dtype: str, candidates: list[int],
                   batches: list[int], kv_lens: list[int], attention: str = "unfused") -> pd.DataFrame:
    """One row per (phase, op, candidates, batch, kv_len), sorted, for deterministic output."""
    e = DTYPE_BYTES[dtype]
    fused = attention == "fused"
    rows = []
    for phase, n_cand, kv_len in phase_points(sorted(set(candidates)), sorted(set(kv_lens))):
        q, s = costmodel.phase_shape(phase, n_cand, kv_len)
        for b in sorted(set(batches)):
            for op in costmodel.ALL_OPS:
                cost = costmodel.op_cost(op, dims, b, q, s, e, fused)
                rows.append({
                    "model": model, "hardware": hw.key, "phase": phase, "op": op,
                    "candidates": n_cand, "batch": b, "kv_len": kv_len, "dtype": dtype,
                    "flops": cost.flops, "bytes": cost.bytes, "oi": cost.oi,
                    "roof_flops_per_s": costmodel.attainable_flops(cost.oi, hw.peak_flops, hw.bandwidth),
                    "bound": costmodel.bound(cost.oi, hw.peak_flops, hw.bandwidth),
                })
    df = pd.DataFrame(rows, columns=COLUMNS)
    order = df["phase"].map(PHASE_ORDER)
    op_order = df["op"].map({op: i for i, op in enumerate(costmodel.ALL_OPS)})
    return (df.assign(_p=order, _o=op_order)
              .sort_values(["_p", "candidates", "kv_len", "batch", "_o"], kind="stable")
              .drop(columns=["_p", "_o"]).reset_index(drop=True))


def analytic_provenance() -> str:
    return f"analytic cost model, medusa_roofline {__version__}"
