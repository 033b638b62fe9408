"""Medusa speedup vs the number of candidate tokens: simulated (the paper's appendix figure) and measured.

speedup(c, seq_len) = E[tokens per step | tree of c candidates] / (T_medusa(c) / T_ar)

Both paths use one definition of the step (:func:`~medusa_roofline.analytic.costmodel.step_shape`):
the queries attend the cache and the step's own tokens (kv_len + 1 keys for ar, kv_len + c for a tree
of c), and the Medusa heads run where ``medusa_heads`` says — on every tree token (``tree``, Medusa's
reference ``tree_decoding`` and the default) or on the accepted token only (``accepted``). The measured
sweep runs its heads by the same switch (``step.medusa_heads``), so analytic and measured speedups
compare the same step.

* **Expected tokens per step.** For the greedy tree of c candidates (``tree.build_tree``; c counts
  the root, so the tree has c - 1 paths) ``E = 1 + sum over tree nodes of prod_i table[i, r_i]``
  along the node's path ``(r_0, r_1, ...)``. Assumption: acceptance events of different heads are
  independent (a node is accepted iff each head on its path proposed the right token at that rank,
  with the table's marginal probability), as in the Medusa paper's tree construction. The root
  (the base model's own token) is always accepted. c = 1 is plain decoding plus heads: E = 1.
* **Step latency, analytic** (:func:`analytic_speedup`): the predictor
  (:func:`~medusa_roofline.analytic.predict.step_time`) — every op of the step (the paper's and the
  element-wise ones) at max(flops / peak, bytes / bandwidth, launches x per_launch), summed over the
  per-layer ops x layers, the once-per-step ops and the Medusa heads — with one calibration (the
  datasheet roofs of a GPU, or the device's measured ceilings).
* **Step latency, measured** (:func:`measured_speedup`): the ``step`` rows of a metrics/measured
  table, ``medusa-c`` vs ``ar`` at the same (batch, kv_len). When fewer decoder layers were
  instantiated than the model has, the layer part (the step minus its once-per-step op rows:
  embedding, final norm, ``lm_head``, ``medusa_heads``) is scaled up to the model's depth. The
  sweep's Medusa step runs the heads where ``step.medusa_heads`` says (:func:`~..analytic.costmodel.step_shape`).
* **Acceptance source** (measured rows, column ``acceptance`` and the series name): where the
  tokens per step came from. ``shipped table`` (``config/acceptance/default.csv``), ``measured
  table`` (per-head acceptance measured from a local model, :mod:`..decoding.acceptance`), ``given
  table`` (any other table), all through the independence formula above; or ``real generation``:
  the tokens per step real Medusa generation reached with that tree on the measured prompts (no
  independence assumption). What is measured is the step latency only, so each series is named for
  what was timed and what was assumed: ``seq_len S (measured step latency x <acceptance source>)``.
* **Tree files** (``speedup.trees`` for the simulated chart, ``measure.trees`` for the measured one):
  an explicit tree (Medusa ``medusa_choices``-style paths) is a point of its own at its node count,
  series ``... , tree NAME``, with E from its own paths; the greedy trees are named ``greedy-c`` in
  the ``tree`` column.
* **Error bars** (``speedup_p10``, ``speedup_p90``): ``E x T_ar,p10 / T_medusa,p90`` and
  ``E x T_ar,p90 / T_medusa,p10``, the ratio with both step times at opposite ends of their own
  p10-p90 ranges (each from the sweep's repetitions; scaled to the model's depth like the medians).
  The two steps are timed independently, so this band is wider than the ratio's own p10-p90 would be:
  two runs whose bands do not overlap differ by more than their timing noise. The tokens per step are
  taken as exact (their uncertainty is not in the bars).
"""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd

from ..analytic.costmodel import MEDUSA_HEAD_LAYERS, STEP_MODEL_OPS, step_shape
from ..analytic.predict import Calibration, step_time
from ..core.dtypes import DTYPE_BYTES
from ..core.errors import ConfigError
from ..core.io import sha256_file
from ..decoding.tree import (DEFAULT_ACCEPTANCE, Tree, expected_accept_length, from_tree_file, greedy_name,
                             tree_paths_for)
from ..models.source import ModelDims
from .metrics import provenance_label

