"""The best Medusa tree size per (model, GPU, batch, kv_len), from the roofline predictor.

For every point the candidate count n in 1 .. ``max_candidates`` that maximises

    expected speedup(n) = E[tokens per step | greedy tree of n] / (T_medusa(n) / T_ar)

with T from the predictor (:func:`~medusa_roofline.results.speedup.step_times`: the one step definition,
every op of the step at max(flops / peak, bytes / bandwidth, launches x per_launch)). n = 1 is plain
autoregressive decoding (speedup 1 exactly: no heads, no tree), so a best n of 1 says that no tree pays
on that point. Ties go to the smaller tree. Each row also gives the speedup of a reference tree at the
same point (by default Medusa's own default tree, ``mc_sim_7b_63``: 64 nodes with the root; its step
costs what any 64-node step costs, its tokens per step come from its own paths), and the tokens per
step of both.

Calibrations: ``datasheet`` for every GPU of the config (its hardware-table roofs and the documented
per-launch cost), ``measured`` for the device at hand (its ceilings and measured ``per_launch_s``), and
``measured steps`` where a sweep of the model exists (the measured step times of the swept tree sizes:
the best of those sizes, not of every n).

The roofline argument says the best n should not grow when only the batch grows at a fixed kv_len
(a larger batch moves the step from the bandwidth roof towards the compute roof, so extra tree tokens
cost more); :func:`batch_growth_exceptions` lists the rows where a table breaks that.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..analytic.hardware import Hardware
from ..analytic.predict import (
    DATASHEET_PER_LAUNCH_S,
    Calibration,
    datasheet_calibration,
    measured_calibration,
)
from ..core.dtypes import DTYPE_BYTES
from ..decoding.tree import Tree, expected_accept_length
from ..measure.grid import TREE_PREFIX
from ..models.source import ModelDims
from .speedup import expected_tokens, measured_speedup, step_times

COLUMNS = [
    "model", "hardware", "display_name", "calibration", "device", "dtype", "attention", "medusa_heads", "batch",
    "kv_len", "best_candidates", "best_speedup", "best_expected_tokens", "best_step_time_s", "ar_step_time_s",
    "reference_tree", "reference_candidates", "reference_speedup", "reference_expected_tokens", "searched",
    "provenance",
]
KEYS = ["model", "hardware", "calibration", "kv_len"]
"""A table's rows with the same KEYS differ only in the batch."""


def best_tree_table(model: str, dims: ModelDims, table, cal: Calibration, dtype: str, batches, kv_lens,
                    max_candidates: int, reference: Tree, hardware: str, display_name: str, device: str = "",
                    medusa_heads: str = "tree", fused: bool = False, provenance: str = "",
                    tokens: dict[int, float] | None = None) -> pd.DataFrame:
    """One row per (batch, kv_len): the best tree size under ``cal`` and the ``reference`` tree's speedup
    (``tokens``: expected tokens per tree size, when already computed for this acceptance table)."""
    table = np.asarray(table, dtype=np.float64)
    ref_tokens = expected_accept_length(table, list(reference.paths))
    cands = np.arange(2, max_candidates + 1)
    tokens = expected_tokens(table, cands) if tokens is None else tokens
    expected = np.array([1.0] + [tokens[int(c)] for c in cands])  # index 0: n = 1, plain decoding
    sizes = np.concatenate([[1], cands])
    e = DTYPE_BYTES[dtype]
    rows = []
    for s in sorted(set(kv_lens)):
        for b in sorted(set(batches)):
            t_ar, t_md = step_times(dims, b, s, cands, e, cal, int(table.shape[0]), medusa_heads, fused=fused)
            t_ref = float(step_times(dims, b, s, [reference.candidates], e, cal, int(table.shape[0]), medusa_heads,
                                     fused=fused)[1][0])
            steps = np.concatenate([[t_ar], t_md])
            speedup = expected / (steps / t_ar)
            best = int(np.argmax(speedup))  # the first maximum: ties go to the smaller tree
            rows.append({
                "model": model, "hardware": hardware, "display_name": display_name, "calibration": cal.name,
                "device": device, "dtype": dtype, "attention": "fused" if fused else "unfused",
                "medusa_heads": medusa_heads, "batch": b, "kv_len": s, "best_candidates": int(sizes[best]),
                "best_speedup": float(speedup[best]), "best_expected_tokens": float(expected[best]),
                "best_step_time_s": float(steps[best]), "ar_step_time_s": float(t_ar),
                "reference_tree": reference.name, "reference_candidates": reference.candidates,
                "reference_speedup": ref_tokens / (t_ref / t_ar), "reference_expected_tokens": ref_tokens,
                "searched": f"1..{max_candidates}",
                "provenance": provenance or cal.source,
            })
    return pd.DataFrame(rows, columns=COLUMNS)


