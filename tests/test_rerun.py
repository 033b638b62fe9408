"""Rerun only what changed: each config knob reaches exactly the jobs that use it."""

import re
import shutil

import pytest
import yaml
from conftest import REPO

PLOT_RULES = {"plot_qkpv_analytic", "figure_analytic", "figure_speedup", "figure_measured",
              "figure_speedup_measured"}
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
def finished(tmp_path_factory, tiny_measured_config_module):
    """One complete tiny run (analytic + measured) shared by the rerun checks below."""
    from conftest import run_snakemake

    workdir = tmp_path_factory.mktemp("rerun")
    shutil.copy(REPO / "config" / "hardware.yaml", workdir / "hardware.yaml")
    config = dict(tiny_measured_config_module, hardware_table=str(workdir / "hardware.yaml"))
    config["analytic"] = dict(config["analytic"], hardware=["a100-80gb-pcie", "a40"])
    run = run_snakemake(workdir, config)
    assert run.returncode == 0, run.stderr[-3000:]
    return workdir, config


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
        "plot": {"formats": ["png"]},
    }


def dry_run(workdir, config):
    from conftest import run_snakemake

    return planned_jobs(run_snakemake(workdir, config, "-n"))


@pytest.mark.workflow
@pytest.mark.slow
def test_nothing_changed_nothing_runs(finished):
    workdir, config = finished
    assert dry_run(workdir, config) == {}


@pytest.mark.workflow
@pytest.mark.slow
def test_plot_key_reruns_plots_only(finished):
    workdir, config = finished
    jobs = dry_run(workdir, dict(config, plot={"formats": ["png"], "dpi": 120}))
    assert jobs and set(jobs) - {"all"} <= PLOT_RULES
    assert jobs.get("plot_qkpv_analytic") == 2 and jobs.get("figure_measured") == 2


@pytest.mark.workflow
@pytest.mark.slow
def test_new_candidate_count_adds_one_sweep_job(finished):
    workdir, config = finished
    jobs = dry_run(workdir, dict(config, measure=dict(config["measure"], candidates=[16, 32])))
    assert jobs["sweep"] == 1
    assert not set(jobs) & {"load_model", "microbench", "ceilings", "analytic_table", "plot_qkpv_analytic"}
    assert jobs["metrics"] == 1 and {"figure_measured", "figure_speedup_measured"} <= set(jobs)


@pytest.mark.workflow
@pytest.mark.slow
def test_hardware_entry_reruns_that_hardware_and_no_sweep(finished):
    workdir, config = finished
    table = yaml.safe_load((workdir / "hardware.yaml").read_text())
    original = (workdir / "hardware.yaml").read_text()
    table["a40"]["bandwidth"] = 700e9
    (workdir / "hardware.yaml").write_text(yaml.safe_dump(table))
    try:
        jobs = dry_run(workdir, config)
    finally:
        (workdir / "hardware.yaml").write_text(original)
    assert jobs["analytic_table"] == 1  # the a40 table only, not the a100 one
    assert jobs["plot_qkpv_analytic"] == 1
    assert not set(jobs) & MEASURING_RULES
