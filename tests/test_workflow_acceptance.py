"""Acceptance measured in the real workflow, by the demo: the measured table builds the model's trees and feeds
its speedup; a bad prompt file fails the acceptance job with nothing written.
(Bad acceptance and demo config values are cases of test_bad_input.py.)"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from conftest import REPO, SMALL_CEILINGS
from test_bad_input import merge, tiny_acceptance, write_file

from medusa_roofline.decoding.tree import load_acceptance_table


@pytest.mark.workflow
def test_bad_prompt_file_fails_the_acceptance_job_and_writes_nothing(tmp_path, snakemake_here, tiny_analytic_config):
    prompts = write_file(tmp_path, "prompts.jsonl", '{"input_ids": [1, 2, 3]}\n{"input_ids": [1, 999]}\n')
    config = merge(tiny_analytic_config, tiny_acceptance(tmp_path, prompts=prompts))
    run = snakemake_here(tmp_path, config, "--", "results/acceptance/tiny/acceptance.csv")
    out = run.stdout + run.stderr + "".join(p.read_text() for p in (tmp_path / "results" / "logs").rglob("*.log"))
    assert run.returncode != 0
    assert "prompts.jsonl line 2 has token id 999, beyond the model's vocabulary of 256" in out
    assert not (tmp_path / "results" / "acceptance").exists()


@pytest.mark.workflow
@pytest.mark.slow
def test_demo_config_runs_the_demo_through_the_workflow(tmp_path, snakemake_run, snakemake_here):
    """config/demo.yaml with small training budgets: base, heads, acceptance, sweep, metrics, figures. The
    measured acceptance table builds the model's trees and feeds its speedup, beside real generation. (A preset
    measured with a heads file of the user's runs the same acceptance rule: its prompt-file failure is the test
    above, its random prompts test_acceptance.py's CLI run.)"""
    demo = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    config = merge(demo, {"demo": {"base": {"steps": 10}, "heads": {"steps": 10}},
                          "measure": {"candidates": [4], "kv_len": [32], "reps": 2, "warmup": 1},
                          "ceilings": SMALL_CEILINGS})
    run = snakemake_run(tmp_path, config)
    assert run.returncode == 0, run.stderr[-3000:]
    results = tmp_path / "results"
    assert (results / "demo/demo-llama/model.safetensors").is_file()
    assert load_acceptance_table(results / "acceptance/demo-llama/acceptance.csv").shape == (4, 10)
    sweep_log = (results / "logs/sweep/demo-llama/cpu/medusa-4.log").read_text()  # the tree's table, an input
    assert "rule sweep: inputs ['results/models/demo-llama/spec.json', 'results/acceptance/demo-llama/acceptance.csv'" \
        in sweep_log
    generation = pd.read_csv(results / "acceptance/demo-llama/generation.csv")
    assert generation["candidates"].tolist() == [4] and generation["identical_to_greedy"].all()
    target = "results/figures/demo-llama/cpu/speedup_measured.csv"
    speedup = pd.read_csv(tmp_path / target)
    assert set(speedup.loc[speedup["source"] == "measured", "acceptance"]) == {"measured table", "real generation"}
    recipe = json.loads((tmp_path / target.replace(".csv", ".recipe.json")).read_text())
    assert recipe["inputs"]["acceptance"] == "results/acceptance/demo-llama/acceptance.csv"
    assert recipe["inputs"]["generation"] == "results/acceptance/demo-llama/generation.csv"
    spec = json.loads((results / "models/demo-llama/spec.json").read_text())
    assert spec["weights"] == "checkpoint"
    again = snakemake_here(tmp_path, config, "-n")
    assert "Nothing to be done" in again.stdout + again.stderr
