"""Shared fixtures: the repo root, and runners for the real workflow in a temporary directory."""

from __future__ import annotations

import contextlib
import io
import os
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


@pytest.fixture
def tiny_analytic_config():
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
        "plot": {"formats": ["png", "svg"]},
    }


@pytest.fixture
def tiny_measured_config(tiny_analytic_config):
    """Analytic + a minimal measured sweep of the tiny preset + a small micro-benchmark."""
    return dict(
        tiny_analytic_config,
        measure={"models": ["tiny"], "device": "cpu", "candidates": [16], "batch": [1],
                 "kv_len": [64], "reps": 2, "warmup": 1},
        microbench={"models": ["tiny"], "candidates": [16], "batch": [1], "kv_len": [64],
                    "reps": 2, "warmup": 1},
    )
