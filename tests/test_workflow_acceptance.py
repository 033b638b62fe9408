"""Acceptance measured from local models, and the demo, in the real workflow: the measured table builds
the model's trees and labels its speedup; bad heads/prompt files and bad demo grids stop with clear errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from conftest import REPO
from test_bad_input import MEASURE, merge, write_file

from medusa_roofline.decoding.heads import MedusaHeads, save_medusa_heads
from medusa_roofline.decoding.tree import load_acceptance_table

SMALL_CEILINGS = {"reps": 2, "warmup": 1, "cpu_copy_mib": 8, "cpu_matmul_n": 128}


def heads_file(tmp, num_heads=2):
    path = tmp / "inputs" / "medusa_lm_head.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_medusa_heads(MedusaHeads(64, 256, num_heads=num_heads, seed=1), path)
    return str(path)


def tiny_acceptance(tmp, **entry):
    return {"measure": dict(MEASURE, candidates=[4]),
            "acceptance": {"models": {"tiny": {"heads": heads_file(tmp), **entry}}, "top_k": 3, "max_new_tokens": 8,
                           "random_prompts": 2, "prompt_len": 4}}


DEMO = {"demo": {"enabled": True}, "measure": {"models": [], "device": "cpu", "candidates": [4], "batch": [1],
                                                "kv_len": [32], "reps": 2, "warmup": 1}}

CASES = [
    ("not-a-measured-model", lambda t: {"acceptance": {"models": {"other": {"heads": heads_file(t)}}}},
     ["acceptance.models.other", "'other' is not a measured model", "none (measure.models is empty)"]),
    ("heads-file-missing", lambda t: merge(tiny_acceptance(t), {"acceptance": {"models": {"tiny": {
        "heads": str(t / "inputs" / "nope.safetensors")}}}}),
     ["acceptance.models.tiny.heads", "nope.safetensors", "does not exist"]),
    ("prompt-file-missing", lambda t: tiny_acceptance(t, prompts=str(t / "inputs" / "nope.jsonl")),
     ["acceptance.models.tiny.prompts", "nope.jsonl", "does not exist"]),
    ("demo-tree-beyond-heads", lambda t: merge(DEMO, {"acceptance": {"top_k": 2},
                                                      "measure": {"candidates": [4, 40]}}),
     ["[40] exceed the largest tree the demo's 4 heads x top-2 table can build (31 nodes)"]),
    ("demo-kv-len-beyond-positions", lambda t: merge(DEMO, {"demo": {"base": {"max_positions": 128}},
                                                            "measure": {"kv_len": [200]}}),
     ["measure.kv_len", "204 tokens", "'demo-llama' max_position_embeddings 128"]),
    ("demo-name-taken", lambda t: merge(DEMO, {"demo": {"name": "tiny"}, "measure": {"models": ["tiny"]}}),
     ["demo.name: 'tiny' is already a measured model name"]),
    ("demo-entry-in-acceptance-models", lambda t: merge(DEMO, {"acceptance": {"models": {
        "demo-llama": {"heads": heads_file(t)}}}}),
     ["acceptance.models.demo-llama", "come from the demo rules"]),
]


@pytest.mark.workflow
@pytest.mark.parametrize("name,patch,needles", CASES, ids=[c[0] for c in CASES])
def test_bad_acceptance_or_demo_config_stops_before_any_output(tmp_path, snakemake_run, tiny_analytic_config,
                                                                name, patch, needles):
    run = snakemake_run(tmp_path, merge(tiny_analytic_config, patch(tmp_path)), "-n")
    out = run.stdout + run.stderr
    assert run.returncode != 0, out[-2000:]
    for needle in needles:
        assert needle in out, f"{needle!r} not in:\n{out[-2000:]}"
    assert not (tmp_path / "results").exists()


@pytest.mark.workflow
def test_bad_prompt_file_fails_the_acceptance_job_and_writes_nothing(tmp_path, snakemake_run, tiny_analytic_config):
    prompts = write_file(tmp_path, "prompts.jsonl", '{"input_ids": [1, 2, 3]}\n{"input_ids": [1, 999]}\n')
    config = merge(tiny_analytic_config, tiny_acceptance(tmp_path, prompts=prompts))
    run = snakemake_run(tmp_path, config, "--", "results/acceptance/tiny/acceptance.csv")
    out = run.stdout + run.stderr + "".join(p.read_text() for p in (tmp_path / "results" / "logs").rglob("*.log"))
    assert run.returncode != 0
    assert "prompts.jsonl line 2 has token id 999, beyond the model's vocabulary of 256" in out
    assert not (tmp_path / "results" / "acceptance").exists()


@pytest.mark.workflow
def test_measured_acceptance_builds_the_trees_and_labels_the_speedup(tmp_path, snakemake_run, tiny_analytic_config):
    config = merge(tiny_analytic_config, dict(tiny_acceptance(tmp_path), ceilings=SMALL_CEILINGS))
    target = "results/figures/tiny/cpu/speedup_measured.csv"
    run = snakemake_run(tmp_path, config, "--", target)
    assert run.returncode == 0, run.stderr[-3000:]
    table = load_acceptance_table(tmp_path / "results/acceptance/tiny/acceptance.csv")
    assert table.shape == (2, 3)
    generation = pd.read_csv(tmp_path / "results/acceptance/tiny/generation.csv")
    assert generation["candidates"].tolist() == [4] and generation["identical_to_greedy"].all()
    speedup = pd.read_csv(tmp_path / target)
    measured = speedup[speedup["source"] == "measured"]
    assert set(measured["acceptance"]) == {"measured table", "real generation"}
    recipe = json.loads((tmp_path / target.replace(".csv", ".recipe.json")).read_text())
    assert recipe["inputs"]["acceptance"] == "results/acceptance/tiny/acceptance.csv"
    assert recipe["inputs"]["generation"] == "results/acceptance/tiny/generation.csv"
    again = snakemake_run(tmp_path, config, "-n", "--", target)
    assert "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.workflow
@pytest.mark.slow
def test_demo_config_runs_the_demo_through_the_workflow(tmp_path, snakemake_run):
    """config/demo.yaml with small training budgets: base, heads, acceptance, sweep, metrics, figures."""
    demo = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    config = merge(demo, {"demo": {"base": {"steps": 10}, "heads": {"steps": 10}},
                          "measure": {"candidates": [4], "kv_len": [32], "reps": 2, "warmup": 1},
                          "ceilings": SMALL_CEILINGS})
    run = snakemake_run(tmp_path, config)
    assert run.returncode == 0, run.stderr[-3000:]
    results = tmp_path / "results"
    assert (results / "demo/demo-llama/model.safetensors").is_file()
    assert load_acceptance_table(results / "acceptance/demo-llama/acceptance.csv").shape == (4, 10)
    speedup = pd.read_csv(results / "figures/demo-llama/cpu/speedup_measured.csv")
    assert set(speedup.loc[speedup["source"] == "measured", "acceptance"]) == {"measured table", "real generation"}
    spec = json.loads((results / "models/demo-llama/spec.json").read_text())
    assert spec["weights"] == "checkpoint"
    again = snakemake_run(tmp_path, config, "-n")
    assert "Nothing to be done" in again.stdout + again.stderr
