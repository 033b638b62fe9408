"""The best tree size per GPU: hand-worked cases, ties, the batch rule over the default table, and new GPUs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO

from medusa_roofline.analytic.hardware import load_table
from medusa_roofline.analytic.predict import Calibration
from medusa_roofline.decoding.tree import Tree, load_acceptance_table, tree_paths_for
from medusa_roofline.models.source import ModelDims, model_dims
from medusa_roofline.repro import settings
from medusa_roofline.results.best_tree import COLUMNS, batch_growth_exceptions, best_tree_table, best_tree_tables

ONES = ModelDims(hidden=1, heads=1, kv_heads=1, head_dim=1, intermediate=1, layers=1, vocab=1, max_positions=0)
HAND = Calibration("datasheet", peak_flops=1.0, bandwidth=2.0, per_launch_s=0.0, source="by hand")
ROOT_AND_FIRST = Tree("one-path", ((0,),))
"""A reference tree of 2 nodes: the root and head 0's first proposal."""


def test_no_tree_pays_on_a_compute_bound_toy():
    """Every dimension 1 (test_speedup's hand case): T_ar 79, T(2) 174, T(3) 283 -> speedups 1, 1.5·79/174,
    1.8·79/283; plain decoding (n = 1) wins."""
    df = best_tree_table("ones", ONES, np.array([[0.5, 0.3]]), HAND, "float16", [1], [1], max_candidates=3,
                         reference=ROOT_AND_FIRST, hardware="hw", display_name="HW")
    assert list(df.columns) == COLUMNS and len(df) == 1
    r = df.iloc[0]
    assert (r["best_candidates"], r["best_speedup"], r["best_expected_tokens"]) == (1, 1.0, 1.0)
    assert r["ar_step_time_s"] == pytest.approx(79) and r["best_step_time_s"] == pytest.approx(79)
    assert r["reference_speedup"] == pytest.approx(1.5 * 79 / 174) and r["reference_expected_tokens"] == 1.5
    assert (r["reference_tree"], r["reference_candidates"]) == ("one-path", 2)


def test_ties_go_to_the_smaller_tree():
    """Launch-bound steps cost the same for every tree; a second node that is never accepted adds nothing:
    trees of 2 and 3 tie (2 tokens per step over 46 + 5 launches vs 46) and the best is 2."""
    floor = Calibration("datasheet", 1e30, 1e30, 1.0, "floor")
    df = best_tree_table("ones", ONES, np.array([[1.0, 0.0]]), floor, "float32", [1, 4], [1, 64], max_candidates=3,
                         reference=Tree("two", ((0,), (1,))), hardware="hw", display_name="HW")
    assert set(df["best_candidates"]) == {2}
    assert df["best_speedup"].tolist() == pytest.approx([2 * 46 / 51] * 4)
    assert df["reference_speedup"].tolist() == pytest.approx(df["best_speedup"].tolist())


@pytest.fixture(scope="module")
def default_tables():
    """The default config's datasheet tables (every model and GPU), as the workflow computes them."""
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["best_tree"]
    table = load_table(REPO / "config" / "hardware.yaml")
    frames = []
    for model in cfg["models"]:
        acceptance = load_acceptance_table()
        tables = best_tree_tables(model, model_dims(model), acceptance, [table[k] for k in cfg["hardware"]],
                                  cfg["dtype"], cfg["batch"], cfg["kv_len"], cfg["max_candidates"],
                                  tree_paths_for(REPO / cfg["reference_tree"], acceptance))
        frames += tables.values()
    return pd.concat(frames, ignore_index=True)


def test_default_table_covers_every_point(default_tables):
    assert set(default_tables["hardware"]) == {"a100-80gb-pcie", "a40", "h100-sxm", "h200"}
    assert set(default_tables["model"]) == {"llama-7b", "llama-13b", "llama-33b"}
    assert len(default_tables) == 3 * 4 * 7 * 4
    assert set(default_tables["reference_tree"]) == {"mc_sim_7b_63"} and set(default_tables["reference_candidates"]) == {64}
    # Medusa's tree is one of the 64-node trees the search could pick, and not a better one than the greedy 64
    assert (default_tables["best_speedup"] >= default_tables["reference_speedup"]).all()
    assert (default_tables["best_speedup"] >= 1.0).all()  # plain decoding is always a candidate


KNOWN_EXCEPTIONS: list[tuple[str, str, int, int]] = []
"""(model, hardware, kv_len, batch) where the best tree grows with the batch alone; README explains each."""