COLUMNS = [
    "series", "source", "model", "hardware", "device", "batch", "kv_len", "candidates", "expected_tokens",
    "step_time_ar_s", "step_time_medusa_s", "latency_ratio", "speedup", "provenance",
]
MEASURED_COLUMNS = COLUMNS + ["acceptance", "speedup_p10", "speedup_p90", "tree"]
SHIPPED, MEASURED_TABLE, GIVEN, REAL = "shipped table", "measured table", "given table", "real generation"
ACCEPTANCE_SOURCES = (SHIPPED, MEASURED_TABLE, GIVEN, REAL)
TIMED = "measured step latency"
"""What a measured speedup series timed; its name is ``<TIMED> x <acceptance source>``."""
ASSUMPTION = "independent per-head acceptance; expected tokens = 1 + sum over tree nodes of prod of accuracies"
ONCE_PER_STEP = STEP_MODEL_OPS + ("medusa_heads",)
"""Measured rows that run once per step whatever the depth (not scaled with the layers)."""


def tree_paths(table, candidates) -> list[tuple[int, ...]]:
    """The tree's paths: ``candidates`` a node count (the greedy tree, root included; [] for 1, the root
    alone) or an explicit tree (:class:`~medusa_roofline.decoding.tree.Tree` or tree file), checked
    against the table's heads and ranks so its expected tokens are defined."""
    if isinstance(candidates, (int, np.integer)) and candidates == 1:
        return []
    return list(tree_paths_for(candidates, table).paths)


def expected_tokens(table, candidates) -> dict[int, float]:
    """Expected tokens per step of the greedy tree of each candidate count."""
    table = np.asarray(table, dtype=np.float64)
    return {int(c): expected_accept_length(table, tree_paths(table, int(c))) for c in sorted(set(candidates))}


def step_times(dims: ModelDims, batch: int, kv_len: int, candidates, e: int, cal: Calibration, num_heads: int,
               medusa_heads: str = "tree", head_layers: int = MEDUSA_HEAD_LAYERS, fused: bool = False):
    """Predicted (T_ar, T_medusa per candidate count as an array) of the step :func:`step_shape` defines."""
    ar = step_shape("ar", 1, kv_len, medusa_heads)
    t_ar = float(step_time(dims, batch, ar.q_len, ar.keys, e, cal, fused=fused))
    c = np.asarray(sorted(candidates), dtype=np.int64)
    shape = step_shape("medusa", c, kv_len, medusa_heads)
    t_md = step_time(dims, batch, shape.q_len, shape.keys, e, cal, num_heads=num_heads, head_layers=head_layers,
                     heads_tokens=shape.heads_tokens, fused=fused)
    return t_ar, np.broadcast_to(np.asarray(t_md, dtype=np.float64), c.shape)


def named_trees(trees, table) -> list[Tree]:
    """Explicit trees (:class:`~medusa_roofline.decoding.tree.Tree`, tree files, or a ``{name: paths}``
    mapping as the figure rules pass them), checked against the table's heads and ranks."""
    if isinstance(trees, dict):
        trees = [Tree(name, tuple(tuple(p) for p in paths), "figure params") for name, paths in trees.items()]
    return [tree_paths_for(t, table) for t in trees or ()]


