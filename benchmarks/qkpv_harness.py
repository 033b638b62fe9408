#!/usr/bin/env python
"""How close does the measurement harness get to the physical roof? qk/pv of Llama 33B, every mode.

Runs the workflow's own micro-benchmark (:func:`medusa_roofline.measure.microbench.run_microbench`: every op
timed on its own, L2 flushed before every repetition, CUDA events) over the paper's grid — ar and
Medusa with 16 … 112 candidates, batch 1 … 16, kv_len 128 … 8192, Llama-33B attention shapes — for
the eager path (qk, softmax, pv) and the fused backends (one ``attn`` op each), and prints per point:

* bytes the paper counts (the cost model at the shapes run; eager unfused, ``attn`` fused) and the
  bytes the launched kernels move (:func:`medusa_roofline.analytic.moved.moved_bytes`),
* median time, achieved B/s of the moved bytes, % of the datasheet roof (``config/hardware.yaml``
  entry matched to the device name; roofline fraction at the moved bytes' OI) and % of the *measured
  copy* bandwidth (:mod:`medusa_roofline.measure.ceilings`, ``dst.copy_(src)``: read + write) reached
  by the moved bytes,
* spread p90/p10 of the repetitions,
* ``launch_bound`` (from the metrics, :func:`medusa_roofline.results.metrics.flag_launch_bound`): time
  flat while bytes grow, or within 1.5x the launch floor the ceilings measured.

It also measures the harness's own overhead: an empty timed region, and a one-element kernel with
and (CUDA) without CUDA-graph replay, each with and without the L2 flush.

Writes ``qkpv_harness.csv`` (every point), ``qkpv_harness_overhead.csv``, ``qkpv_harness_ceilings.json``
and ``qkpv_harness.md`` (summary, targets, overhead, worst points) to ``--out`` (default
``docs/results/<device-label>/``: the hardware-table key of the GPU, else a slug of its name; ``cpu``).

Targets on a GPU (reported, never asserted): eager qk/pv points moving >= 100 MB at >= 80 % of the
measured copy roof (moved bytes); p90/p10 <= 1.03 for every point moving >= 10 MB.

    python benchmarks/qkpv_harness.py                      # CUDA: the full grid
    python benchmarks/qkpv_harness.py --quick --device cpu # CPU: a few small points (CI)
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MB = 1e6
CANDIDATES = (16, 32, 48, 64, 80, 96, 112)
FULL = {
    "modes": ["ar"] + [f"medusa-{n}" for n in CANDIDATES],
    "batch": [1, 2, 4, 8, 16],
    "kv_len": [128, 256, 512, 1024, 2048, 4096, 8192],
    "reps": 50,
    "warmup": 5,
}
QUICK = {"modes": ["ar", "medusa-16"], "batch": [1], "kv_len": [128, 256], "reps": 5, "warmup": 1}
QUICK_CEILINGS = {"reps": 5, "warmup": 1, "copy_bytes": 16 << 20, "matmul_n": 256}
TARGET_BYTES = 100 * MB
TARGET_COPY_FRACTION = 0.80
SPREAD_BYTES = 10 * MB
TARGET_SPREAD = 1.03
TABLE_COLUMNS = ["attention_backend", "op", "mode", "batch", "kv_len", "kernel", "MB_counted", "MB_moved", "time_us",
                 "GB_per_s_moved", "pct_spec_roof_moved", "pct_copy_roof_moved", "spread", "launch_bound"]

log = logging.getLogger("qkpv_harness")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    ap.add_argument("--model", default="llama-33b", help="preset or local HF model directory (shapes only)")
    ap.add_argument("--dtype", default="auto", help="auto: float16 on CUDA, float32 on CPU")
    ap.add_argument("--quick", action="store_true", help="a few small points (CPU CI): ar + medusa-16, batch 1, "
                                                          "kv_len 128/256, 5 reps, small ceilings")
    ap.add_argument("--backends", default=None,
                    help="comma-separated attention backends (default: eager,sdpa,flex on CUDA; eager,sdpa on "
                         "CPU, where compiling flex takes seconds per shape)")
    ap.add_argument("--modes", default=None, help="comma-separated, e.g. ar,medusa-64 (default: ar + medusa-16…112)")
    ap.add_argument("--batch", default=None, help="comma-separated batch sizes (default 1,2,4,8,16)")
    ap.add_argument("--kv-len", default=None, help="comma-separated kv_len (default 128…8192)")
    ap.add_argument("--reps", type=int, default=None, help="timed repetitions per op (default 50; quick 5)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up calls per op (default 5; quick 1)")
    ap.add_argument("--cuda-graph", action="store_true", help="time every op as CUDA-graph replays (CUDA only)")
    ap.add_argument("--no-flex-compile", action="store_true", help="time flex uncompiled (the reference path; "
                                                                      "a CPU dry run, never a measurement)")
    ap.add_argument("--ceilings", default=None, help="ceilings JSON to use (e.g. results/ceilings/cuda.json) "
                                                     "instead of measuring them here")
    ap.add_argument("--hardware-table", default=str(REPO / "config" / "hardware.yaml"))
    ap.add_argument("--acceptance", default=None, help="acceptance table for the trees (default: the shipped one)")
    ap.add_argument("--out", default=None, help="output directory (default docs/results/<device-label>/)")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a GPU target is missed or a backend failed")
    return ap.parse_args(argv)


def _ints(text):
    return [int(x) for x in str(text).split(",") if x.strip()]


def _names(text):
    return [x.strip() for x in str(text).split(",") if x.strip()]


def device_label(dev, device_name: str, table) -> str:
    """``cpu``; for a GPU the hardware-table key matching its name, else a slug of the name."""
    from medusa_roofline.analytic.hardware import match_device

    if dev.type != "cuda":
        return "cpu"
    hw = match_device(table, device_name or "")
    if hw is not None:
        return hw.key
    return re.sub(r"[^a-z0-9]+", "-", (device_name or "cuda").lower()).strip("-") or "cuda"


# ------------------------------------------------------------------------------------------ overhead


def measure_overhead(dev, reps: int, warmup: int) -> list[dict]:
    """The harness's own floor: empty region, one-element kernel (and its CUDA-graph replay), flush on/off."""
    from medusa_roofline.measure.timing import empty_region, tiny_kernel_floor

    rows = []
    for flush in (True, False):
        e = empty_region(dev, reps=reps, warmup=warmup, flush_l2=flush)
        rows.append({"what": "empty timed region", "flush_l2": flush, "cuda_graph": False,
                     "median_us": e["median"] * 1e6, "p10_us": e["p10"] * 1e6, "p90_us": e["p90"] * 1e6})
    graphs = (False, True) if dev.type == "cuda" else (False,)
    for flush in (True, False):
        for graph in graphs:
            st = tiny_kernel_floor(dev, reps, warmup, flush, cuda_graph=graph)
            rows.append({"what": "tiny kernel (x.add_(1), 1 element)", "flush_l2": flush, "cuda_graph": graph,
                         "median_us": st.median * 1e6, "p10_us": st.p10 * 1e6, "p90_us": st.p90 * 1e6})
    return rows


