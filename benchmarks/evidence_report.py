"""The ``report`` part of ``benchmarks/gpu_evidence.sh``: the qk/pv roofline figure and README.md of one
evidence folder, from whatever the other parts left there (a part that failed is named, not hidden)."""

from __future__ import annotations

import json
import logging
import math
import re
import traceback
from pathlib import Path

import pandas as pd

MB = 1e6
FIGURE_STEM = "qkpv_llama-33b"
LAUNCH_FACTOR = 1.5
TEST_COUNTS = re.compile(r"\d+ (passed|failed|skipped|errors?|deselected)")
log = logging.getLogger("gpu_evidence")


def _json(path: Path):
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _csv(path: Path):
    return pd.read_csv(path) if path.is_file() else None


def read_parts(out: Path) -> pd.DataFrame:
    """parts.tsv (part, exit status, seconds; the shell appends a line per run): the last run of each part."""
    path = out / "parts.tsv"
    if not path.is_file():
        return pd.DataFrame(columns=["part", "rc", "seconds"])
    parts = pd.read_csv(path, sep="\t", names=["part", "rc", "seconds"])
    return parts.drop_duplicates("part", keep="last").reset_index(drop=True)


def harness_rows(out: Path) -> pd.DataFrame | None:
    frames = [df for df in (_csv(out / "harness" / "qkpv_harness.csv"), _csv(out / "harness_flex" / "qkpv_harness.csv"))
              if df is not None]
    return pd.concat(frames, ignore_index=True) if frames else None


def draw_figure(out: Path, table: pd.DataFrame, ceilings: dict, datasheet) -> list[str]:
    from medusa_roofline.results.figures_measured import qkpv_backends
    from medusa_roofline.results.roofline import save_figure

    name = datasheet.display_name if datasheet is not None else ceilings.get("device_name", "this device")
    fig, points = qkpv_backends(table, ceilings, datasheet, f"Llama-33B qk/pv on {name}: eager vs fused attention")
    return save_figure(fig, points, out / FIGURE_STEM, formats=("png",), dpi=150)


def fused_targets(table: pd.DataFrame | None, ceilings: dict | None, datasheet, targets: dict) -> list[dict]:
    """Targets 3-5 of the GPU-evidence issue, each as measured (never asserted)."""
    rows = []
    if table is not None and datasheet is not None:
        flex = table[(table["attention_backend"] == "flex") & table["candidates"].between(64, 112)
                     & (table["kv_len"] >= 4096)]
        cap = flex["q_len"] * flex["head_dim"] / (flex["q_len"] + flex["head_dim"])
        frac = flex["achieved_bytes_per_s_moved"] / datasheet.bandwidth
        ok = (frac >= targets["flex_bandwidth"]) & (flex["oi_counted"] > cap)
        rows.append({"target": f"flex n 64-112, kv_len >= 4096: >= {targets['flex_bandwidth']:.0%} of the datasheet "
                               "bandwidth, OI above n*d/(n+d)", "points": len(flex), "passing": int(ok.sum()),
                     "worst": f"{frac.min():.1%} of datasheet B/s" if len(flex) else "n/a",
                     "met": bool(ok.all()) if len(flex) else None})
    else:
        rows.append({"target": "flex n 64-112, kv_len >= 4096 vs datasheet bandwidth", "points": 0, "passing": 0,
                     "worst": "n/a (no flex table or no datasheet entry)", "met": None})
    for what, key, need in (("copy", "copy_roof", "bandwidth"), ("bf16 matmul", "bf16_peak", "peak_flops")):
        value = None
        if ceilings is not None:
            value = (ceilings["bandwidth"]["copy"]["median"] if what == "copy"
                     else ceilings.get("matmul", {}).get("bfloat16", {}).get("median"))
        if value is None or datasheet is None:
            rows.append({"target": f"measured {what} >= {targets[key]:.0%} of the datasheet", "points": 0,
                         "passing": 0, "worst": "n/a", "met": None})
            continue
        frac = value / getattr(datasheet, need)
        rows.append({"target": f"measured {what} >= {targets[key]:.0%} of the datasheet", "points": 1,
                     "passing": int(frac >= targets[key]), "worst": f"{frac:.1%}", "met": bool(frac >= targets[key])})
    return rows


