#!/usr/bin/env python
"""One part of the one-shot GPU evidence run; ``benchmarks/gpu_evidence.sh`` runs every part in order,
each in its own process, so a part that fails (or is killed by its time limit) loses nothing the
others wrote.

    python3 benchmarks/gpu_evidence.py PART --out DIR [--dry-run]

Parts, in the order the shell script runs them (each writes its files under DIR as it finishes):

* ``env`` — device detection without torch (``measure.device: auto``) and with torch, hardware-table
  match, driver / CUDA / library versions: ``env.json``. Fails on a GPU run when the GPU is not
  detected or matches no hardware entry.
* ``ceilings`` — measured copy / read bandwidth and float16 + bfloat16 matmul peak: ``ceilings.json``.
* ``harness`` — ``qkpv_harness.py`` at Llama-33B shapes, eager + SDPA, on the reduced grid (ar,
  Medusa 16 and 112; batch 1 and 16; kv_len 128, 1024, 8192): ``harness/``.
* ``sweep`` — Llama-33B, 2 layers, modes ``ar`` and ``medusa-64``, batch 1 and 16 at kv_len 1024 (kv_len
  + 64 tree tokens stays within the model's 2048 positions):
  ``sweep_<mode>.csv`` (per-op and step rows), ``sweep_metrics.csv``.
* ``flush_ab`` — the L2 flush variants (none, write, read, write+read) on the same ops and points:
  ``flush_ab.csv``, ``flush_ab.md``.
* ``harness_flex`` — the harness for compiled FlexAttention alone (one compile per point; last of the
  measurements because it is the slowest): ``harness_flex/``.
* ``tests`` — the GPU-marked tests (``pytest -m gpu``): ``tests.txt``.
* ``report`` — the Llama-33B qk/pv roofline PNG + CSV (eager and fused, datasheet and measured roofs)
  and ``README.md``: command, device, versions, wall time per part, the targets of the GPU-evidence
  issue as measured.

``--dry-run`` runs every part on the CPU with a tiny grid (the ``tiny`` model for the sweep,
uncompiled flex), which is what CI runs. ``label`` prints the default output folder.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MODEL = "llama-33b"
PARTS = ("env", "ceilings", "harness", "sweep", "flush_ab", "harness_flex", "tests", "report")
FLUSH_VARIANTS = (("none", False), ("write", "write"), ("read", "read"), ("write+read", "write+read"))
GRID = {
    "gpu": {
        "device": "cuda", "dtype": "float16",
        "ceilings": {"reps": 20, "warmup": 3},
        "harness": ["--modes", "ar,medusa-16,medusa-112", "--batch", "1,16", "--kv-len", "128,1024,8192",
                    "--reps", "30", "--warmup", "5"],
        "flex": ["--backends", "flex"],
        "flush": {"modes": ["ar", "medusa-64"], "batch": [1, 16], "kv_len": [1024], "backends": ["eager", "sdpa"],
                  "reps": 30, "warmup": 5},
        "sweep": {"model": MODEL, "layers": 2, "modes": ["ar", "medusa-64"], "batch": [1, 16], "kv_len": [1024],
                  "reps": 20, "warmup": 5},
    },
    "dry": {
        "device": "cpu", "dtype": "float32",
        "ceilings": {"reps": 5, "warmup": 1, "copy_bytes": 16 << 20, "matmul_n": 256},
        "harness": ["--modes", "ar,medusa-16", "--batch", "1", "--kv-len", "128", "--reps", "3", "--warmup", "1"],
        "flex": ["--backends", "flex", "--no-flex-compile"],
        "flush": {"modes": ["ar"], "batch": [1], "kv_len": [128], "backends": ["eager"], "reps": 3, "warmup": 1},
        "sweep": {"model": "tiny", "layers": 1, "modes": ["ar", "medusa-64"], "batch": [1], "kv_len": [64],
                  "reps": 2, "warmup": 1},
    },
}
TARGETS = {"flex_bandwidth": 0.65, "copy_roof": 0.85, "bf16_peak": 0.75}

log = logging.getLogger("gpu_evidence")


def harness_module():
    """benchmarks/qkpv_harness.py (a script, not a package module): its table helpers and targets."""
    spec = importlib.util.spec_from_file_location("qkpv_harness", REPO / "benchmarks" / "qkpv_harness.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def datasheet_for(device_name: str):
    from medusa_roofline.analytic.hardware import detect_hardware, load_table

    return detect_hardware(load_table(), device_name or "")


# ------------------------------------------------------------------------------------------ parts


def part_label(out: Path, grid: dict, dry: bool) -> int:
    """Print the default output folder: docs/results/<hardware key or name slug>/ (dry run: results/)."""
    if dry:
        print(REPO / "results" / "gpu-evidence-dry-run")
        return 0
    import torch

    from medusa_roofline.analytic.hardware import load_table

    if not torch.cuda.is_available():
        print(REPO / "results" / "gpu-evidence-no-cuda")
        return 0
    dev = torch.device("cuda", 0)
    print(REPO / "docs" / "results" / harness_module().device_label(dev, torch.cuda.get_device_name(dev), load_table()))
    return 0


def part_env(out: Path, grid: dict, dry: bool) -> int:
    import pandas
    import torch
    import transformers

    from medusa_roofline.measure.ceilings import device_info
    from medusa_roofline.repro import settings

    auto = settings.torch_device({"device": "auto"})
    info = {"dry_run": dry, "auto_device_without_torch": auto, "torch_cuda_available": torch.cuda.is_available(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "libraries": {"torch": torch.__version__, "transformers": transformers.__version__,
                          "pandas": pandas.__version__, "python": sys.version.split()[0]}}
    dev = torch.device(grid["device"], 0) if grid["device"] == "cuda" else torch.device("cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        info["problem"] = "torch sees no CUDA device"
    else:
        info.update(device_info(dev))
    hw = datasheet_for(info.get("device_name", ""))
    info["hardware"] = None if hw is None else {"key": hw.key, "display_name": hw.display_name,
                                                "bandwidth": hw.bandwidth, "peak_flops": hw.peak_flops,
                                                "source": hw.source}
    problems = []
    if not dry:
        if auto != "cuda":
            problems.append(f"measure.device auto resolves to {auto!r} without torch")
        if not info["torch_cuda_available"]:
            problems.append("torch.cuda.is_available() is False")
        if hw is None:
            problems.append(f"device {info.get('device_name')!r} matches no entry of config/hardware.yaml")
    info["problems"] = problems
    write_json(info, out / "env.json")
    for p in problems:
        log.error("env: %s", p)
    log.info("env: %s, driver %s, CUDA %s, torch %s; datasheet entry %s", info.get("device_name"),
             info.get("driver"), torch.version.cuda, torch.__version__, hw.key if hw else None)
    return 1 if problems else 0


def part_ceilings(out: Path, grid: dict, dry: bool) -> int:
    from medusa_roofline.measure.ceilings import measure_ceilings

    c = measure_ceilings(grid["device"], grid["dtype"], extra_dtypes=["bfloat16"], **grid["ceilings"])
    write_json(c, out / "ceilings.json")
    log.info("ceilings: copy %.4g GB/s, read %.4g GB/s, matmul %s", c["bandwidth"]["copy"]["median"] / 1e9,
             c["bandwidth"]["read"]["median"] / 1e9,
             ", ".join(f"{k} {v['median'] / 1e12:.4g} TFLOP/s" for k, v in c["matmul"].items()))
    return 0


def _harness(out: Path, grid: dict, folder: str, extra: list[str]) -> int:
    args = ["--device", grid["device"], "--dtype", grid["dtype"], "--model", MODEL, *grid["harness"], *extra,
            "--out", str(out / folder)]
    if (out / "ceilings.json").is_file():
        args += ["--ceilings", str(out / "ceilings.json")]
    log.info("harness %s", " ".join(args))
    return harness_module().main(args)


def part_harness(out: Path, grid: dict, dry: bool) -> int:
    return _harness(out, grid, "harness", ["--backends", "eager,sdpa"])


def part_harness_flex(out: Path, grid: dict, dry: bool) -> int:
    return _harness(out, grid, "harness_flex", grid["flex"])


def _ceilings_or_none(out: Path):
    from medusa_roofline.analytic.hardware import load_ceilings

    return load_ceilings(out / "ceilings.json") if (out / "ceilings.json").is_file() else None


def part_sweep(out: Path, grid: dict, dry: bool) -> int:
    import pandas as pd

    from medusa_roofline.measure.sweep import run_sweep
    from medusa_roofline.models.source import model_dims
    from medusa_roofline.results.metrics import compute_metrics

    g = grid["sweep"]
    frames = []
    for mode in g["modes"]:
        t0 = time.monotonic()
        df = run_sweep(g["model"], mode, g["batch"], g["kv_len"], dtype=grid["dtype"], device=grid["device"],
                       layers=g["layers"], reps=g["reps"], warmup=g["warmup"], progress=True)
        write_csv(df, out / f"sweep_{mode}.csv")  # each mode on disk as soon as it is measured
        log.info("sweep %s: %d rows in %.1f s (model built and measured)", mode, len(df), time.monotonic() - t0)
        frames.append(df)
    ceilings = _ceilings_or_none(out)
    if ceilings is None:
        log.warning("sweep: no ceilings.json, so no sweep_metrics.csv")
        return 1
    rows = pd.concat(frames, ignore_index=True)
    ok = rows[rows["status"] == "ok"]
    datasheet = datasheet_for(ceilings["device_name"])
    metrics = compute_metrics(ok, {g["model"]: model_dims(g["model"])}, ceilings, datasheet)
    write_csv(metrics, out / "sweep_metrics.csv")
    return 0 if len(ok) == len(rows) else 1


def part_flush_ab(out: Path, grid: dict, dry: bool) -> int:
    import pandas as pd

    from medusa_roofline.measure.microbench import run_microbench
    from medusa_roofline.measure.timing import tiny_kernel_floor
    from medusa_roofline.models.source import model_dims
    from medusa_roofline.results.metrics import compute_metrics

    g = grid["flush"]
    ceilings = _ceilings_or_none(out)
    frames = []
    for name, flush in FLUSH_VARIANTS:
        df = run_microbench(MODEL, g["modes"], g["batch"], g["kv_len"], dtype=grid["dtype"], device=grid["device"],
                            reps=g["reps"], warmup=g["warmup"], attention_backends=g["backends"], flush_l2=flush,
                            progress=False)
        df = df[df["status"] == "ok"].copy()
        if ceilings is not None:
            metrics = compute_metrics(df, {MODEL: model_dims(MODEL)}, ceilings, None)
            df["bytes_moved"] = metrics["bytes_moved"].to_numpy()
        tiny = tiny_kernel_floor(grid["device"], g["reps"], g["warmup"], flush)
        df = pd.concat([df, pd.DataFrame([{"attention_backend": "-", "op": "tiny kernel", "mode": "-", "batch": 0,
                                           "kv_len": 0, "time_s_median": tiny.median, "time_s_p10": tiny.p10,
                                           "time_s_p90": tiny.p90, "host_s_median": tiny.host_median}])])
        df.insert(0, "flush", name)
        frames.append(df)
        log.info("flush %s: %d rows", name, len(df))
    table = pd.concat(frames, ignore_index=True)
    keep = [c for c in ("flush", "attention_backend", "op", "mode", "batch", "kv_len", "bytes_moved", "time_s_median",
                        "time_s_p10", "time_s_p90", "host_s_median", "kernel") if c in table.columns]
    table = table[keep]
    write_csv(table, out / "flush_ab.csv")
    (out / "flush_ab.md").write_text(flush_summary(table), encoding="utf-8")
    return 0


def flush_summary(table) -> str:
    """Median time per flush variant, relative to the default (read), per op and point."""
    from medusa_roofline.measure.timing import DEFAULT_FLUSH

    key = ["attention_backend", "op", "mode", "batch", "kv_len"]
    wide = table.pivot_table(index=key, columns="flush", values="time_s_median", sort=False) * 1e6
    order = [name for name, _ in FLUSH_VARIANTS if name in wide.columns]
    wide = wide[order]
    for name in order:
        if name != DEFAULT_FLUSH:
            wide[f"{name}/{DEFAULT_FLUSH}"] = wide[name] / wide[DEFAULT_FLUSH]
    wide = wide.reset_index()
    lines = ["# L2 flush A/B", "",
             f"Median time (us) per flush variant before every repetition; ratios against the default "
             f"`{DEFAULT_FLUSH}`. `none` shows what a warm cache flatters; `write` vs `read` shows the dirty-line "
             "write-back that a zeroing flush leaves inside the next timed interval.", "",
             harness_module().markdown_table(wide.round(4)), ""]
    return "\n".join(lines)


def part_tests(out: Path, grid: dict, dry: bool) -> int:
    files = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_*.py")
                   if "pytest.mark.gpu" in p.read_text(encoding="utf-8"))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", "-rs", *files]
    log.info("tests: %s", " ".join(cmd))
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    text = f"$ {' '.join(cmd)}\n(exit {run.returncode})\n\n{run.stdout}\n{run.stderr}"
    (out / "tests.txt").write_text(text, encoding="utf-8")
    print(run.stdout[-3000:])
    return run.returncode


def part_report(out: Path, grid: dict, dry: bool) -> int:
    from evidence_report import write_report  # benchmarks/evidence_report.py, beside this file

    return write_report(out, dry, harness_module(), datasheet_for, TARGETS)


# ------------------------------------------------------------------------------------------ main


def write_json(obj, path: Path) -> None:
    from medusa_roofline.core.io import write_json as atomic

    atomic(obj, path)


def write_csv(df, path: Path) -> None:
    from medusa_roofline.core.io import write_csv as atomic

    atomic(df, path)


PART_FUNCTIONS = {"label": part_label, "env": part_env, "ceilings": part_ceilings, "harness": part_harness,
                  "sweep": part_sweep, "flush_ab": part_flush_ab, "harness_flex": part_harness_flex,
                  "tests": part_tests, "report": part_report}


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("part", choices=list(PART_FUNCTIONS))
    ap.add_argument("--out", default=None, help="output folder (required for every part but label)")
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny grid (CI)")
    args = ap.parse_args(argv)
    grid = GRID["dry" if args.dry_run else "gpu"]
    if args.part == "label":
        return part_label(Path("."), grid, args.dry_run)
    if not args.out:
        ap.error("--out is required")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    return int(PART_FUNCTIONS[args.part](out, grid, args.dry_run) or 0)


if __name__ == "__main__":
    sys.exit(main())