def analytic_speedup(model: str, dims: ModelDims, table, cal: Calibration, dtype: str, batch: int, kv_lens,
                     candidates, hardware: str = "", device: str = "", medusa_heads: str = "tree",
                     head_layers: int = MEDUSA_HEAD_LAYERS, fused: bool = False,
                     provenance: str = "analytic cost model", trees=()) -> pd.DataFrame:
    """One row per (kv_len, candidates): expected tokens, both predicted step latencies, their ratio, speedup.

    ``trees``: explicit trees (:func:`named_trees`), one more row per (kv_len, tree) at the tree's node
    count, in a series of its own (``seq_len S, tree NAME``), and a ``tree`` column naming each row's
    tree (``greedy-c`` for the greedy ones; the column is there only when trees are given)."""
    table = np.asarray(table, dtype=np.float64)
    num_heads = int(table.shape[0])
    e = DTYPE_BYTES[dtype]
    specs = [(c, greedy_name(c), tokens) for c, tokens in expected_tokens(table, candidates).items()]
    explicit = named_trees(trees, table)
    specs += [(t.candidates, t.name, expected_accept_length(table, list(t.paths))) for t in explicit]
    cands = sorted({c for c, _, _ in specs})
    rows = []
    for s in sorted(set(kv_lens)):
        t_ar, t_md = step_times(dims, batch, s, cands, e, cal, num_heads, medusa_heads, head_layers, fused)
        by_size = dict(zip(cands, t_md))  # a step's time depends on its node count only
        for c, name, tokens in specs:
            t = by_size[c]
            rows.append({
                "series": f"seq_len {s}" + (f", tree {name}" if from_tree_file(name) else ""),
                "source": "analytic", "model": model, "hardware": hardware,
                "device": device, "batch": batch, "kv_len": s, "candidates": c, "expected_tokens": tokens,
                "step_time_ar_s": t_ar, "step_time_medusa_s": float(t), "latency_ratio": float(t) / t_ar,
                "speedup": tokens / (float(t) / t_ar), "provenance": provenance, "tree": name,
            })
    return pd.DataFrame(rows, columns=COLUMNS + (["tree"] if explicit else []))


def acceptance_source(path) -> str:
    """What an acceptance table file is, from its content: ``measured table`` when it carries the
    ``count``/``total`` columns :mod:`..decoding.acceptance` writes, ``shipped table`` when its bytes
    are those of ``config/acceptance/default.csv``, else ``given table``."""
    try:
        with open(path, newline="") as fh:
            header = {h.strip() for h in next(csv.reader(fh), [])}
        if {"count", "total"} <= header:
            return MEASURED_TABLE
        return SHIPPED if sha256_file(path) == sha256_file(DEFAULT_ACCEPTANCE) else GIVEN
    except OSError:
        return GIVEN


def _full_depth_step(group: pd.DataFrame, model_layers: int | None, column: str = "time_s_median") -> tuple[float, str]:
    """Step time (``column``: median, p10 or p90), scaled to the model's depth when fewer layers ran."""
    by_op = group.set_index("op")
    step = float(by_op.loc["step", column])
    ran = int(by_op.loc["step", "layers"]) if "layers" in by_op.columns and pd.notna(by_op.loc["step", "layers"]) else 0
    if not model_layers or not ran or ran >= model_layers:
        return step, "measured"
    extra = [o for o in ONCE_PER_STEP if o in by_op.index]
    if "lm_head" not in extra:
        return step, f"measured ({ran} of {model_layers} layers, not scaled: no lm_head row)"
    fixed = sum(float(by_op.loc[o, column]) for o in extra)
    return (step - fixed) * model_layers / ran + fixed, f"measured, {ran} layers scaled to {model_layers}"


def _step_times(group: pd.DataFrame, model_layers: int | None) -> tuple[dict[str, float], str]:
    """Median, p10 and p90 step time (p10/p90 fall back to the median when a table lacks them)."""
    median, how = _full_depth_step(group, model_layers)
    times = {"median": median}
    for q in ("p10", "p90"):
        col = f"time_s_{q}"
        ok = col in group.columns and group.loc[group["op"].isin(["step", "lm_head", "medusa_heads"]), col].notna().all()
        times[q] = _full_depth_step(group, model_layers, col)[0] if ok else median
    return times, how


def real_tokens(generation: pd.DataFrame | None) -> dict[int, float]:
    """Tokens per step of real generation by tree size, from a generation table (``decoding.acceptance``)."""
    if generation is None or not len(generation):
        return {}
    return {int(c): float(t) for c, t in zip(generation["candidates"], generation["tokens_per_step"], strict=True)}


