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


def snakemake_args(workdir: Path, config: dict | None, args, repo: Path = REPO) -> list[str]:
    """Snakemake's arguments for the Snakefile of `repo` (this clone, or a :func:`repo_copy`), `config` written to
    `workdir` (--configfile last but `args`)."""
    cmd = ["-s", str(repo / "Snakefile"), "--cores", "2"]
    if config is not None:
        cfg = workdir / "test-config.yaml"
        cfg.write_text(yaml.safe_dump(config))
        cmd += ["--configfile", str(cfg)]
    return cmd + list(args)


def run_snakemake(workdir: Path, config: dict | None = None, *args: str, timeout: int = 600, repo: Path = REPO):
    """Run the Snakefile of `repo` with `workdir` as working directory; returns CompletedProcess."""
    cmd = [sys.executable, "-m", "snakemake", *snakemake_args(workdir, config, args, repo)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout, env=env)


def run_snakemake_here(workdir: Path, config: dict | None = None, *args: str, repo: Path = REPO):
    """The same command as run_snakemake, run by Snakemake's own command-line entry point in this process.

    For runs that stop while the workflow is parsed and its DAG built (bad input, dry runs): the real
    Snakefile and its checks, without a new interpreter importing Snakemake (~4 s each on 2 cores).
    Jobs, if any ran, would still be subprocesses. The working directory, sys.path and the environment
    (which the Snakefile extends) are restored afterwards. For a :func:`repo_copy` the package modules this
    process holds are set aside while the copy's Snakefile imports its own, and put back afterwards."""
    from snakemake.cli import main

    cmd = snakemake_args(workdir, config, args, repo)
    out, err = io.StringIO(), io.StringIO()
    saved_path, saved_env = list(sys.path), dict(os.environ)
    saved_modules = _pop_package_modules() if repo != REPO else None
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
        if saved_modules is not None:
            _pop_package_modules()  # the copy's
            sys.modules.update(saved_modules)
    return subprocess.CompletedProcess(["snakemake", *cmd], code, out.getvalue(), err.getvalue())


def _pop_package_modules() -> dict:
    """Remove this process's ``medusa_roofline`` modules from ``sys.modules``; returns them."""
    names = [name for name in sys.modules if name == "medusa_roofline" or name.startswith("medusa_roofline.")]
    return {name: sys.modules.pop(name) for name in names}


WORKFLOW_FILES = ("Snakefile", "workflow", "scripts", "config", "profiles", "envs", "medusa_roofline")
"""What a copy of the workflow needs to run: the Snakefile, its rules, scripts, config, profile, conda environments
and package."""


def repo_copy(dest: Path) -> Path:
    """A private copy of the workflow (:data:`WORKFLOW_FILES`, modification times kept) for tests that edit its
    files: editing this clone's package would reach every workflow other test workers run at the same time."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, dest / name)
    return dest


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


SMALL_CEILINGS = {"reps": 2, "warmup": 1, "cpu_copy_mib": 8, "cpu_matmul_n": 128}


@pytest.fixture
def tiny_analytic_config():
    return tiny_analytic()


# ---- workflow runs shared by a test session -----------------------------------------------------
# A full run costs a minute or more on 2 cores; tests that only read a run's outputs share one run
# per session. A test that changes files copies the finished directory first (copy_run).


@dataclasses.dataclass(frozen=True)
class FinishedRun:
    workdir: Path
    config: dict
    process: subprocess.CompletedProcess
    repo: Path = REPO
    """The workflow that made the run (this clone, or a :func:`repo_copy`): later Snakemake calls on the run
    must use it, since rules' code inputs are its package files."""


def finished_run(tmp_path_factory, name: str, config: dict, repo: Path = REPO) -> FinishedRun:
    workdir = tmp_path_factory.mktemp(name)
    run = run_snakemake(workdir, config, repo=repo)
    assert run.returncode == 0, run.stderr[-3000:]
    return FinishedRun(workdir, copy.deepcopy(config), run, repo)


def changed_pins(root: Path, pins: dict[str, str]) -> list[str]:
    """The files of ``pins`` (path under ``root`` -> sha256) whose bytes are not the pinned ones."""
    from medusa_roofline.core.io import sha256_file

    return sorted(path for path, digest in pins.items() if sha256_file(root / path) != digest)


def copy_run(run: FinishedRun, dest: Path) -> Path:
    """A private copy of a finished run's directory, modification times kept (Snakemake plans from them)."""
    shutil.copytree(run.workdir, dest, symlinks=True, dirs_exist_ok=True)
    return dest


