"""Tree files in the config: measure.trees / microbench.trees / speedup.trees run as ``tree-NAME`` modes and
points of their own, checked at parse time, with their own expected tokens in the speedups."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO
from medusa_roofline.analytic.hardware import load_table
from medusa_roofline.analytic.predict import datasheet_calibration
from medusa_roofline.core.errors import ConfigError
from medusa_roofline.decoding.tree import DEFAULT_ACCEPTANCE, expected_accept_length, load_acceptance_table, \
    load_tree_file
from medusa_roofline.measure.grid import parse_mode, tree_mode
from medusa_roofline.measure.microbench import run_microbench
from medusa_roofline.measure.sweep import run_sweep
from medusa_roofline.models.source import model_dims
from medusa_roofline.repro import settings
from medusa_roofline.repro.tree_settings import query_tokens, tree_paths_param
from medusa_roofline.results.speedup import analytic_speedup, measured_speedup

DEFAULTS = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
MC_SIM = REPO / "config" / "trees" / "mc_sim_7b_63.yaml"
HARDWARE_TABLE = REPO / "config" / "hardware.yaml"


def config(**sections) -> dict:
    out = copy.deepcopy(DEFAULTS)
    for name, patch in sections.items():
        out[name].update(patch)
    return out


def tree_file(tmp_path, name: str, paths) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(paths))
    return str(path)


def test_tree_modes_parse_only_with_their_tree():
    assert parse_mode("tree-mc_sim_7b_63", trees={"mc_sim_7b_63": 64}) == parse_mode("tree-mc_sim_7b_63",
                                                                                    trees={"mc_sim_7b_63": 64})
    m = parse_mode("tree-mc_sim_7b_63", trees={"mc_sim_7b_63": 64})
    assert (m.name, m.phase, m.q_len, m.candidates) == ("tree-mc_sim_7b_63", "medusa", 64, 64)
    with pytest.raises(ConfigError, match="names tree 'other'.*trees given: mc_sim_7b_63"):
        parse_mode("tree-other", trees={"mc_sim_7b_63": 64})
    assert tree_mode("mc_sim_7b_63") == "tree-mc_sim_7b_63"
    with pytest.raises(ConfigError, match="my tree.*rename the file"):
        tree_mode("my tree")


def test_tree_files_in_every_section_resolve_to_modes_and_params(tmp_path, monkeypatch):
    monkeypatch.setattr(settings, "nvidia_gpu_visible", lambda: False)
    small = tree_file(tmp_path, "small", [[0], [1], [0, 0]])
    s = settings.resolve(config(measure={"trees": [str(MC_SIM), small]}, microbench={"trees": [small]},
                                speedup={"trees": [small]}), REPO)
    assert s.measure.modes[-2:] == ["tree-mc_sim_7b_63", "tree-small"]
    assert s.microbench.modes[-1] == "tree-small"
    assert {mode: t.origin for mode, t in s.speedup.trees.items()} == {"tree-small": small}
    assert query_tokens("tree-mc_sim_7b_63", s.measure.trees) == 64 and query_tokens("tree-small", s.measure.trees) == 4
    assert query_tokens("medusa-16", s.measure.trees) == 16 and query_tokens("ar", {}) == 1
    assert tree_paths_param(s.microbench.trees) == {"small": [[0], [1], [0, 0]]}  # Medusa's order: by depth


@pytest.mark.parametrize("section, paths, message", [
    ("measure", [[0, 0]], r"measure.trees\[0\]: tree: tree file .*bad.yaml: path \[0, 0\] has no parent \[0\]"),
    ("speedup", [[0], [0, 10]], r"speedup.trees\[0\]: .*path \[0, 10\] has rank 10 beyond the heads' top-10"),
    ("microbench", [[0], [0, 0], [0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0, 0]],
     r"microbench.trees\[0\]: .*path \[0, 0, 0, 0, 0\] is 5 deep but there are only 4 Medusa heads"),
    ("measure", [], r"measure.trees\[0\]: .*the tree is empty"),
])
def test_a_bad_tree_file_names_the_key_the_file_and_the_path(tmp_path, section, paths, message):
    bad = tree_file(tmp_path, "bad", paths)
    with pytest.raises(ConfigError, match=message):
        settings.resolve(config(**{section: {"trees": [bad]}}), REPO)


def test_two_trees_of_one_name_and_a_missing_file_are_refused(tmp_path):
    (tmp_path / "other").mkdir()
    first = tree_file(tmp_path, "mc_sim_7b_63", [[0]])
    with pytest.raises(ConfigError, match=r"measure.trees\[1\]: a second tree named 'mc_sim_7b_63'"):
        settings.resolve(config(measure={"trees": [first, str(MC_SIM)]}), REPO)
    with pytest.raises(ConfigError, match=r"measure.trees\[0\]: .*nope.yaml' does not exist"):
        settings.resolve(config(measure={"trees": [str(tmp_path / "nope.yaml")]}), REPO)


def test_a_tree_too_large_for_the_positions_is_refused_at_parse_time():
    with pytest.raises(ConfigError, match=r"measure.kv_len: .*64 query tokens"):
        settings.resolve(config(measure={"trees": [str(MC_SIM)], "candidates": [16],
                                         "kv_len": [model_dims("tiny").max_positions - 32]}), REPO)


def test_tree_files_alone_are_a_sweep_grid():
    s = settings.resolve(config(measure={"trees": [str(MC_SIM)], "candidates": []}), REPO)
    assert s.measure.modes == ["ar", "tree-mc_sim_7b_63"]
    with pytest.raises(ConfigError, match=r"measure.candidates: the sweep grid is empty.*measure.trees"):
        settings.resolve(config(measure={"trees": [], "candidates": []}), REPO)


@pytest.mark.slow  # a sweep of a 64-node tree (seconds)
def test_the_upstream_63_path_tree_is_a_64_candidate_point_of_the_sweep():
    rows = run_sweep("tiny", "tree-mc_sim_7b_63", [1], [16], layers=1, reps=1, warmup=0, progress=False,
                     tree=str(MC_SIM))
    ok = rows[rows["status"] == "ok"]
    assert len(ok) and set(ok["mode"]) == {"tree-mc_sim_7b_63"} and set(ok["tree"]) == {"mc_sim_7b_63"}
    assert set(ok["candidates"]) == {64} and set(ok["q_len"]) == {64} and set(ok["phase"]) == {"medusa"}
    assert "step" in set(ok["op"])
    with pytest.raises(ConfigError, match="no tree file of that name"):
        run_sweep("tiny", "tree-other", [1], [16], layers=1, reps=1, warmup=0, progress=False, tree=str(MC_SIM))


def test_the_microbenchmark_times_a_tree_files_mask(tmp_path):
    small = tree_file(tmp_path, "small", [[0], [1], [0, 0]])
    rows = run_microbench("tiny", ["ar", "tree-small"], [1], [16], reps=1, warmup=0, progress=False, trees=[small])
    tree_rows = rows[rows["mode"] == "tree-small"]
    assert set(tree_rows["q_len"]) == {4} and set(tree_rows["tree"]) == {"small"}
    assert set(tree_rows["op"]) == {"qk", "softmax", "pv"}


def test_analytic_speedup_adds_a_tree_files_points_with_its_own_expected_tokens():
    table = load_acceptance_table(DEFAULT_ACCEPTANCE)
    mc = load_tree_file(MC_SIM)
    cal = datasheet_calibration(load_table(HARDWARE_TABLE)["a100-80gb-pcie"])
    plain = analytic_speedup("llama-7b", model_dims("llama-7b"), table, cal, "float16", 4, [128, 1024], range(1, 65))
    both = analytic_speedup("llama-7b", model_dims("llama-7b"), table, cal, "float16", 4, [128, 1024], range(1, 65),
                            trees=tree_paths_param({"tree-mc_sim_7b_63": load_tree_file(MC_SIM)}))
    assert "tree" not in plain.columns  # the default chart's columns do not change without trees
    pd.testing.assert_frame_equal(both[both["tree"].str.startswith("greedy-")].drop(columns="tree")
                                  .reset_index(drop=True), plain)
    mine = both[both["tree"] == "mc_sim_7b_63"]
    assert list(mine["series"]) == ["seq_len 128, tree mc_sim_7b_63", "seq_len 1024, tree mc_sim_7b_63"]
    assert set(mine["candidates"]) == {64}
    assert mine["expected_tokens"].iloc[0] == pytest.approx(expected_accept_length(table, list(mc.paths)))
    # same node count, same step latency: the speedups differ exactly as the expected tokens do
    greedy = both[(both["tree"] == "greedy-64") & (both["kv_len"] == 128)].iloc[0]
    assert mine["step_time_medusa_s"].iloc[0] == pytest.approx(greedy["step_time_medusa_s"])
    assert mine["speedup"].iloc[0] / greedy["speedup"] == pytest.approx(
        mine["expected_tokens"].iloc[0] / greedy["expected_tokens"])


def step_rows(mode: str, candidates: int, tree: str, time_s: float) -> list[dict]:
    phase = "ar" if mode == "ar" else "medusa"
    return [{"bench": "sweep", "model": "tiny", "device": "cpu", "mode": mode, "phase": phase, "op": op,
             "candidates": candidates, "tree": tree, "batch": 1, "kv_len": 64, "status": "ok", "layers": 2,
             "time_s_median": t, "time_s_p10": t * 0.9, "time_s_p90": t * 1.1, "device_name": "cpu",
             "torch": "x", "transformers": "y", "cuda": "", "git_commit": "0"}
            for op, t in (("step", time_s), ("lm_head", time_s / 10))]


def test_measured_speedup_of_a_tree_file_uses_that_trees_expected_tokens():
    table = load_acceptance_table(DEFAULT_ACCEPTANCE)
    rows = pd.DataFrame(step_rows("ar", 1, "", 1.0) + step_rows("medusa-64", 64, "greedy-64", 1.5)
                        + step_rows("tree-mc_sim_7b_63", 64, "mc_sim_7b_63", 1.5))
    trees = tree_paths_param({"tree-mc_sim_7b_63": load_tree_file(MC_SIM)})
    out = measured_speedup(rows, table, trees=trees).set_index("tree")
    assert set(out.index) == {"greedy-64", "mc_sim_7b_63"}
    mc = load_tree_file(MC_SIM)
    assert out.loc["mc_sim_7b_63", "expected_tokens"] == pytest.approx(expected_accept_length(table, list(mc.paths)))
    assert out.loc["mc_sim_7b_63", "series"].endswith(", tree mc_sim_7b_63")
    assert out.loc["mc_sim_7b_63", "expected_tokens"] != out.loc["greedy-64", "expected_tokens"]
    with pytest.raises(ConfigError, match="rows of tree 'mc_sim_7b_63'.*list it in measure.trees"):
        measured_speedup(rows, table)
    assert np.isfinite(out["speedup_p10"]).all()
