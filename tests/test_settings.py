"""The config resolved once: every auto and path resolved, every cross-file fact checked, values as jobs run them."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from medusa_roofline.core.errors import ConfigError
from medusa_roofline.decoding.tree import DEFAULT_ACCEPTANCE
from medusa_roofline.repro import settings

DEFAULTS = yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def config(**sections) -> dict:
    out = copy.deepcopy(DEFAULTS)
    for name, patch in sections.items():
        if isinstance(out.get(name), dict):
            out[name].update(patch)
        else:
            out[name] = patch
    return out


def test_defaults_resolve_to_what_the_jobs_run(monkeypatch):
    monkeypatch.setattr(settings, "nvidia_gpu_visible", lambda: False)
    s = settings.resolve(config(), REPO)
    assert s.measure.device == "cpu" and s.measure.device_label == "cpu"
    assert s.measure.dtype == "float32"  # auto on a CPU
    assert s.measure.modes == ["ar"] + [f"medusa-{n}" for n in DEFAULTS["measure"]["candidates"]]
    # Medusa's own 63-path tree: a point of its own on the simulated speedup chart
    assert {mode: t.origin for mode, t in s.speedup.trees.items()} == {
        "tree-mc_sim_7b_63": str(REPO / "config" / "trees" / "mc_sim_7b_63.yaml")}
    assert s.measure.acceptance_table == str(DEFAULT_ACCEPTANCE)
    assert s.speedup.acceptance_table == s.measure.acceptance_table
    assert s.ceilings.copy_bytes == DEFAULTS["ceilings"]["cpu_copy_mib"] << 20
    assert s.ceilings.matmul_n == DEFAULTS["ceilings"]["cpu_matmul_n"]
    assert Path(s.hardware_table).is_absolute() and s.hardware_table.endswith("config/hardware.yaml")
    assert s.measure.threads == len(os.sched_getaffinity(0))  # every CPU this process may run on
    assert set(s.measured_models) == {"tiny", "llama-33b"}
    assert s.display_name("llama-33b") != "llama-33b"  # presets carry display names


def test_auto_on_a_gpu_host_is_cuda_float16(monkeypatch):
    monkeypatch.setattr(settings, "nvidia_gpu_visible", lambda: True)
    s = settings.resolve(config(), REPO)
    assert (s.measure.device, s.measure.device_label, s.measure.dtype) == ("cuda", "cuda", "float16")
    assert s.ceilings.copy_bytes == DEFAULTS["ceilings"]["cuda_copy_mib"] << 20


def test_grids_come_sorted_and_unique():
    s = settings.resolve(config(measure={"device": "cpu", "batch": [2, 1, 2], "kv_len": [512, 128]},
                                analytic={"candidates": [32, 16, 32]}), REPO)
    assert s.measure.batch == [1, 2] and s.measure.kv_len == [128, 512]
    assert s.analytic.candidates == [16, 32]


def test_positions_boundary():
    """kv_len + the largest tree must fit max_position_embeddings (4096 for tiny): 4080 + 16 fits, 4081 does not."""
    fits = config(measure={"device": "cpu", "candidates": [16], "kv_len": [4080]})
    settings.resolve(fits, REPO)
    with pytest.raises(ConfigError, match=r"^measure.kv_len: 4097 tokens .* allowed kv_len <= 4080"):
        settings.resolve(config(measure={"device": "cpu", "candidates": [16], "kv_len": [4081]}), REPO)


def test_positions_message_when_no_context_fits(tmp_path):
    model = tmp_path / "short"
    model.mkdir()
    raw = yaml.safe_load((REPO / "config" / "models" / "tiny" / "config.json").read_text())
    (model / "config.json").write_text(json.dumps(dict(raw, max_position_embeddings=100)))
    bad = config(measure={"device": "cpu", "models": [str(model)], "candidates": [112], "kv_len": [128]})
    with pytest.raises(ConfigError, match="measure.candidates: 112 query tokens leave no room .* <= 99") as err:
        settings.resolve(bad, REPO)
    assert "<= -" not in str(err.value)


def test_speedup_acceptance_table_is_checked_before_any_job(tmp_path):
    bad = tmp_path / "acc.csv"
    bad.write_text("head,rank,accuracy\n0,0,2.0\n")
    with pytest.raises(ConfigError, match=r"^speedup.acceptance_table: .*acc.csv line 2: accuracy 2.0"):
        settings.resolve(config(speedup={"acceptance_table": str(bad)}), REPO)


def test_relative_paths_are_found_from_the_working_directory_first(tmp_path, monkeypatch):
    table = tmp_path / "my-hw.yaml"
    table.write_text((REPO / "config" / "hardware.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    s = settings.resolve(config(hardware_table="my-hw.yaml"), REPO)
    assert s.hardware_table == str(table.resolve())
    s = settings.resolve(config(hardware_table="config/hardware.yaml"), REPO)  # not here: the repository's
    assert s.hardware_table == str((REPO / "config" / "hardware.yaml").resolve())


def test_measuring_switched_off_skips_its_checks():
    s = settings.resolve(config(measure={"models": [], "layers": 99}, microbench={"models": []}), REPO)
    assert not s.measured_models


def test_shipped_defaults_agree_on_the_measured_speedup_batch():
    """speedup.batch 4 is the paper's (analytic); a laptop sweep measures batch 1, 2: the measured speedup
    figure is drawn at the largest measured batch, decided here (no warning at run time)."""
    s = settings.resolve(config(), REPO)
    assert s.speedup.batch == 4 and s.measure.batch == [1, 2] and s.speedup.measured_batch == 2
    assert settings.resolve(config(measure={"batch": [1, 4, 8]}), REPO).speedup.measured_batch == 4


def test_paper_overlay_defaults_to_the_a100_pcie_qkpv_chart():
    paper = settings.resolve(config(), REPO).paper_overlay
    assert paper.table.endswith("config/paper/qkpv_llama-33b_a100-80gb-pcie.yaml")
    assert paper.on_analytic("llama-33b", "a100-80gb-pcie")
    assert not paper.on_analytic("llama-33b", "a40") and not paper.on_analytic("llama-7b", "a100-80gb-pcie")
    assert not paper.on_measured("llama-33b")  # a switch for GPU runs
    on = settings.resolve(config(plot={"paper_overlay": {**DEFAULTS["plot"]["paper_overlay"], "measured": True}}), REPO)
    assert on.paper_overlay.on_measured("llama-33b") and not on.paper_overlay.on_measured("tiny")


PAPER_HEAD = "source: s\nhow_read: h\nchart: qkpv_medusa\nmodel: llama-33b\nhardware: a100-80gb-pcie\n"


@pytest.mark.parametrize("body, message", [
    ("ranges:\n  - {phase: medusa, candidates: 16, oi: [15, 13], tflop_per_s: [8, 20]}\n", r"ranges\[0\]: oi must be"),
    ("ranges:\n  - {phase: medusa, candidates: 16, oi: [13, 15], tflop_per_s: [0, 20]}\n", "tflop_per_s must be"),
    ("ranges:\n  - {phase: ar, candidates: 4, oi: [1, 1], tflop_per_s: [1, 2]}\n", "1 for ar"),
    ("ranges:\n  - {phase: spec, candidates: 16, oi: [1, 2], tflop_per_s: [1, 2]}\n", "phase must be one of"),
    ("ranges:\n  - {phase: ar, candidates: 1, oi: [1, 2]}\n", "missing: tflop_per_s"),
    ("ranges:\n  - {phase: ar, candidates: 1, oi: [1, 2], tflop_per_s: [1, 2]}\n"
     "  - {phase: ar, candidates: 1, oi: [1, 2], tflop_per_s: [1, 2]}\n", "listed twice"),
    ("ranges: []\n", "non-empty list"),
])
def test_a_bad_paper_table_stops_the_run_naming_the_key(tmp_path, body, message):
    bad = tmp_path / "paper.yaml"
    bad.write_text(PAPER_HEAD + body)
    overlay = {**DEFAULTS["plot"]["paper_overlay"], "table": str(bad)}
    with pytest.raises(ConfigError, match=rf"^plot\.paper_overlay\.table .*{message}"):
        settings.resolve(config(plot={"paper_overlay": overlay}), REPO)


def test_paper_overlay_switched_off_reads_no_table():
    overlay = {"table": "no/such/file.yaml", "analytic": False, "measured": False}
    s = settings.resolve(config(plot={"paper_overlay": overlay}), REPO)
    assert s.paper_overlay.table is None and not s.paper_overlay.on_analytic("llama-33b", "a100-80gb-pcie")
    assert "paper_overlay" not in s.plot  # figure params: changing the layer reruns only the charts that draw it


def test_timing_threads_are_one_fixed_number():
    assert settings.resolve(config(measure={"threads": 3}), REPO).measure.threads == 3
    assert settings.timing_threads(None) >= 1
