"""A first run on the shipped defaults prints no warning: warnings are kept for what a user should act on.

The run is the session's shared run (conftest.shared_run): the default config with its measurements made
small (one more sweep size, a tree file) and the tiny preset among the best-tree models, keeping every
situation the defaults create on a laptop: a CPU, which has no datasheet entry (described once, as
information); speedup.batch 4 (the paper's) while the sweep measures batch 1 and 2; the paper layer on the
A100 PCIe qk/pv chart.
"""

from __future__ import annotations

import re

import pytest
import yaml
from conftest import REPO

WARNING = re.compile(r"warn", re.IGNORECASE)
TIMING_DEPENDENT = re.compile(r"sanity flags on \d+ row")
"""The metrics job's flag of measured points above the measured roof: whether it fires depends on the
machine's caches and load while the ceilings and the sweep are timed, not on the config. The
measurement owns that warning (results/metrics.py); this test is about the config's own situations."""


@pytest.mark.workflow
@pytest.mark.slow
def test_the_default_run_prints_no_warning(shared_run):
    config, run, tmp_path = shared_run.config, shared_run.process, shared_run.workdir
    defaults = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert config["measure"]["batch"] == defaults["measure"]["batch"] and config["speedup"]["batch"] == 4
    assert config["measure"]["device"] == "cpu" and config["plot"]["paper_overlay"]["analytic"]
    lines = (run.stdout + run.stderr).splitlines()
    warnings = [ln for ln in lines if WARNING.search(ln) and not TIMING_DEPENDENT.search(ln)]
    assert not warnings, "\n".join(warnings)
    # the CPU is described once per job that reads the hardware table, as information
    metrics_log = (tmp_path / "results/logs/metrics/tiny/cpu.log").read_text()
    assert len(re.findall(r"INFO .*no datasheet entry in the hardware table", metrics_log)) == 1
    figures = tmp_path / "results/figures"
    assert (figures / "tiny/cpu/speedup_measured.png").is_file()  # drawn at the largest measured batch
    recipe = yaml.safe_load((figures / "tiny/cpu/speedup_measured.recipe.json").read_text())
    assert recipe["params"]["batch"] == 2
    qkpv = yaml.safe_load((figures / "llama-33b/a100-80gb-pcie/qkpv_medusa.recipe.json").read_text())
    assert "paper" in qkpv["inputs"]  # the paper layer, on by default there