def shared_config() -> dict:
    """The shipped config.yaml, run small: its measuring sections on the CPU with fewer points and repetitions, one
    more sweep size and Medusa's own 64-node tree from its file; the tiny preset among the best-tree models (its
    trees from measured steps); PNG and SVG figures. Every other key is the shipped one: test_pinned_outputs pins
    the analytic and speedup bytes from this run, test_quiet_run checks that it prints no warning."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["measure"].update(device="cpu", candidates=[16, 32], kv_len=[64], reps=2, warmup=1,
                             trees=[str(REPO / "config" / "trees" / "mc_sim_7b_63.yaml")])  # + mode tree-mc_sim_7b_63
    config["microbench"].update(candidates=[16], batch=[1], kv_len=[64], reps=2, warmup=1)
    config["ceilings"].update(SMALL_CEILINGS)
    config["best_tree"]["models"] = [*config["best_tree"]["models"], "tiny"]
    config["plot"].update(formats=["png", "svg"])
    return config


@pytest.fixture(scope="session")
def shared_run(tmp_path_factory) -> FinishedRun:
    """The session's one workflow run (:func:`shared_config`): every analytic, measured, speedup and best-tree figure
    kind of a CPU run. Made by a private copy of the workflow (``.repo``), whose files test_rerun edits, on the
    same worker as every other reader of the run, restoring each file's bytes and times before it returns."""
    repo = repo_copy(tmp_path_factory.mktemp("shared-repo"))
    return finished_run(tmp_path_factory, "shared-run", shared_config(), repo)


# ---- running the suite on several workers (pytest-xdist: README's `-n auto`) ----------------------
# A session fixture runs once per worker that uses it, so every test of a shared workflow run must land on one
# worker. xdist's own `--dist loadgroup` marks do not group under pytest 9.2 (xdist 3.8 renames `item._nodeid`,
# which pytest 9 no longer reads), so the scheduler below groups by test module instead.
SHARED_RUN_MODULES = {
    "shared_run": ("test_archive.py", "test_pinned_outputs.py", "test_quiet_run.py", "test_report.py",
                   "test_rerun.py", "test_workflow_analytic.py", "test_workflow_measured.py"),
}
"""The modules whose tests read a shared workflow run: one unit of work for the workers."""

MODULES_KEPT_TOGETHER = ("test_codedeps.py", "test_archive_integrity.py")
"""Modules whose module-scoped fixture costs seconds (an interpreter per script, test_archive's packed figures):
one unit of work each, so the fixture runs once per module."""

WORK_UNITS = {module: group for group, modules in SHARED_RUN_MODULES.items() for module in modules}
WORK_UNITS.update({module: module for module in MODULES_KEPT_TOGETHER})


def module_file(nodeid: str) -> str:
    """The file name of a test's module (``test_rerun.py`` for ``tests/test_rerun.py::test_x``)."""
    return nodeid.split("::", 1)[0].rsplit("/", 1)[-1]


def work_unit(nodeid: str) -> str:
    """The unit of work a test belongs to: its group (:data:`WORK_UNITS`), or the test itself."""
    return WORK_UNITS.get(module_file(nodeid), nodeid)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """With ``-n N`` (xdist's default ``--dist load``): xdist's load-scope scheduler over :func:`work_unit`."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedRunScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            return work_unit(nodeid)

    return SharedRunScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    """A test that uses a shared run from a module :data:`SHARED_RUN_MODULES` does not list would run that
    workflow a second time on another worker: refuse it, naming the test and the fixture. Then the longest
    units of work first (:func:`heavy_first`)."""
    for item in items:
        module = module_file(item.nodeid)
        for run, modules in SHARED_RUN_MODULES.items():
            if run in getattr(item, "fixturenames", ()) and module not in modules:
                raise pytest.UsageError(f"{item.nodeid} uses the shared workflow run {run}; add {module} to "
                                        f"SHARED_RUN_MODULES[{run!r}] in tests/conftest.py")
    items[:] = heavy_first(items)


def heavy_first(items):
    """The tests in collection order, except that units of work (:func:`work_unit`) holding a workflow run come
    first, then those holding another slow test: the workers hand out units in this order, and a minute-long
    unit started last would leave the other workers idle while it runs."""
    weight = {}
    for item in items:
        unit = work_unit(item.nodeid)
        rank = 0 if item.get_closest_marker("workflow") else 1 if item.get_closest_marker("slow") else 2
        weight[unit] = min(weight.get(unit, 2), rank)
    return sorted(items, key=lambda item: weight[work_unit(item.nodeid)])  # stable: collection order within a rank


def pytest_configure(config):
    """On an xdist worker, torch in the test process uses one thread: two workers on two cores with torch's
    default thread count each would wait at every op's barrier for a core the other holds."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)