def measured_speedup(measured: pd.DataFrame, table, model_layers: int | None = None, batch: int | None = None,
                     hardware: str = "", acceptance: str = GIVEN, generation: pd.DataFrame | None = None,
                     trees=()) -> pd.DataFrame:
    """Speedup from measured ``step`` times: every (model, device, batch, kv_len) with an ok ``ar`` step
    and ok ``medusa-c`` steps. ``batch`` restricts to one batch size. Sweep rows only.

    Tokens per step come from ``table`` (labelled ``acceptance``: shipped / measured / given table)
    and, for every tree size in ``generation`` (real Medusa generation), also from there
    (``real generation`` rows). Series are ``seq_len S (measured step latency x <acceptance source>)``.
    Rows of a tree file's mode (``tree-NAME``, column ``tree``) take their expected tokens from that
    tree's paths, given in ``trees`` (:func:`named_trees`; a measured tree not given there is an error),
    and get a series of their own (``..., tree NAME``)."""
    if acceptance not in ACCEPTANCE_SOURCES or acceptance == REAL:
        raise ValueError(f"acceptance {acceptance!r} must be one of {SHIPPED}, {MEASURED_TABLE}, {GIVEN}")
    table = np.asarray(table, dtype=np.float64)
    explicit = {t.name: t for t in named_trees(trees, table)}
    real = real_tokens(generation)
    df = measured[(measured["status"].astype(str) == "ok")] if "status" in measured.columns else measured
    if "bench" in df.columns:
        df = df[df["bench"].astype(str) != "microbench"]
    if batch is not None:
        df = df[df["batch"] == batch]
    df = df[df["op"].isin(["step", "lm_head", "medusa_heads"])]
    steps = df[df["op"] == "step"]
    rows = []
    for (model, device, b, s), grp in df.groupby(["model", "device", "batch", "kv_len"], sort=True):
        if not ((grp["op"] == "step") & (grp["phase"] == "ar")).any():
            continue
        t_ar, how_ar = _step_times(grp[grp["phase"] == "ar"], model_layers)
        medusa = grp[grp["phase"] == "medusa"]
        names = medusa["tree"] if "tree" in medusa.columns else pd.Series("", medusa.index)
        file_tree = names.where(names.map(from_tree_file), "")  # "" for the greedy trees
        for (c, name), mgrp in medusa.groupby([medusa["candidates"], file_tree], sort=True):
            if not (mgrp["op"] == "step").any():
                continue
            if name and name not in explicit:
                raise ConfigError(f"measured speedup: rows of tree {name!r} ({model}) but its tree file is not among "
                                  f"the trees given ({', '.join(explicit) or 'none'}); list it in measure.trees")
            t_md, how_md = _step_times(mgrp, model_layers)
            first = steps[(steps["model"] == model) & (steps["device"] == device)].iloc[0]
            how = how_md if how_md == how_ar else f"{how_ar} / {how_md}"
            paths = list(explicit[name].paths) if name else tree_paths(table, int(c))
            sources = [(acceptance, expected_accept_length(table, paths))]
            if int(c) in real and not name:
                sources.append((REAL, real[int(c)]))
            for label, tokens in sources:
                rows.append({
                    "series": f"seq_len {s} ({TIMED} x {label})" + (f", tree {name}" if name else ""),
                    "source": "measured", "model": model,
                    "hardware": hardware,
                    "device": device, "batch": int(b), "kv_len": int(s), "candidates": int(c),
                    "expected_tokens": tokens, "step_time_ar_s": t_ar["median"],
                    "step_time_medusa_s": t_md["median"], "latency_ratio": t_md["median"] / t_ar["median"],
                    "speedup": tokens / (t_md["median"] / t_ar["median"]),
                    "provenance": f"{how}; acceptance: {label}; {provenance_label(first)}", "acceptance": label,
                    "speedup_p10": tokens * t_ar["p10"] / t_md["p90"],
                    "speedup_p90": tokens * t_ar["p90"] / t_md["p10"], "tree": name or greedy_name(c),
                })
    return pd.DataFrame(rows, columns=MEASURED_COLUMNS)


def bands_agree(first: pd.DataFrame, second: pd.DataFrame,
                keys=("model", "device", "batch", "kv_len", "candidates", "tree", "acceptance")) -> pd.DataFrame:
    """Two runs' measured speedups side by side, with ``agree``: their p10-p90 bands overlap."""
    keys = [k for k in keys if k in first.columns and k in second.columns]
    cols = keys + ["speedup", "speedup_p10", "speedup_p90"]
    both = first[cols].merge(second[cols], on=keys, suffixes=("_1", "_2"))
    both["agree"] = (both["speedup_p10_1"] <= both["speedup_p90_2"]) & (both["speedup_p10_2"] <= both["speedup_p90_1"])
    return both