def best_tree_tables(model: str, dims: ModelDims, table, hardware: list[Hardware], dtype: str, batches, kv_lens,
                     max_candidates: int, reference: Tree, medusa_heads: str = "tree", fused: bool = False,
                     per_launch_s: float = DATASHEET_PER_LAUNCH_S, ceilings: dict | None = None,
                     measured_dtype: str | None = None, device: str = "", metrics: pd.DataFrame | None = None
                     ) -> dict[str, pd.DataFrame]:
    """Every table of one model: ``datasheet/<hardware key>`` for each GPU, and, with ``ceilings``,
    ``measured/<device>``: the measured calibration in ``measured_dtype`` (+ the best of the measured
    step times when ``metrics`` holds swept steps of this model)."""
    tokens = expected_tokens(table, range(2, max_candidates + 1))
    common = dict(max_candidates=max_candidates, reference=reference, medusa_heads=medusa_heads, fused=fused,
                  tokens=tokens)
    out = {}
    for hw in hardware:
        out[f"datasheet/{hw.key}"] = best_tree_table(model, dims, table, datasheet_calibration(hw, per_launch_s),
                                                     dtype, batches, kv_lens, hardware=hw.key,
                                                     display_name=hw.display_name, **common)
    if ceilings is not None:
        name = str(ceilings.get("device_name", device))
        frames = [best_tree_table(model, dims, table, measured_calibration(ceilings, measured_dtype), measured_dtype,
                                  batches, kv_lens, hardware=device, display_name=name, device=device, **common)]
        if metrics is not None and len(metrics):
            frames.append(best_measured_tree(metrics[metrics["model"] == model], table, dims.layers, reference,
                                             device, name, medusa_heads))
        out[f"measured/{device}"] = pd.concat([f for f in frames if len(f)], ignore_index=True)
    return out


def best_measured_tree(measured: pd.DataFrame, table, model_layers: int, reference: Tree, hardware: str,
                       display_name: str, medusa_heads: str = "tree") -> pd.DataFrame:
    """The best of the swept tree sizes (and plain decoding) per (batch, kv_len), from measured step times
    (:func:`~.speedup.measured_speedup`, scaled to the model's depth). Only the greedy sizes compete
    (``ar``, ``medusa-N``): a tree file's own mode (``tree-NAME``, ``measure.trees``) is one tree, not a size,
    and its measured speedup is on the measured speedup chart."""
    if "mode" in measured.columns:
        measured = measured[~measured["mode"].astype(str).str.startswith(TREE_PREFIX)]
    speed = measured_speedup(measured, table, model_layers, hardware=hardware)
    rows = []
    for (model, device, b, s), grp in speed.groupby(["model", "device", "batch", "kv_len"], sort=True):
        grp = grp.sort_values("candidates")
        sizes = np.concatenate([[1], grp["candidates"].to_numpy()])
        speedup = np.concatenate([[1.0], grp["speedup"].to_numpy(float)])
        tokens = np.concatenate([[1.0], grp["expected_tokens"].to_numpy(float)])
        steps = np.concatenate([[grp["step_time_ar_s"].iloc[0]], grp["step_time_medusa_s"].to_numpy(float)])
        best = int(np.argmax(speedup))
        ref = grp[grp["candidates"] == reference.candidates]  # a swept step of the reference's size
        ref_tokens = expected_accept_length(table, list(reference.paths))
        rows.append({
            "model": model, "hardware": hardware, "display_name": display_name, "calibration": "measured steps",
            "device": device, "dtype": str(measured["dtype"].iloc[0]) if "dtype" in measured.columns else "",
            "attention": "unfused", "medusa_heads": medusa_heads, "batch": int(b), "kv_len": int(s),
            "best_candidates": int(sizes[best]), "best_speedup": float(speedup[best]),
            "best_expected_tokens": float(tokens[best]), "best_step_time_s": float(steps[best]),
            "ar_step_time_s": float(steps[0]), "reference_tree": reference.name,
            "reference_candidates": reference.candidates,
            "reference_speedup": ref_tokens / float(ref["latency_ratio"].iloc[0]) if len(ref) else np.nan,
            "reference_expected_tokens": ref_tokens,
            "searched": ",".join(str(int(c)) for c in sizes), "provenance": grp["provenance"].iloc[0],
        })
    return pd.DataFrame(rows, columns=COLUMNS)


def batch_growth_exceptions(df: pd.DataFrame) -> pd.DataFrame:
    """Rows whose best tree is larger than at the next smaller batch of the same (model, hardware,
    calibration, kv_len): where the best n grows with the batch alone."""
    out = []
    for _, grp in df.groupby(KEYS, sort=True):
        grp = grp.sort_values("batch")
        grows = grp["best_candidates"].diff() > 0
        out.append(grp[grows])
    return pd.concat(out, ignore_index=True) if out else df.iloc[0:0]
