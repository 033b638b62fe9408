#!/usr/bin/env python3
"""Compare the results/ trees of a local run and a Slurm run of the same workflow config.

    python3 tests/slurm/compare.py LOCAL_RESULTS SLURM_RESULTS

Rules (exit 0 and "compare: OK" when all hold, exit 1 with one line per problem otherwise):
  * both trees hold the same set of files (logs and benchmarks included: same paths only);
  * every file under analytic/ is byte-identical;
  * every CSV under measured/ (and the other timing directories in MEASURED_DIRS, default
    measured,microbench,metrics) has the same header, the same number of rows and the same
    multiset of key tuples. Key columns are the header columns named in the environment
    variable MEASURED_KEY_COLUMNS (comma separated; default below). Timings and any other
    non-key column (hostname, threads, versions, status) are ignored. Non-CSV files there
    only need to exist in both.
  * results/analytic/ and results/measured/ must not both be empty.
"""

from __future__ import annotations

import csv
import os
import sys
from collections import Counter
from pathlib import Path

DEFAULT_KEY_COLUMNS = (  # identifying columns of medusa_roofline.measure.table.COLUMNS and friends
    "bench,model,hardware,device,mode,phase,op,scope,calls,candidates,batch,kv_len,q_len,keys,"
    "layers,heads,kv_heads,head_dim,dtype,reps,warmup,attention,series,source"
)
KEY_COLUMNS = [c.strip() for c in os.environ.get("MEASURED_KEY_COLUMNS", DEFAULT_KEY_COLUMNS).split(",") if c.strip()]
MEASURED_DIRS = [d.strip().strip("/") for d in os.environ.get("MEASURED_DIRS", "measured,microbench,metrics").split(",")
                 if d.strip()]


def files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def compare_measured(rel: str, a: Path, b: Path) -> list[str]:
    head_a, rows_a = read_csv(a)
    head_b, rows_b = read_csv(b)
    if head_a != head_b:
        return [f"{rel}: header differs: local {head_a} vs slurm {head_b}"]
    problems = []
    if len(rows_a) != len(rows_b):
        problems.append(f"{rel}: {len(rows_a)} rows locally vs {len(rows_b)} under Slurm")
    keys = [c for c in head_a if c in KEY_COLUMNS]
    if not keys:
        problems.append(f"{rel}: no key column among the header {head_a} (set MEASURED_KEY_COLUMNS)")
        return problems
    ka = Counter(tuple(r[k] for k in keys) for r in rows_a)
    kb = Counter(tuple(r[k] for k in keys) for r in rows_b)
    if ka != kb:
        only_a = list((ka - kb).elements())[:3]
        only_b = list((kb - ka).elements())[:3]
        problems.append(f"{rel}: key rows {keys} differ; local only e.g. {only_a}, slurm only e.g. {only_b}")
    else:
        print(f"  measured {rel}: header ok, {len(rows_a)} rows, keys {keys} identical")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    local, slurm = Path(argv[1]), Path(argv[2])
    problems: list[str] = []
    for root in (local, slurm):
        if not root.is_dir():
            problems.append(f"{root}: no results directory")
    if problems:
        print("\n".join(f"compare: {p}" for p in problems))
        return 1
    fa, fb = files(local), files(slurm)
    for rel in sorted(fa - fb):
        problems.append(f"{rel}: only in the local run")
    for rel in sorted(fb - fa):
        problems.append(f"{rel}: only in the Slurm run")
    common = sorted(fa & fb)
    analytic = [r for r in common if r.startswith("analytic/")]
    measured = [r for r in common if r.split("/", 1)[0] in MEASURED_DIRS]
    if not analytic and not measured:
        problems.append("nothing under results/analytic/ or results/measured/ to compare")
    elif not analytic:
        print("  note: no files under results/analytic/")
    elif not measured:
        print(f"  note: no files under results/{{{','.join(MEASURED_DIRS)}}}/")
    for rel in analytic:
        if (local / rel).read_bytes() != (slurm / rel).read_bytes():
            problems.append(f"{rel}: analytic file differs byte-wise")
        else:
            print(f"  analytic {rel}: byte-identical")
    for rel in measured:
        if rel.endswith(".csv"):
            problems.extend(compare_measured(rel, local / rel, slurm / rel))
        else:
            print(f"  measured {rel}: present in both (not a CSV, content not compared)")
    print(f"  {len(common)} files in both trees, {len(analytic)} analytic, {len(measured)} measured")
    if problems:
        print("\n".join(f"compare: {p}" for p in problems))
        return 1
    print("compare: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
