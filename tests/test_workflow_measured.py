"""The measured stages of the real workflow: load_model, one sweep job per mode, microbench; and no
measuring job sharing the machine with any other job of its run. All read the session's shared run
(conftest.shared_run): the tiny preset swept on the CPU, Llama 33B micro-benchmarked."""

import json
import re
from pathlib import Path

import pandas as pd
import pytest

REQUIRED = ["model", "device", "mode", "phase", "op", "candidates", "batch", "kv_len", "q_len", "keys",
            "dtype", "reps", "time_s_median", "time_s_p10", "time_s_p90", "torch", "transformers", "cuda",
            "device_name", "git_commit"]


@pytest.mark.workflow
def test_tiny_measured_end_to_end(shared_run):
    tmp_path = shared_run.workdir
    assert shared_run.config["measure"]["batch"] == [1, 2] and shared_run.config["measure"]["kv_len"] == [64]
    spec = json.loads((tmp_path / "results/models/tiny/spec.json").read_text())
    assert spec["source"] == "preset" and spec["layers_instantiated"] == 2
    assert spec["parameters"] > 0 and "config.json" in spec["sha256"]
    for mode, ops in {"ar": 17, "medusa-16": 18}.items():  # per-op rows, remainder, step; for each batch
        ops *= 2
        df = pd.read_csv(tmp_path / f"results/measured/tiny/cpu/{mode}.csv")
        assert set(REQUIRED) <= set(df.columns)
        assert len(df) == ops and (df["status"] == "ok").all()
        assert (df["time_s_median"] > 0).all()
        assert set(df["device"]) == {"cpu"}
    micro = pd.read_csv(tmp_path / "results/microbench/llama-33b/cpu.csv")
    assert set(micro["op"]) == {"qk", "softmax", "pv"} and set(micro["mode"]) == {"ar", "medusa-16"}


@pytest.mark.workflow
def test_every_figure_for_every_model_and_hardware(shared_run):
    """A figure (with its points CSV and recipe) exists for every configured pair; no row lost."""
    tmp_path, config = shared_run.workdir, shared_run.config
    assert config["analytic"]["models"] == ["llama-33b"] and config["analytic"]["hardware"] == ["a100-80gb-pcie", "a40"]
    assert config["speedup"]["models"] == ["llama-7b"] and config["speedup"]["hardware"] == ["a100-80gb-pcie"]
    root = tmp_path / "results/figures"
    expected = [("llama-33b", hardware, kind) for hardware in ("a100-80gb-pcie", "a40")
                for kind in ("qkpv_medusa", "all_ops", "mlp_spec")]
    expected += [("llama-7b", "a100-80gb-pcie", "speedup")]
    expected += [("tiny", "cpu", kind) for kind in ("qkpv_medusa_measured", "measured_vs_analytic", "speedup_measured",
                                                    "prediction")]
    expected += [(model, "all-gpus", "best_tree") for model in config["best_tree"]["models"]]
    for model, place, kind in expected:
        for ext in ("png", "svg", "csv", "recipe.json"):
            assert (root / model / place / f"{kind}.{ext}").stat().st_size > 0, (model, place, kind, ext)
    figures = root / "tiny"
    prediction = pd.read_csv(tmp_path / "results/prediction/tiny/cpu.csv")
    m = config["measure"]
    steps = (1 + len(m["candidates"]) + len(m["trees"])) * len(m["batch"]) * len(m["kv_len"])  # per mode and point
    assert (prediction["op"] == "step").sum() == steps and set(prediction["calibration"]) == {"measured"}
    # a tree file's mode: measured as its own sweep job, a star of its own with its own expected tokens
    assert (tmp_path / "results/measured/tiny/cpu/tree-mc_sim_7b_63.csv").is_file()
    speedup = pd.read_csv(figures / "cpu" / "speedup_measured.csv")
    mine = speedup[speedup["tree"] == "mc_sim_7b_63"]
    assert len(mine) and set(mine["candidates"]) == {64} and mine["series"].str.endswith(", tree mc_sim_7b_63").all()
    summary = pd.read_csv(tmp_path / "results/prediction/tiny/cpu_summary.csv")
    assert "step" in set(summary["op_family"])
    best = pd.read_csv(tmp_path / "results/best_tree/tiny.csv")
    assert set(best["calibration"]) == {"datasheet", "measured", "measured steps"}
    assert (tmp_path / "results/best_tree/tiny/datasheet/a100-80gb-pcie.csv").exists()
    assert (tmp_path / "results/best_tree/tiny/measured/cpu.csv").exists()
    measured = sum(len(pd.read_csv(p)) for p in (tmp_path / "results/measured/tiny/cpu").glob("*.csv"))
    assert len(pd.read_csv(tmp_path / "results/metrics/tiny/cpu.csv")) == measured
    micro = len(pd.read_csv(tmp_path / "results/microbench/llama-33b/cpu.csv"))
    assert len(pd.read_csv(tmp_path / "results/metrics/llama-33b/cpu.csv")) == micro