def sweep_summary(out: Path) -> pd.DataFrame | None:
    """Per mode and point: step time, the per-op rows' sum (time x calls), the ``remainder`` (instrumented
    pass minus every op interval), the closure gap (ops + remainder against step, as
    ``medusa_roofline.measure.table.step_closure``) and how many per-op rows sit within LAUNCH_FACTOR x
    their measured launch floor."""
    frames = [pd.read_csv(p) for p in sorted(out.glob("sweep_*.csv")) if p.name != "sweep_metrics.csv"]
    if not frames:
        return None
    rows = pd.concat(frames, ignore_index=True)
    rows = rows[rows["status"] == "ok"]
    out_rows = []
    for (mode, b, s), grp in rows.groupby(["mode", "batch", "kv_len"], sort=False):
        step = float(grp.loc[grp["op"] == "step", "time_s_median"].sum()) or math.nan
        remainder = float(grp.loc[grp["op"] == "remainder", "time_s_median"].sum()) or math.nan
        ops = grp[~grp["op"].isin(["step", "remainder"])]
        sum_ops = float((ops["time_s_median"] * ops["calls"]).sum())
        near = (ops["time_s_median"] <= LAUNCH_FACTOR * ops["launch_floor_s"]).sum()
        out_rows.append({"mode": mode, "batch": b, "kv_len": s, "step_ms": step * 1e3, "sum_ops_ms": sum_ops * 1e3,
                         "remainder_ms": remainder * 1e3, "gap_pct": ((sum_ops + remainder) / step - 1) * 100,
                         "ops_near_launch_floor": f"{int(near)}/{len(ops)}",
                         "op_floor_us": float(ops["launch_floor_s"].median()) * 1e6})
    summary = pd.DataFrame(out_rows)
    summary.attrs.update(model=", ".join(map(str, rows["model"].unique())),
                         layers=", ".join(map(str, rows["layers"].unique())))
    return summary


def _verdict(met) -> str:
    return {True: "yes", False: "no", None: "n/a"}[met]


