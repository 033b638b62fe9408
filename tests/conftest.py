"""Shared fixtures: the repo root, and runners for the real workflow in a temporary directory."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def snakemake_args(workdir: Path, config: dict | None, args) -> list[str]:
    """Snakemake's arguments for the repo's Snakefile, `config` written to `workdir` (--configfile last but `args`)."""
    cmd = ["-s", str(REPO / "Snakefile"), "--cores", "2"]
    if config is not None:
        cfg = workdir / "test-config.yaml"
        cfg.write_text(yaml.safe_dump(config))
        cmd += ["--configfile", str(cfg)]
    return cmd + list(args)


def run_snakemake(workdir: Path, config: dict | None = None, *args: str, timeout: int = 600):
    """Run the repo's Snakefile with `workdir` as working directory; returns CompletedProcess."""
    cmd = [sys.executable, "-m", "snakemake", *snakemake_args(workdir, config, args)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout, env=env)


def run_snakemake_here(workdir: Path, config: dict | None = None, *args: str):
    """The same command as run_snakemake, run by Snakemake's own command-line entry point in this process.

    For runs that stop while the workflow is parsed and its DAG built (bad input, dry runs): the real
    Snakefile and its checks, without a new interpreter importing Snakemake (~4 s each on 2 cores).
    Jobs, if any ran, would still be subprocesses. The working directory, sys.path and the environment
    (which the Snakefile extends) are restored afterwards."""
    from snakemake.cli import main

    cmd = snakemake_args(workdir, config, args)
    out, err = io.StringIO(), io.StringIO()
    saved_path, saved_env = list(sys.path), dict(os.environ)
    try:
        with contextlib.chdir(workdir), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(cmd)
                code = 0
            except SystemExit as done:
                code = done.code
    finally:
        sys.path[:] = saved_path
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess(["snakemake", *cmd], code, out.getvalue(), err.getvalue())


@pytest.fixture(autouse=True)
def no_slurm_controller(request, tmp_path_factory, monkeypatch):
    """Snakemake's Slurm plugin runs `scontrol show config` at start-up, which waits ~9 s when
    Slurm is installed but no controller runs; a failing stub makes it give up at once.
    The real-Slurm tests (test_slurm.py) keep the real commands."""
    if request.module.__name__.endswith("test_slurm"):
        return
    stub = tmp_path_factory.getbasetemp() / "no-slurm-bin"
    if not (stub / "scontrol").exists():
        stub.mkdir(exist_ok=True)
        (stub / "scontrol").write_text("#!/bin/sh\nexit 1\n")
        (stub / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{stub}{os.pathsep}{os.environ['PATH']}")


@pytest.fixture
def snakemake_run():
    return run_snakemake


@pytest.fixture
def snakemake_here():
    return run_snakemake_here


def tiny_analytic() -> dict:
    return {
        "analytic": {
            "models": ["tiny"],
            "hardware": ["a100-80gb-pcie"],
            "candidates": [16, 32],
            "batch": [1, 2],
            "kv_len": [128, 256],
        },
        "measure": {"models": []},
        "microbench": {"models": []},
        "speedup": {"models": ["tiny"], "kv_len": [128, 256], "max_candidates": 16},
        "best_tree": {"models": ["tiny"], "hardware": ["a100-80gb-pcie"], "batch": [1, 2], "kv_len": [128],
                      "max_candidates": 16},
        "plot": {"formats": ["png", "svg"]},
    }


def tiny_measured() -> dict:
    """Analytic + a minimal measured sweep of the tiny preset + a small micro-benchmark."""
    return dict(
        tiny_analytic(),
        measure={"models": ["tiny"], "device": "cpu", "candidates": [16], "batch": [1],
                 "kv_len": [64], "reps": 2, "warmup": 1},
        microbench={"models": ["tiny"], "candidates": [16], "batch": [1], "kv_len": [64],
                    "reps": 2, "warmup": 1},
    )


SMALL_CEILINGS = {"reps": 2, "warmup": 1, "cpu_copy_mib": 8, "cpu_matmul_n": 128}


@pytest.fixture
def tiny_analytic_config():
    return tiny_analytic()


@pytest.fixture
def tiny_measured_config():
    return tiny_measured()


# ---- workflow runs shared by a test session -----------------------------------------------------
# A full run costs a minute or more on 2 cores; tests that only read a run's outputs share one run
# per session. A test that changes files copies the finished directory first (copy_run).


@dataclasses.dataclass(frozen=True)
class FinishedRun:
    workdir: Path
    config: dict
    process: subprocess.CompletedProcess


def finished_run(tmp_path_factory, name: str, config: dict) -> FinishedRun:
    workdir = tmp_path_factory.mktemp(name)
    run = run_snakemake(workdir, config)
    assert run.returncode == 0, run.stderr[-3000:]
    return FinishedRun(workdir, copy.deepcopy(config), run)


def copy_run(run: FinishedRun, dest: Path) -> Path:
    """A private copy of a finished run's directory, modification times kept (Snakemake plans from them)."""
    shutil.copytree(run.workdir, dest, symlinks=True, dirs_exist_ok=True)
    return dest


@pytest.fixture(scope="session")
def tiny_measured_run(tmp_path_factory) -> FinishedRun:
    """The tiny analytic grid on two GPUs, a sweep of four modes (ar, medusa-16, medusa-32 and Medusa's own
    64-node tree from its file), the micro-benchmark and the ceilings: every analytic, measured and speedup figure kind of a CPU run."""
    config = tiny_measured()
    config["analytic"] = dict(config["analytic"], hardware=["a100-80gb-pcie", "a40"])
    config["speedup"] = dict(config["speedup"], hardware=["a100-80gb-pcie", "a40"])
    config["measure"] = dict(config["measure"], candidates=[16, 32],
                             trees=[str(REPO / "config" / "trees" / "mc_sim_7b_63.yaml")])  # + mode tree-mc_sim_7b_63
    config["ceilings"] = SMALL_CEILINGS
    config["run_name"] = "tiny-test"
    return finished_run(tmp_path_factory, "tiny-measured-run", config)


def small_default() -> dict:
    """The shipped config.yaml with its measuring sections made small (fewer points and repetitions, CPU)
    and PNG figures only. Its analytic and speedup sections are the shipped ones: test_pinned_outputs pins
    their bytes from this run, test_quiet_run checks that it prints no warning."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["measure"].update(device="cpu", candidates=[16], kv_len=[64], reps=2, warmup=1)
    config["microbench"].update(candidates=[16], batch=[1], kv_len=[64], reps=2, warmup=1)
    config["ceilings"].update(SMALL_CEILINGS)
    config["plot"].update(formats=["png"])
    return config


@pytest.fixture(scope="session")
def small_default_run(tmp_path_factory) -> FinishedRun:
    return finished_run(tmp_path_factory, "small-default-run", small_default())
