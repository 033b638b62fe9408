#!/usr/bin/env python
"""Do two consecutive runs of the same config agree? Compares two ``results/`` folders.

* **Ceilings**: copy and read bandwidth, matmul peak (every dtype) and the launch floor of each run,
  and their relative difference; the target is the copy roof within 10 %.
* **Sanity**: rows flagged ``above_measured_roof`` in each run's metrics (the target on a quiet machine: 0).
* **Measured speedup**: for every (model, device, batch, kv_len, candidates) of the
  ``speedup_measured`` figures, whether the two runs' p10-p90 bands overlap
  (:func:`medusa_roofline.results.speedup.bands_agree`).

    python benchmarks/repeatability.py run1/results run2/results

Prints a short report; exits 1 when the copy roofs differ by more than 10 % or a speedup band pair
does not overlap (timings are machine facts: say under what load they were taken).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from medusa_roofline.results.speedup import bands_agree  # noqa: E402

COPY_TOLERANCE = 0.10


def ceilings(results: Path) -> dict:
    files = sorted((results / "ceilings").glob("*.json"))
    if not files:
        raise SystemExit(f"{results}: no ceilings/*.json")
    return json.loads(files[0].read_text())


def roofs(c: dict) -> dict[str, float]:
    out = {"copy B/s": c["bandwidth"]["copy"]["median"], "read B/s": c["bandwidth"]["read"]["median"]}
    out.update({f"matmul {dt} FLOP/s": v["median"] for dt, v in c["matmul"].items()})
    if "launch_floor" in c:
        out["launch floor s"] = c["launch_floor"]["floor_s"]
    return out


def flagged(results: Path) -> dict[str, int]:
    return {str(p.relative_to(results)): int(pd.read_csv(p)["sanity"].str.contains("above_measured_roof").sum())
            for p in sorted((results / "metrics").rglob("*.csv"))}


def speedups(results: Path) -> pd.DataFrame:
    frames = [pd.read_csv(p) for p in sorted((results / "figures").rglob("speedup_measured.csv"))]
    frames = [f[f["source"] == "measured"] for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("first", type=Path)
    ap.add_argument("second", type=Path)
    args = ap.parse_args(argv)
    ok = True
    a, b = roofs(ceilings(args.first)), roofs(ceilings(args.second))
    print("ceiling                  run 1        run 2     difference")
    for key in a:
        if key in b:
            diff = b[key] / a[key] - 1
            print(f"{key:22s} {a[key]:11.4g}  {b[key]:11.4g}  {100 * diff:+8.1f} %")
    copy_diff = abs(b["copy B/s"] / a["copy B/s"] - 1)
    ok &= copy_diff <= COPY_TOLERANCE
    print(f"copy roofs within {100 * COPY_TOLERANCE:.0f} %: {'yes' if copy_diff <= COPY_TOLERANCE else 'NO'}")
    for name, run in (("run 1", args.first), ("run 2", args.second)):
        print(f"{name}: rows above the measured roof: {flagged(run)}")
    first, second = speedups(args.first), speedups(args.second)
    if len(first) and len(second):
        both = bands_agree(first, second)
        ok &= bool(both["agree"].all())
        print(f"measured speedup: {int(both['agree'].sum())} of {len(both)} points agree within their p10-p90 bands")
        worst = both.assign(gap=(both["speedup_2"] / both["speedup_1"] - 1).abs()).sort_values("gap").tail(5)
        print(worst.round(3).to_string(index=False))
    else:
        print("measured speedup: no speedup_measured points in one of the runs")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