# ------------------------------------------------------------------------------ nothing beside a timer

MEASURING_RULES = ("ceilings", "sweep", "microbench")
START = re.compile(r"job start: process started at ([0-9.]+), script entered at ([0-9.]+)")
END = re.compile(r"job end at ([0-9.]+)")


def job_intervals(workdir: Path) -> list[tuple[str, str, float, float]]:
    """(rule, log file, start, end) of every job of a run: from its process start to its last line of
    Python, as medusa_roofline/entry.py logs them (epoch seconds) in the rule's log."""
    out = []
    for log in sorted((workdir / "results" / "logs").rglob("*.log")):
        text = log.read_text()
        start, end = START.search(text), END.search(text)
        assert start and end, f"{log}: no job start/end line"
        rule = log.relative_to(workdir / "results" / "logs").parts[0]
        out.append((rule, str(log), float(start.group(1)), float(end.group(1))))
    return out


def overlaps(intervals) -> list[tuple[str, str]]:
    """Pairs (measuring job, other job) whose intervals intersect."""
    return [(a[1], b[1]) for a in intervals if a[0] in MEASURING_RULES for b in intervals
            if b is not a and a[2] < b[3] and b[2] < a[3]]


def test_the_overlap_check_finds_overlaps():
    jobs = [("sweep", "s", 10.0, 20.0), ("figures", "f", 19.5, 30.0), ("analytic", "a", 0.0, 9.9),
            ("analytic", "b", 1.0, 5.0)]
    assert overlaps(jobs) == [("s", "f")]  # two non-measuring jobs may overlap; a measuring one may not
    assert overlaps(jobs[:1] + jobs[2:]) == []


@pytest.mark.workflow
def test_measuring_jobs_run_alone(shared_run):
    """A real run on 2 cores: every ceilings/sweep/microbench job ran with no other job of the run beside
    it (from the run's own logs), all with the same recorded timing thread count."""
    tmp_path, run = shared_run.workdir, shared_run.process
    assert shared_run.config["measure"]["candidates"] == [16, 32]
    jobs = job_intervals(tmp_path)
    done = re.findall(r"(\d+) of (\d+) steps \(100%\) done", run.stderr)
    assert done and len(jobs) == int(done[-1][0]) - 1, (len(jobs), done)  # every job but `all` logged
    assert sorted(rule for rule, *_ in jobs if rule in MEASURING_RULES) == [
        "ceilings", "microbench", "sweep", "sweep", "sweep", "sweep"]  # ar, medusa-16, medusa-32, tree-mc_sim_7b_63
    assert overlaps(jobs) == []
    ceilings = json.loads((tmp_path / "results/ceilings/cpu.json").read_text())
    threads = {ceilings["threads"]}
    for path in [*(tmp_path / "results/measured").rglob("*.csv"), tmp_path / "results/microbench/llama-33b/cpu.csv"]:
        threads |= set(pd.read_csv(path)["threads"])
    assert len(threads) == 1 and ceilings["launch_floor"]["floor_s"] > 0
    metrics = pd.read_csv(tmp_path / "results/metrics/tiny/cpu.csv")
    assert not metrics["sanity"].str.contains("threads_mismatch").any()
    assert {"bytes_counted", "bytes_moved", "frac_of_measured_roof_moved", "launch_bound"} <= set(metrics.columns)
