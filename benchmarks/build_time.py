#!/usr/bin/env python
"""How long does a measuring job take to build its model and Medusa heads? (issue 11: <= 8 s target)

Builds ``--model`` with ``--layers`` decoder layers (random weights: meta device, allocated on
``--device``, seeded fill there; :mod:`medusa_roofline.models.init`) plus ``--heads`` Medusa heads in
the model's dtype, ``--repeats`` times, and prints the wall time of each part, the median total and
the process's peak resident memory (after one untimed warm-up build of the tiny preset, which pays
the one-time imports every job pays anyway). Nothing here is a test: the target is reported, and asserted
only with ``--strict``.

Target: Llama-33B with 2 layers + 4 heads in <= 8 s on the project's 2-core CPU.

    python benchmarks/build_time.py                               # llama-33b, 2 layers, 4 heads, float16, cpu
    python benchmarks/build_time.py --dtype float32 --repeats 1   # what a CPU sweep builds (~10 GB)
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from medusa_roofline.core.devices import resolve_device, synchronize  # noqa: E402
from medusa_roofline.decoding.heads import random_heads  # noqa: E402
from medusa_roofline.models.load import build_model  # noqa: E402

TARGET_S = 8.0


def build_once(model_name: str, layers: int, heads: int, dtype, device) -> dict:
    synchronize(device)
    t0 = time.perf_counter()
    model = build_model(model_name, dtype, device, layers=layers)
    synchronize(device)
    t1 = time.perf_counter()
    medusa = random_heads(model, num_heads=heads)
    synchronize(device)
    t2 = time.perf_counter()
    params = sum(p.numel() for p in model.parameters()), sum(p.numel() for p in medusa.parameters())
    on_device = {p.device.type for p in [*model.parameters(), *medusa.parameters()]}
    del model, medusa
    gc.collect()
    return {"model_s": t1 - t0, "heads_s": t2 - t1, "total_s": t2 - t0, "params": params, "devices": on_device}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="llama-33b")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--strict", action="store_true", help=f"exit 1 when the median total exceeds {TARGET_S} s")
    load = ""
    if hasattr(os, "getloadavg"):
        load = f", load average {os.getloadavg()[0]:.1f} at start"
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    dtype = getattr(torch, args.dtype)
    print(f"{args.model}: {args.layers} layers + {args.heads} Medusa heads, {args.dtype} on {device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads{load}")
    t0 = time.perf_counter()
    build_once("tiny", None, 1, dtype, device)  # imports transformers' Llama code once, as any job does
    print(f"  warm-up (imports, tiny preset): {time.perf_counter() - t0:.2f} s, not counted")
    totals = []
    for i in range(args.repeats):
        r = build_once(args.model, args.layers, args.heads, dtype, device)
        totals.append(r["total_s"])
        print(f"  build {i + 1}: model {r['model_s']:.2f} s ({r['params'][0] / 1e9:.2f} B params) + heads "
              f"{r['heads_s']:.2f} s ({r['params'][1] / 1e9:.2f} B params) = {r['total_s']:.2f} s; "
              f"parameters on {sorted(r['devices'])}")
    median = statistics.median(totals)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ok = median <= TARGET_S
    print(f"median total {median:.2f} s (min {min(totals):.2f} s) vs target {TARGET_S:.0f} s: "
          f"{'met' if ok else 'MISSED'}; peak host RSS {peak_mb:.0f} MB")
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