def test_best_tree_does_not_grow_with_the_batch(default_tables):
    """The roofline argument: a larger batch at a fixed kv_len never wants a larger tree (ties: smaller tree)."""
    grows = batch_growth_exceptions(default_tables)
    found = sorted(zip(grows["model"], grows["hardware"], grows["kv_len"], grows["batch"]))
    assert found == KNOWN_EXCEPTIONS


def test_batch_growth_exceptions_finds_a_growing_row():
    df = pd.DataFrame({"model": "m", "hardware": "h", "calibration": "datasheet", "kv_len": 128,
                       "batch": [1, 2, 4], "best_candidates": [64, 80, 16]})
    assert batch_growth_exceptions(df)["batch"].tolist() == [2]


def test_a_new_gpu_gets_its_table_and_panel(tmp_path):
    """`best_tree.hardware: [all]` lists every entry of the hardware table: a new entry is a new table and panel."""
    hw = yaml.safe_load((REPO / "config" / "hardware.yaml").read_text())
    hw["my-gpu"] = {"display_name": "My GPU", "bandwidth": 1.0e12, "peak_flops": 1.0e14, "source": "test",
                    "match": ["My GPU"]}
    (tmp_path / "hw.yaml").write_text(yaml.safe_dump(hw))
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["hardware_table"] = str(tmp_path / "hw.yaml")
    config["best_tree"].update(models=["tiny"], hardware=["all"])
    config["measure"]["device"] = "cpu"
    resolved = settings.resolve(config, REPO)
    assert "my-gpu" in resolved.best_tree.hardware and len(resolved.best_tree.hardware) == len(hw)
    table = load_table(tmp_path / "hw.yaml")
    tables = best_tree_tables("tiny", model_dims("tiny"), load_acceptance_table(), [table[k] for k in
                              resolved.best_tree.hardware], "float16", [1, 2], [128], 16, ROOT_AND_FIRST)
    assert "datasheet/my-gpu" in tables
    from medusa_roofline.results.figures_analytic import best_tree_figure

    fig, points = best_tree_figure(pd.concat(tables.values()), "tiny")
    assert "My GPU" in set(points["panel"]) and points["panel"].nunique() == len(hw)


def test_all_stands_alone():
    from medusa_roofline.core.errors import ConfigError

    section = {"models": [], "hardware": ["all", "a40"], "dtype": "float16", "attention": "unfused", "batch": [1],
               "kv_len": [1], "max_candidates": 8, "reference_tree": "config/trees/mc_sim_7b_63.yaml",
               "acceptance_table": None}
    with pytest.raises(ConfigError, match="'all' stands alone"):
        settings.resolve_best_tree(section, load_table(REPO / "config" / "hardware.yaml"), REPO,
                                   str(REPO / "config" / "acceptance" / "default.csv"))


@pytest.mark.workflow
def test_workflow_lists_a_new_gpus_table(tmp_path, snakemake_here):
    hw = yaml.safe_load((REPO / "config" / "hardware.yaml").read_text())
    hw["my-gpu"] = {"display_name": "My GPU", "bandwidth": 1.0e12, "peak_flops": 1.0e14, "source": "test"}
    (tmp_path / "hw.yaml").write_text(yaml.safe_dump(hw))
    config = {"hardware_table": str(tmp_path / "hw.yaml"), "measure": {"models": []}, "microbench": {"models": []},
              "best_tree": {"models": ["tiny"], "hardware": ["all"]}}
    run = snakemake_here(tmp_path, config, "-n")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "results/best_tree/tiny/datasheet/my-gpu.csv" in run.stdout + run.stderr
    assert "results/figures/tiny/all-gpus/best_tree.png" in run.stdout + run.stderr


def test_reference_tree_must_fit_the_acceptance_table(tmp_path):
    from medusa_roofline.core.errors import ConfigError

    deep = tmp_path / "deep.yaml"
    deep.write_text("paths: [[0], [0, 0], [0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0, 0]]\n")  # 5 heads deep; the table has 4
    section = {"models": [], "hardware": ["a40"], "dtype": "float16", "attention": "unfused", "batch": [1],
               "kv_len": [1], "max_candidates": 8, "reference_tree": str(deep), "acceptance_table": None}
    with pytest.raises(ConfigError, match="^best_tree.reference_tree: "):
        settings.resolve_best_tree(section, load_table(REPO / "config" / "hardware.yaml"), REPO,
                                   str(REPO / "config" / "acceptance" / "default.csv"))