# ------------------------------------------------------------------------------------------ analysis


def harness_table(metrics, ceilings: dict):
    """Metrics rows -> the harness columns: both byte counts, time, moved B/s, % roofs on the moved bytes,
    spread; ``launch_bound`` comes from the metrics."""
    copy_bw = float(ceilings["bandwidth"]["copy"]["median"])
    t = metrics.copy()
    t["bytes"] = t["bytes_moved"].where(t["bytes_moved"].notna(), t["bytes_counted"])
    t["MB_counted"] = t["bytes_counted"] / MB
    t["MB_moved"] = t["bytes_moved"] / MB
    t["moved_over_counted"] = t["bytes_moved"] / t["bytes_counted"]
    t["time_us"] = t["time_s_median"] * 1e6
    t["GB_per_s_moved"] = t["achieved_bytes_per_s_moved"] / 1e9
    t["pct_spec_roof_moved"] = 100 * t["frac_of_spec_roof_moved"]
    t["pct_copy_roof_moved"] = 100 * t["achieved_bytes_per_s_moved"] / copy_bw
    t["spread"] = t["time_s_p90"] / t["time_s_p10"]
    return t


def check_targets(table) -> list[dict]:
    """The GPU targets, evaluated on this table (never asserted here)."""
    rows = []
    eager = table[(table["attention_backend"] == "eager") & table["op"].isin(["qk", "pv"])
                  & (table["bytes"] >= TARGET_BYTES)]
    ok = eager["pct_copy_roof_moved"] >= 100 * TARGET_COPY_FRACTION
    rows.append({
        "target": f"eager qk/pv moving >= {TARGET_BYTES / MB:.0f} MB at >= {100 * TARGET_COPY_FRACTION:.0f} % of "
                  "the measured copy roof (moved bytes)",
        "points": len(eager), "passing": int(ok.sum()),
        "worst": f"{eager['pct_copy_roof_moved'].min():.1f} %" if len(eager) else "n/a",
        "met": bool(ok.all()) if len(eager) else None,
    })
    big = table[table["bytes"] >= SPREAD_BYTES]
    ok = big["spread"] <= TARGET_SPREAD
    rows.append({
        "target": f"p90/p10 <= {TARGET_SPREAD} for points moving >= {SPREAD_BYTES / MB:.0f} MB",
        "points": len(big), "passing": int(ok.sum()),
        "worst": f"{big['spread'].max():.3f}" if len(big) else "n/a",
        "met": bool(ok.all()) if len(big) else None,
    })
    return rows


