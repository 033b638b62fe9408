"""benchmarks/gpu_evidence.sh: the CPU dry run of every part (no snakemake, no jsonschema importable), and a
failing part that leaves the others' files and says what failed in the exit status and the README."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "gpu_evidence.sh"
PARTS = ["env", "ceilings", "harness", "sweep", "flush_ab", "harness_flex", "tests", "report"]


def run_script(tmp_path, *args, timeout=900):
    """The script with snakemake and jsonschema shadowed by packages that cannot be imported."""
    shadow = tmp_path / "shadow"
    for name in ("snakemake", "jsonschema"):
        (shadow / name).mkdir(parents=True, exist_ok=True)
        (shadow / name / "__init__.py").write_text(f"raise ImportError('{name} is not on the GPU machine')\n")
    env = dict(os.environ, PYTHONPATH=str(shadow))
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=tmp_path)


def parts_table(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "parts.tsv", sep="\t", names=["part", "rc", "seconds"])


@pytest.mark.slow
def test_dry_run_writes_every_part(tmp_path):
    out = tmp_path / "evidence"
    run = run_script(tmp_path, "--dry-run", "--out", str(out), "--budget", "1500")  # a loaded CI machine
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    parts = parts_table(out)
    assert parts["part"].tolist() == PARTS and (parts["rc"] == 0).all()
    for name in ("env.json", "ceilings.json", "harness/qkpv_harness.csv", "harness/qkpv_harness_overhead.csv",
                 "harness_flex/qkpv_harness.csv", "sweep_ar.csv", "sweep_medusa-64.csv", "sweep_metrics.csv",
                 "flush_ab.csv", "flush_ab.md", "tests.txt", "qkpv_llama-33b.png", "qkpv_llama-33b.csv",
                 "README.md", "command.txt", *[f"logs/{p}.log" for p in PARTS]):
        assert (out / name).is_file(), name
    flush = pd.read_csv(out / "flush_ab.csv")
    assert set(flush["flush"]) == {"none", "write", "read", "write+read"}
    sweep = pd.read_csv(out / "sweep_medusa-64.csv")
    assert (sweep["launch_floor_s"] > 0).all() and {"step", "qk", "medusa_heads"} <= set(sweep["op"])
    flex = pd.read_csv(out / "harness_flex" / "qkpv_harness.csv")
    assert set(flex["attention_backend"]) == {"flex"} and flex["kernel"].str.contains("not compiled").all()
    readme = (out / "README.md").read_text()
    for needle in ("CPU DRY RUN", "## Parts", "## Targets", "## Measured ceilings", "qkpv_llama-33b.png",
                   "## Sweep: tiny", "## L2 flush A/B", "skipped", "## What failed", "nothing", "--dry-run"):
        assert needle in readme, needle
    assert "=== [8/8] report" in run.stdout  # progress is printed


@pytest.mark.slow
def test_a_failing_part_leaves_the_others_and_sets_its_bit(tmp_path):
    """A GPU run on a machine without one: env fails (bit 1), the report still runs and names it; a rerun
    into the same folder whose budget is spent skips ceilings (bit 2) and still writes the report."""
    out = tmp_path / "evidence"
    run = run_script(tmp_path, "--only", "env,report", "--out", str(out), timeout=300)
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-2000:]
    assert "=== env FAILED (exit 1" in run.stdout and "=== report done" in run.stdout
    parts = parts_table(out)
    assert parts["part"].tolist() == ["env", "report"] and parts["rc"].tolist() == [1, 0]
    assert "torch.cuda.is_available() is False" in (out / "env.json").read_text()
    readme = (out / "README.md").read_text()
    assert "FAILED (1)" in readme and readme.rstrip().endswith("env") and "not drawn" in readme

    run = run_script(tmp_path, "--only", "ceilings,report", "--out", str(out), "--budget", "35", timeout=300)
    assert run.returncode == 2, run.stdout[-3000:] + run.stderr[-2000:]
    assert "ceilings SKIPPED: the 35 s budget is spent" in run.stdout
    assert not (out / "ceilings.json").exists()
    readme = (out / "README.md").read_text()
    assert "FAILED (125)" in readme and readme.rstrip().endswith("env, ceilings")
    assert len((out / "command.txt").read_text().splitlines()) == 2