def write_report(out: Path, dry: bool, harness, datasheet_for, targets: dict) -> int:
    env = _json(out / "env.json") or {}
    ceilings = _json(out / "ceilings.json")
    parts = read_parts(out)
    parts = parts[parts["part"] != "report"]  # this part's own status is only known after it returns
    command_file = out / "command.txt"
    commands = command_file.read_text(encoding="utf-8").strip().splitlines() if command_file.is_file() else []
    device_name = env.get("device_name") or (ceilings or {}).get("device_name", "")
    datasheet = datasheet_for(device_name)
    table = harness_rows(out)
    status = 0
    figure = "not drawn: no harness table or no ceilings"
    if table is not None and ceilings is not None:
        try:
            draw_figure(out, table, ceilings, datasheet)
            figure = f"`{FIGURE_STEM}.png` (points in `{FIGURE_STEM}.csv`)"
        except Exception:  # noqa: BLE001 - the README still gets written, naming the failure
            figure = "FAILED: " + traceback.format_exc().strip().splitlines()[-1]
            log.exception("figure failed")
            status = 1
    all_targets = (harness.check_targets(table) if table is not None else []) + fused_targets(
        table, ceilings, datasheet, targets)
    versions = env.get("versions", {})
    libs = env.get("libraries", {})
    gpu = (f" (compute capability {env['compute_capability']}, {env.get('memory_bytes', 0) / 2**30:.0f} GiB, "
           f"L2 {env.get('l2_bytes', 0) / 2**20:.0f} MiB)") if env.get("compute_capability") else ""
    lines = [f"# GPU evidence: {device_name or 'unknown device'}{' (CPU DRY RUN, not evidence)' if dry else ''}", "",
             "- command(s), in order: " + ("; ".join(f"`{c}`" for c in commands) or "?"),
             f"- device: {device_name}{gpu}; datasheet entry: {datasheet.key if datasheet else 'none'}",
             f"- driver {env.get('driver') or '-'}, CUDA {versions.get('cuda') or '-'}, "
             f"cuDNN {versions.get('cudnn') or '-'}, "
             f"torch {libs.get('torch', '-')}, transformers {libs.get('transformers', '-')}, "
             f"Python {libs.get('python', '-')}",
             f"- detection: `measure.device: auto` without torch -> {env.get('auto_device_without_torch', '?')}; "
             f"torch.cuda.is_available() {env.get('torch_cuda_available', '?')}"
             + (f"; problems: {'; '.join(env['problems'])}" if env.get("problems") else ""),
             "", "## Parts (wall time, exit status; the report part itself is not listed)", ""]
    parts_md = parts.assign(seconds=parts["seconds"].map(lambda s: f"{float(s):.0f}"),
                            status=parts["rc"].map(lambda rc: "ok" if int(rc) == 0 else f"FAILED ({rc})"))
    lines += [harness.markdown_table(parts_md[["part", "status", "seconds"]]) if len(parts) else "(none recorded)",
              f"\nTotal: {parts['seconds'].astype(float).sum():.0f} s. Logs: `logs/<part>.log`.", ""]
    lines += ["## Targets (as measured; none is tuned or asserted)", ""]
    if all_targets:
        tg = pd.DataFrame(all_targets)
        tg["met"] = tg["met"].map(_verdict)
        lines += [harness.markdown_table(tg), ""]
    if ceilings is not None:
        bw = ceilings["bandwidth"]
        lines += ["## Measured ceilings (`ceilings.json`)", "",
                  f"- copy {bw['copy']['median'] / 1e9:,.1f} GB/s (p10 {bw['copy']['p10'] / 1e9:,.1f}, p90 "
                  f"{bw['copy']['p90'] / 1e9:,.1f}); read {bw['read']['median'] / 1e9:,.1f} GB/s"]
        lines += [f"- matmul {k}: {v['median'] / 1e12:,.4g} TFLOP/s (p10 {v['p10'] / 1e12:,.4g}, p90 "
                  f"{v['p90'] / 1e12:,.4g})" for k, v in ceilings.get("matmul", {}).items()]
        if datasheet is not None:
            lines += [f"- datasheet {datasheet.display_name}: {datasheet.bandwidth / 1e9:,.0f} GB/s, "
                      f"{datasheet.peak_flops / 1e12:,.0f} TFLOP/s ({datasheet.source})"]
        lines += [""]
    lines += ["## qk/pv roofline", "", f"Figure: {figure}. Tables: `harness/qkpv_harness.{{csv,md}}` (eager, SDPA), "
              "`harness_flex/qkpv_harness.{csv,md}` (compiled FlexAttention; `compiles` per point), overhead in "
              "`*/qkpv_harness_overhead.csv`.", ""]
    sweep = sweep_summary(out)
    if sweep is not None:
        lines += [f"## Sweep: {sweep.attrs['model']}, {sweep.attrs['layers']} layer(s) (`sweep_<mode>.csv`, "
                  "`sweep_metrics.csv`)", "",
                  f"Per-op rows within {LAUNCH_FACTOR}x their measured launch floor (`launch_floor_s`: a 1x1 Linear "
                  "through the same timing wrapper) are launch/instrumentation-bound; `host_s_median` beside each row "
                  "is the host time between its marks.", "", harness.markdown_table(sweep.round(4)), ""]
    if (out / "flush_ab.md").is_file():
        lines += ["## L2 flush A/B", "", "See `flush_ab.md` and `flush_ab.csv`.", ""]
    if (out / "tests.txt").is_file():
        text = (out / "tests.txt").read_text(encoding="utf-8")
        counts = [ln.strip() for ln in text.splitlines() if TEST_COUNTS.search(ln)]
        lines += ["## GPU-marked tests (`tests.txt`)", "", f"`{counts[-1] if counts else 'no summary line'}`", ""]
    failed = parts[parts["rc"].astype(int) != 0]["part"].tolist()
    lines += ["## What failed", "", ", ".join(failed) if failed else "nothing", ""]
    (out / "README.md").write_text("\n".join(lines), encoding="utf-8")
    log.info("wrote %s", out / "README.md")
    return status
