#!/usr/bin/env python
"""Bytes counted (the paper's accounting) vs bytes moved (what the launched kernels read and write), per op.

Prints the tables of ``docs/bytes.md``: for the default micro-benchmark grid (Llama-33B attention shapes,
ar and Medusa 16 … 112, batch 1, kv_len 128 / 512 / 2048) the moved/counted ratio of the eager qk,
softmax and pv and of the fused backends, and for the default sweep grid (the tiny preset, batch 1 and 2,
kv_len 128 and 512) the ratio of every op a sweep row carries. Every number comes from
:func:`medusa_roofline.analytic.moved.moved_bytes`; ``--check`` also runs each eager op once on the
CPU at the micro-benchmark's shapes (float32) and counts the bytes of the ATen ops it launches
(:mod:`medusa_roofline.measure.traffic`), marking each row where the two agree at every kv_len.

    python benchmarks/moved_bytes.py            # the tables (cost model only, instant)
    python benchmarks/moved_bytes.py --check    # + the launched-ops check at 33B shapes (~1 min on 2 cores)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from medusa_roofline.analytic import costmodel, moved  # noqa: E402
from medusa_roofline.analytic.costmodel import measured_ops  # noqa: E402
from medusa_roofline.models.source import model_dims  # noqa: E402

MICRO = {"model": "llama-33b", "candidates": [16, 32, 48, 64, 80, 96, 112], "batch": 1, "kv_len": [128, 512, 2048]}
SWEEP = {"model": "tiny", "candidates": [16, 32, 48, 64, 80, 96, 112], "batch": [1, 2], "kv_len": [128, 512]}
HEADS = 4  # the default acceptance table's rows: Medusa heads of a sweep step
E = 2  # bytes per element: the ratios do not depend on it (every term scales with it)


def modes(candidates):
    return [("ar", "ar", 1)] + [(f"medusa-{c}", "medusa", c) for c in candidates]


def ratio(op, phase, dims, b, n, s, layers=0, backend="eager", kernel=""):
    counted = costmodel.row_cost(op, phase, dims, b, n, s, E, layers, HEADS).bytes
    kernels = moved.moved_bytes(op, phase, dims, b, n, s, E, layers, HEADS, backend=backend, kernel=kernel)
    return kernels / counted


def launched_ratio(op, phase, dims, b, n, kv_len):
    """moved/counted from the ATen ops one eager op launches on the CPU (float32), as the micro-benchmark
    lays out its inputs."""
    import torch

    from medusa_roofline.decoding.tree import build_tree, load_acceptance_table
    from medusa_roofline.decoding.tree_buffers import tree_buffers
    from medusa_roofline.measure.eager import eager_pv, eager_qk, eager_softmax
    from medusa_roofline.measure.microbench import attention_inputs
    from medusa_roofline.measure.traffic import count_traffic

    buffers = tree_buffers(build_tree(load_acceptance_table(), n)) if phase == "medusa" else None
    gen = torch.Generator().manual_seed(0)
    q, k, v, mask = attention_inputs(dims, b, kv_len, n, torch.float32, "cpu", buffers, gen)
    scale = dims.head_dim ** -0.5
    with torch.no_grad():
        scores = eager_qk(q, k, scale, mask)  # the mask's columns are found once, outside the count
        if op == "qk":
            traffic = count_traffic(eager_qk, q, k, scale, mask)[1]
        elif op == "softmax":
            traffic = count_traffic(eager_softmax, scores)[1]
        else:
            traffic = count_traffic(eager_pv, eager_softmax(scores), v)[1]
    counted = costmodel.row_cost(op, phase, dims, b, n, kv_len + n, 4, 0, HEADS).bytes
    return traffic.total / counted


def micro_table(check: bool) -> list[str]:
    dims = model_dims(MICRO["model"])
    b = MICRO["batch"]
    head = ["op", "mode"] + [f"kv_len {s}" for s in MICRO["kv_len"]] + (["launched ops agree"] if check else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = [(op, "eager", "") for op in costmodel.ATTENTION_OPS]
    rows += [("attn", "sdpa", "EFFICIENT_ATTENTION"), ("attn", "flex", "flex_attention (torch.compile)")]
    for op, backend, kernel in rows:
        for mode, phase, n in modes(MICRO["candidates"]):
            values = [ratio(op, phase, dims, b, n, s + n, backend=backend, kernel=kernel) for s in MICRO["kv_len"]]
            cells = [f"{op} ({backend})", mode] + [f"{v:.4f}" for v in values]
            if check:
                agree = backend == "eager" and all(
                    abs(launched_ratio(op, phase, dims, b, n, s) - v) < 1e-9 for s, v in zip(MICRO["kv_len"], values))
                cells.append("yes" if agree else ("no" if backend == "eager" else "n/a (CPU run: eager only)"))
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def sweep_table() -> list[str]:
    dims = model_dims(SWEEP["model"])
    head = ["op", "ar: moved/counted", "medusa-16 … 112: moved/counted"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for op, _ in measured_ops("medusa"):
        if op in costmodel.UNCOUNTED_OPS:
            continue  # the step's glue: no count is claimed for it
        cells = [op]
        for phase, cands in (("ar", [1]), ("medusa", SWEEP["candidates"])):
            if op == "medusa_heads" and phase == "ar":
                cells.append("-")
                continue
            values = [ratio(op, phase, dims, b, n, s + n, layers=dims.layers)
                      for n in cands for b in SWEEP["batch"] for s in SWEEP["kv_len"]]
            lo, hi = min(values), max(values)
            cells.append(f"{lo:.3f}" if abs(hi - lo) < 5e-4 else f"{lo:.3f} – {hi:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--check", action="store_true", help="also count the ATen ops of every eager point (CPU)")
    args = ap.parse_args(argv)
    print(f"### Micro-benchmark grid: {MICRO['model']} attention, batch {MICRO['batch']} (moved / counted)\n")
    print("\n".join(micro_table(args.check)))
    print(f"\n### Sweep grid: {SWEEP['model']} preset, batch {SWEEP['batch']}, kv_len {SWEEP['kv_len']} "
          "(moved / counted, min – max over the grid)\n")
    print("\n".join(sweep_table()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