def _fmt(table):
    t = table[TABLE_COLUMNS].copy()
    for col, spec in (("MB_counted", "{:.3g}"), ("MB_moved", "{:.3g}"), ("time_us", "{:.4g}"),
                      ("GB_per_s_moved", "{:.4g}"), ("pct_spec_roof_moved", "{:.1f}"),
                      ("pct_copy_roof_moved", "{:.1f}"), ("spread", "{:.3f}")):
        t[col] = [("" if not math.isfinite(v) else spec.format(v)) for v in t[col].astype(float)]
    t["launch_bound"] = t["launch_bound"].map({True: "yes", False: ""})
    return t


def markdown_table(df) -> str:
    """A pipe table (no tabulate dependency); floats with up to 4 significant digits."""
    def cell(v):
        if isinstance(v, float):
            return "" if not math.isfinite(v) else f"{v:.4g}"
        return str(v).replace("|", "\\|")

    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def markdown(table, overhead, targets, info: dict) -> str:
    import pandas as pd

    def md(df):
        return markdown_table(df) if len(df) else "(none)"

    lines = [f"# qk/pv harness: {info['model']} on {info['device_name']}", ""]
    lines += [f"- command: `{info['command']}`",
              f"- device: {info['device']} ({info['device_name']}), label `{info['label']}`, dtype {info['dtype']}",
              f"- datasheet: {info['datasheet']}",
              f"- measured copy roof: {info['copy_bw'] / 1e9:,.1f} GB/s (read {info['read_bw'] / 1e9:,.1f} GB/s); "
              f"matmul peak {info['peak'] / 1e12:,.3g} TFLOP/s",
              f"- grid: modes {info['modes']}, batch {info['batch']}, kv_len {info['kv_len']}, backends "
              f"{info['backends']}, {info['reps']} reps after {info['warmup']} warm-up, L2 flushed before every rep, "
              f"cuda_graph={info['cuda_graph']}",
              f"- versions: torch {info['torch']}, cuda {info['cuda'] or '-'}; git {info['git']}; "
              f"{info['seconds']:.0f} s wall",
              "", "## Targets (GPU; reported, not asserted)", ""]
    tg = pd.DataFrame(targets)
    tg["met"] = tg["met"].map({True: "yes", False: "no"}).fillna("n/a (no such point)")
    lines += [md(tg), ""]
    if info.get("failures"):
        lines += ["## Backends that failed (left out of every table)", ""]
        lines += [f"- `{be}`: {why}" for be, why in info["failures"].items()] + [""]
    lines += ["## Harness overhead", ""]
    lines += [md(pd.DataFrame(overhead).round(3)), ""]
    lines += ["## Per backend and op", ""]
    summary = (table.groupby(["attention_backend", "op"], sort=False)
               .agg(points=("MB_moved", "size"), max_MB_moved=("MB_moved", "max"),
                    moved_over_counted=("moved_over_counted", "median"),
                    median_pct_copy_moved=("pct_copy_roof_moved", "median"),
                    max_pct_copy_moved=("pct_copy_roof_moved", "max"),
                    median_pct_spec_moved=("pct_spec_roof_moved", "median"),
                    max_spread=("spread", "max"), launch_bound=("launch_bound", "sum"))
               .reset_index().round(3))
    lines += [md(summary), ""]
    big = table[table["bytes"] >= TARGET_BYTES].sort_values("pct_copy_roof_moved")
    lines += [f"## Worst points moving >= {TARGET_BYTES / MB:.0f} MB (lowest % of copy roof, moved bytes)", ""]
    lines += [md(_fmt(big.head(15))), ""]
    lines += ["## Largest point per backend, op and mode", ""]
    largest = table.loc[table.groupby(["attention_backend", "op", "mode"], sort=False)["bytes"].idxmax()]
    lines += [md(_fmt(largest)), ""]
    lines += ["Every point is in `qkpv_harness.csv` (with the metrics columns: FLOPs, bytes, OI, roofs, sanity).", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ main


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    import pandas as pd
    import torch

    from medusa_roofline.analytic.hardware import detect_hardware, load_ceilings, load_table
    from medusa_roofline.core.devices import dtype_name, resolve_device, resolve_dtype
    from medusa_roofline.core.io import write_csv, write_json
    from medusa_roofline.core.provenance import provenance
    from medusa_roofline.measure.ceilings import measure_ceilings
    from medusa_roofline.measure.microbench import run_microbench
    from medusa_roofline.models.source import model_dims, model_name
    from medusa_roofline.results.metrics import compute_metrics

    t0 = time.monotonic()
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = resolve_device(device, "--device")
    grid = dict(QUICK if args.quick else FULL)
    for key, value in (("modes", args.modes and _names(args.modes)), ("batch", args.batch and _ints(args.batch)),
                       ("kv_len", args.kv_len and _ints(args.kv_len)), ("reps", args.reps),
                       ("warmup", args.warmup)):
        if value is not None and value != "":
            grid[key] = value
    backends = _names(args.backends) if args.backends else (["eager", "sdpa", "flex"] if dev.type == "cuda"
                                                              else ["eager", "sdpa"])
    torch_dtype = resolve_dtype(args.dtype, dev, "--dtype")
    prov = provenance(dev)
    table_hw = load_table(args.hardware_table)
    label = device_label(dev, prov["device_name"], table_hw)
    out = Path(args.out) if args.out else REPO / "docs" / "results" / label
    out.mkdir(parents=True, exist_ok=True)

    if args.ceilings:
        ceilings = load_ceilings(args.ceilings)
        log.info("ceilings from %s", args.ceilings)
    else:
        sizes = QUICK_CEILINGS if args.quick else {"reps": 20, "warmup": 3}
        ceilings = measure_ceilings(dev, dtype_name(torch_dtype), **sizes)
    datasheet = detect_hardware(table_hw, ceilings["device_name"])

    overhead = measure_overhead(dev, reps=max(grid["reps"], 20), warmup=max(grid["warmup"], 2))

    frames, failures = [], {}
    for backend in backends:  # one run per backend: a backend that fails does not take the others with it
        try:
            frames.append(run_microbench(args.model, grid["modes"], grid["batch"], grid["kv_len"], dtype=args.dtype,
                                         device=dev, reps=grid["reps"], warmup=grid["warmup"],
                                         acceptance_table=args.acceptance, attention_backends=[backend],
                                         cuda_graph=args.cuda_graph, progress=True,
                                         flex_compile=False if args.no_flex_compile else None))
        except Exception as exc:  # noqa: BLE001 - reported in the summary, the other backends go on
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            failures[backend] = f"{type(exc).__name__}: {first}"[:500]
            log.exception("backend %s failed; going on without it", backend)
    if not frames:
        log.error("every backend failed: %s", failures)
        return 1
    rows = pd.concat(frames, ignore_index=True)
    ok = rows[rows["status"] == "ok"]
    if len(ok) < len(rows):
        log.warning("%d of %d rows ran out of memory and are left out", len(rows) - len(ok), len(rows))
    metrics = compute_metrics(ok, {model_name(args.model): model_dims(args.model)}, ceilings, datasheet)
    table = harness_table(metrics, ceilings)
    targets = check_targets(table)

    write_csv(table, out / "qkpv_harness.csv")
    write_csv(pd.DataFrame(overhead), out / "qkpv_harness_overhead.csv")
    write_json(ceilings, out / "qkpv_harness_ceilings.json")
    info = {
        "model": model_name(args.model), "device": str(dev), "device_name": prov["device_name"], "label": label,
        "dtype": dtype_name(torch_dtype),
        "datasheet": (f"{datasheet.display_name}: {datasheet.bandwidth / 1e9:,.0f} GB/s, "
                      f"{datasheet.peak_flops / 1e12:,.4g} TFLOP/s ({datasheet.source})") if datasheet else
                     "none (device not in the hardware table): % of datasheet roof is empty",
        "copy_bw": float(ceilings["bandwidth"]["copy"]["median"]), "read_bw": float(ceilings["bandwidth"]["read"]["median"]),
        "peak": float(ceilings["peak_flops_per_s"]), "modes": ",".join(grid["modes"]),
        "batch": ",".join(map(str, grid["batch"])), "kv_len": ",".join(map(str, grid["kv_len"])),
        "backends": ",".join(backends), "reps": grid["reps"], "warmup": grid["warmup"], "cuda_graph": args.cuda_graph,
        "torch": prov["torch"], "cuda": prov["cuda"],
        "git": f"{prov['git_commit'][:12]}{' (dirty)' if prov['git_dirty'] else ''}",
        "command": "python " + " ".join(shlex.quote(a) for a in [str(Path(__file__).relative_to(REPO))]
                                        + list(sys.argv[1:] if argv is None else argv)),
        "seconds": time.monotonic() - t0,
        "failures": failures,
    }
    (out / "qkpv_harness.md").write_text(markdown(table, overhead, targets, info), encoding="utf-8")

    with pd.option_context("display.width", 250, "display.max_rows", None, "display.max_columns", None):
        print(_fmt(table).to_string(index=False))
        print()
        print(pd.DataFrame(overhead).round(3).to_string(index=False))
        print()
        for t in targets:
            verdict = {True: "met", False: "NOT met", None: "n/a (no such point)"}[t["met"]]
            print(f"target: {t['target']}: {t['passing']}/{t['points']} (worst {t['worst']}) {verdict}")
        for be, why in failures.items():
            print(f"backend {be} FAILED: {why}")
    print(f"\nwrote {out}/qkpv_harness.{{csv,md}}, qkpv_harness_overhead.csv, qkpv_harness_ceilings.json")
    if args.strict and (failures or any(t["met"] is False for t in targets)):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
