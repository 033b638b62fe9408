#!/usr/bin/env python
"""Do the sweep's per-op rows plus ``remainder`` add up to the measured ``step``? (issue 11: within 10 %)

Runs the measured sweep (:func:`medusa_roofline.measure.sweep.run_sweep`) over the default CPU grid —
the ``tiny`` preset, ar and every Medusa candidate count, batch 1-2, kv_len 128 and 512 — and prints,
per point and per mode, :func:`medusa_roofline.measure.table.step_closure`: the per-op medians x calls,
the measured remainder (the instrumented pass minus every op interval), their sum and its gap to the
uninstrumented step (``gap = covered / step - 1``). The uninstrumented and the instrumented pass
alternate round by round, so both see the same machine; what is left in the gap is the
instrumentation's own cost and noise. Nothing here is a test: the target is reported, and asserted
only with ``--strict`` (every mode's median |gap| <= 10 %).

    python benchmarks/step_closure.py                       # the default grid, 10 reps (as config.yaml)
    python benchmarks/step_closure.py --reps 30 --out /tmp/closure.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from medusa_roofline.measure.sweep import run_sweep  # noqa: E402
from medusa_roofline.measure.table import step_closure  # noqa: E402

TARGET = 0.10
MODES = ["ar"] + [f"medusa-{n}" for n in (16, 32, 48, 64, 80, 96, 112)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--batch", default="1,2")
    ap.add_argument("--kv-len", default="128,512")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="measure the whole grid this many times; each point's gap is the median over them")
    ap.add_argument("--out", default=None, help="write the per-point closure table to this CSV")
    ap.add_argument("--strict", action="store_true", help=f"exit 1 when a mode's median |gap| exceeds {TARGET:.0%}")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    ints = lambda text: [int(x) for x in text.split(",")]  # noqa: E731
    runs = []
    for _ in range(args.repeats):
        frames = [run_sweep(args.model, mode, ints(args.batch), ints(args.kv_len), reps=args.reps,
                            warmup=args.warmup, progress=False) for mode in args.modes.split(",")]
        runs.append(step_closure(pd.concat(frames, ignore_index=True)))
    keys = ["model", "mode", "batch", "kv_len"]
    closure = pd.concat(runs).groupby(keys, sort=False).median().reset_index()
    if args.out:
        closure.to_csv(args.out, index=False)
    print(f"{args.model}, {args.reps} reps, {args.repeats} repeat(s) of the grid (median gap per point), "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print(closure.assign(step_ms=closure["step_s"] * 1e3, ops_ms=closure["ops_s"] * 1e3,
                         remainder_ms=closure["remainder_s"] * 1e3, gap_pct=closure["gap"] * 100)
          [["mode", "batch", "kv_len", "step_ms", "ops_ms", "remainder_ms", "gap_pct"]].round(2).to_string(index=False))
    per_mode = closure.assign(abs_gap=closure["gap"].abs()).groupby("mode", sort=False)["abs_gap"]
    summary = pd.DataFrame({"median_abs_gap_pct": per_mode.median() * 100, "max_abs_gap_pct": per_mode.max() * 100})
    print("\nper mode (|gap| over the batch x kv_len points):")
    print(summary.round(1).to_string())
    missed = summary.index[summary["median_abs_gap_pct"] > TARGET * 100].tolist()
    print(f"\ntarget: median |gap| <= {TARGET:.0%} per mode: {'met' if not missed else 'MISSED for ' + ', '.join(missed)}")
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
