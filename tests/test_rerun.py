"""Rerun only what changed: each config knob reaches exactly the jobs that use it."""

import contextlib
import os
import re
import time

import pytest
import yaml
from conftest import run_snakemake_here

PLOT_RULES = {"figure_analytic", "figure_speedup", "figure_measured", "figure_best_tree"}
MEASURING_RULES = {"load_model", "sweep", "microbench", "ceilings"}


def planned_jobs(run) -> dict[str, int]:
    """Job counts from a dry run's "Job stats" table ({} when nothing is to be done)."""
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


@pytest.fixture
def finished(shared_run):
    """The session's shared run (conftest.shared_run) and the copy of the workflow that made it: dry runs plan
    on it; the checks that edit a file (the hardware table, a module) edit that copy's file and restore its
    bytes and times before they return, so no other reader of the run sees the edit."""
    return shared_run.workdir, shared_run.config, shared_run.repo


def dry_run(workdir, config, repo):
    return planned_jobs(run_snakemake_here(workdir, config, "-n", repo=repo))


@pytest.mark.workflow
@pytest.mark.slow
def test_nothing_changed_nothing_runs(finished):
    workdir, config, repo = finished
    assert dry_run(workdir, config, repo) == {}


@pytest.mark.workflow
@pytest.mark.slow
def test_plot_key_reruns_plots_only(finished):
    workdir, config, repo = finished
    jobs = dry_run(workdir, dict(config, plot=dict(config["plot"], dpi=120)), repo)
    assert jobs and set(jobs) - {"all"} <= PLOT_RULES
    # qk/pv, all ops and MLP charts of Llama 33B for two GPUs; the simulated speedup; the sweep's two measured
    # charts, measured speedup and prediction chart, the micro-benchmark's three charts; four best-tree charts
    assert jobs.get("figure_analytic") == 6 and jobs.get("figure_speedup") == 1
    assert jobs.get("figure_measured") == 4 + 3 and jobs.get("figure_best_tree") == 4


@pytest.mark.workflow
@pytest.mark.slow
def test_new_candidate_count_adds_one_sweep_job(finished):
    workdir, config, repo = finished
    assert config["measure"]["candidates"] == [16, 32]
    jobs = dry_run(workdir, dict(config, measure=dict(config["measure"], candidates=[16, 32, 48])), repo)
    assert jobs["sweep"] == 1
    assert not set(jobs) & {"load_model", "microbench", "ceilings", "analytic_table", "figure_analytic"}
    assert jobs["metrics"] == 1 and jobs["figure_measured"] == 4 and jobs["prediction"] == 1  # the sweep's model


@pytest.mark.workflow
@pytest.mark.slow
def test_hardware_entry_reruns_that_hardware_and_no_sweep(finished):
    workdir, config, repo = finished
    assert config["analytic"]["hardware"] == ["a100-80gb-pcie", "a40"]
    assert config["hardware_table"] == "config/hardware.yaml"  # the shipped one: the workflow copy's file

    def slower_a40(text: bytes) -> bytes:
        table = yaml.safe_load(text)
        table["a40"]["bandwidth"] = 700e9
        return yaml.safe_dump(table).encode()

    with edited(repo / "config" / "hardware.yaml", slower_a40):  # the table the run read (the default one)
        jobs = dry_run(workdir, config, repo)
    assert jobs["analytic_table"] == 1  # the a40 table only, not the a100 one
    assert jobs["figure_analytic"] == 3  # the a40's charts only
    assert not set(jobs) & MEASURING_RULES


@contextlib.contextmanager
def edited(path, edit):
    """``path`` rewritten as ``edit(bytes)`` with a modification time in the future (Snakemake reruns a job when
    an input is newer than its outputs and its checksum changed); its bytes and times are restored on exit."""
    before, text = path.stat(), path.read_bytes()
    path.write_bytes(edit(text))
    now = time.time() + 5
    os.utime(path, (now, now))
    try:
        yield
    finally:
        path.write_bytes(text)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def touched(module: str, workdir, config, repo) -> dict[str, int]:
    """The jobs a dry run plans after ``module`` (a package file) gets a comment line."""
    with edited(repo / "medusa_roofline" / module, lambda text: text + b"\n# edited by tests/test_rerun.py\n"):
        return dry_run(workdir, config, repo)


@pytest.mark.workflow
@pytest.mark.slow
def test_editing_a_module_reruns_exactly_the_rules_that_import_it(finished):
    """Rule code inputs come from the import graph: the per-op timer is the sweep's alone, the figure
    style every figure's, the cost model everything that counts."""
    workdir, config, repo = finished
    jobs = touched("measure/op_timer.py", workdir, config, repo)
    # downstream of the sweep: metrics, the prediction error, the best tree from measured steps, their figures
    assert set(jobs) - {"all"} == {"sweep", "metrics", "prediction", "best_tree", "figure_measured",
                                   "figure_best_tree"}, jobs
    assert jobs["sweep"] == 4  # ar, medusa-16, medusa-32 and the tree from its file
    jobs = touched("results/style.py", workdir, config, repo)
    assert set(jobs) - {"all"} == PLOT_RULES, jobs
    jobs = touched("analytic/costmodel.py", workdir, config, repo)
    assert {"analytic_table", "sweep", "metrics"} <= set(jobs) and "load_model" not in jobs, jobs
