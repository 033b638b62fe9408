"""Rerun only what changed: each config knob reaches exactly the jobs that use it."""

import os
import re
import shutil
import time

import pytest
import yaml
from conftest import REPO, repo_copy, run_snakemake, run_snakemake_here

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


@pytest.fixture(scope="module")
def workflow_copy(tmp_path_factory):
    """The workflow these checks run and edit: a private copy, so an edit never reaches another test's run."""
    return repo_copy(tmp_path_factory.mktemp("repo"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_measured_config_module, workflow_copy):
    """One complete tiny run (analytic + measured) shared by the rerun checks below."""
    workdir = tmp_path_factory.mktemp("rerun")
    shutil.copy(REPO / "config" / "hardware.yaml", workdir / "hardware.yaml")
    config = dict(tiny_measured_config_module, hardware_table=str(workdir / "hardware.yaml"))
    config["analytic"] = dict(config["analytic"], hardware=["a100-80gb-pcie", "a40"])
    run = run_snakemake(workdir, config, repo=workflow_copy)
    assert run.returncode == 0, run.stderr[-3000:]
    return workdir, config, workflow_copy


@pytest.fixture(scope="module")
def tiny_measured_config_module():
    return {
        "analytic": {"models": ["tiny"], "hardware": ["a100-80gb-pcie"], "candidates": [16],
                     "batch": [1], "kv_len": [128]},
        "measure": {"models": ["tiny"], "device": "cpu", "candidates": [16], "batch": [1],
                    "kv_len": [64], "reps": 2, "warmup": 1},
        "microbench": {"models": []},
        "ceilings": {"reps": 2, "warmup": 1, "cpu_copy_mib": 8, "cpu_matmul_n": 128},
        "speedup": {"models": ["tiny"], "kv_len": [128], "max_candidates": 8},
        "best_tree": {"models": ["tiny"], "hardware": ["a100-80gb-pcie"], "batch": [1], "kv_len": [128],
                      "max_candidates": 8},
        "plot": {"formats": ["png"]},
    }


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
    jobs = dry_run(workdir, dict(config, plot={"formats": ["png"], "dpi": 120}), repo)
    assert jobs and set(jobs) - {"all"} <= PLOT_RULES
    # qk/pv, all ops and MLP charts for two GPUs; two measured charts, the measured speedup, the prediction
    # chart; the best-tree chart
    assert jobs.get("figure_analytic") == 6 and jobs.get("figure_measured") == 4
    assert jobs.get("figure_best_tree") == 1


@pytest.mark.workflow
@pytest.mark.slow
def test_new_candidate_count_adds_one_sweep_job(finished):
    workdir, config, repo = finished
    jobs = dry_run(workdir, dict(config, measure=dict(config["measure"], candidates=[16, 32])), repo)
    assert jobs["sweep"] == 1
    assert not set(jobs) & {"load_model", "microbench", "ceilings", "analytic_table", "figure_analytic"}
    assert jobs["metrics"] == 1 and jobs["figure_measured"] == 4 and jobs["prediction"] == 1


@pytest.mark.workflow
@pytest.mark.slow
def test_hardware_entry_reruns_that_hardware_and_no_sweep(finished):
    workdir, config, repo = finished
    table = yaml.safe_load((workdir / "hardware.yaml").read_text())
    original = (workdir / "hardware.yaml").read_text()
    table["a40"]["bandwidth"] = 700e9
    (workdir / "hardware.yaml").write_text(yaml.safe_dump(table))
    try:
        jobs = dry_run(workdir, config, repo)
    finally:
        (workdir / "hardware.yaml").write_text(original)
    assert jobs["analytic_table"] == 1  # the a40 table only, not the a100 one
    assert jobs["figure_analytic"] == 3  # the a40's charts only
    assert not set(jobs) & MEASURING_RULES


def touched(module: str, workdir, config, repo) -> dict[str, int]:
    """The jobs a dry run plans after ``module`` (a package file) is edited. Snakemake reruns a job when an
    input is newer than its outputs and its checksum changed, so the edit adds a comment line; the file's
    bytes and times are restored afterwards."""
    path = repo / "medusa_roofline" / module
    before, text = path.stat(), path.read_bytes()
    path.write_bytes(text + b"\n# edited by tests/test_rerun.py\n")
    now = time.time() + 5
    os.utime(path, (now, now))
    try:
        return dry_run(workdir, config, repo)
    finally:
        path.write_bytes(text)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


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
    assert jobs["sweep"] == 2  # ar and medusa-16
    jobs = touched("results/style.py", workdir, config, repo)
    assert set(jobs) - {"all"} == PLOT_RULES, jobs
    jobs = touched("analytic/costmodel.py", workdir, config, repo)
    assert {"analytic_table", "sweep", "metrics"} <= set(jobs) and "load_model" not in jobs, jobs
