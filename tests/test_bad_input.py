"""Bad input stops the real workflow before any output: non-zero exit, a message naming the key or file.

Each case writes its fixture files (hardware table, model directory, acceptance CSV, config) into
the test's temporary directory, points the config at them and runs the Snakefile there; most
cases are dry runs (the checks run while the DAG is built), a few run for real to show that
nothing at all is written.
"""

from __future__ import annotations

import copy
import json
import os

import pytest
import yaml

from medusa_roofline.core.errors import ConfigError
from medusa_roofline.decoding.heads import MedusaHeads, save_medusa_heads
from medusa_roofline.models.source import PRESET_DIR
from medusa_roofline.repro import settings

TINY_JSON = json.loads((PRESET_DIR / "tiny" / "config.json").read_text())
MEASURE = {"models": ["tiny"], "device": "cpu", "candidates": [16], "batch": [1], "kv_len": [64],
           "reps": 2, "warmup": 1}
MICRO = {"models": ["tiny"], "candidates": [16], "batch": [1], "kv_len": [64], "reps": 2, "warmup": 1}
GOOD_HW = {"display_name": "Test GPU", "bandwidth": 1.0e12, "peak_flops": 1.0e14, "source": "test"}


def merge(base: dict, patch: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def write_model(tmp, name="my-model", drop=(), **overrides):
    d = tmp / "inputs" / name
    d.mkdir(parents=True)
    cfg = {k: v for k, v in dict(TINY_JSON, **overrides).items() if k not in drop}
    (d / "config.json").write_text(json.dumps(cfg))
    return str(d)


def write_file(tmp, name, text):
    path = tmp / "inputs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def empty_dir(tmp, name="empty"):
    d = tmp / "inputs" / name
    d.mkdir(parents=True)
    return str(d)


def not_json_model(tmp):
    d = write_model(tmp, name="broken")
    (tmp / "inputs" / "broken" / "config.json").write_text('{"model_type": "llama", ')
    return d


def small_table(tmp):
    """2 heads x top-2: the largest tree has 1 + 2 + 4 = 7 nodes."""
    return write_file(tmp, "small.csv", "head,rank,accuracy\n0,0,0.6\n0,1,0.2\n1,0,0.5\n1,1,0.1\n")


def hardware_table(tmp, **entry):
    return write_file(tmp, "hw.yaml", yaml.safe_dump({"test-gpu": dict(GOOD_HW, **entry)}))


def fake_nvidia_smi(tmp, monkeypatch, line="Tesla T4, 7.5"):
    bin_dir = tmp / "fakebin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text(f"#!/bin/sh\necho '{line}'\n")
    (bin_dir / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def heads_file(tmp, num_heads=2):
    """A Medusa heads file for the tiny preset (hidden 64, vocab 256), in the reference layout."""
    path = tmp / "inputs" / "medusa_lm_head.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_medusa_heads(MedusaHeads(64, 256, num_heads=num_heads, seed=1), path)
    return str(path)


def tiny_acceptance(tmp, **entry):
    """The tiny preset measured with its own heads file (rule acceptance), on a small grid."""
    return {"measure": dict(MEASURE, candidates=[4]),
            "acceptance": {"models": {"tiny": {"heads": heads_file(tmp), **entry}}, "top_k": 3, "max_new_tokens": 8,
                           "random_prompts": 2, "prompt_len": 4}}


DEMO = {"demo": {"enabled": True}, "measure": {"models": [], "device": "cpu", "candidates": [4], "batch": [1],
                                                "kv_len": [32], "reps": 2, "warmup": 1}}


# Each case: (id, patch(tmp, monkeypatch) -> config patch, dry run?, needles in the output)
CASES = [
    ("unknown-preset", lambda t, m: {"analytic": {"models": ["llama-999b"]}}, True,
     ["analytic.models[0]", "unknown model preset 'llama-999b'", "presets are", "tiny"]),
    ("missing-local-path", lambda t, m: {"analytic": {"models": [str(t / "inputs" / "no-such-model")]}}, True,
     ["analytic.models[0]", "does not exist", "no-such-model"]),
    ("local-path-is-a-file", lambda t, m: {"analytic": {"models": [write_file(t, "weights.bin", "x")]}}, True,
     ["analytic.models[0]", "is not a directory"]),
    ("local-dir-without-config", lambda t, m: {"analytic": {"models": [empty_dir(t)]}}, True,
     ["analytic.models[0]", "has no config.json"]),
    ("model-not-llama", lambda t, m: {"analytic": {"models": [write_model(t, model_type="gpt2")]}}, True,
     ["analytic.models", "model_type 'gpt2'", "only Llama-family models"]),
    ("model-lacks-field", lambda t, m: {"analytic": {"models": [write_model(t, drop=("intermediate_size",))]}},
     True, ["analytic.models", "lacks required field(s) intermediate_size", "config.json"]),
    ("model-config-not-json", lambda t, m: {"analytic": {"models": [not_json_model(t)]}}, True,
     ["analytic.models", "config.json is not valid JSON"]),
    ("unknown-hardware", lambda t, m: {"analytic": {"hardware": ["tpu-v9"]}}, True,
     ["analytic.hardware[0]", "unknown hardware 'tpu-v9'", "known:", "a100-80gb-pcie"]),
    ("hardware-zero-bandwidth", lambda t, m: {"hardware_table": hardware_table(t, bandwidth=0),
                                              "analytic": {"hardware": ["test-gpu"]}}, False,
     ["hardware.test-gpu.bandwidth", "hw.yaml", "must be a positive, finite number"]),
    ("hardware-negative-peak", lambda t, m: {"hardware_table": hardware_table(t, peak_flops=-3e14),
                                             "analytic": {"hardware": ["test-gpu"]}}, True,
     ["hardware.test-gpu.peak_flops", "must be a positive, finite number"]),
    ("hardware-table-missing", lambda t, m: {"hardware_table": str(t / "inputs" / "nope.yaml")}, True,
     ["hardware_table", "nope.yaml", "does not exist"]),
    ("hardware-table-malformed-yaml", lambda t, m: {"hardware_table": write_file(
        t, "hw.yaml", "test-gpu: {display_name: x, bandwidth: [1\n")}, True,
     ["hardware_table", "hw.yaml", "is not valid YAML"]),
    ("candidates-1", lambda t, m: {"analytic": {"candidates": [1]}}, True,
     ["candidates", "less than the minimum of 2"]),
    ("candidates-beyond-tree", lambda t, m: {"measure": dict(MEASURE, candidates=[4, 8],
                                                             acceptance_table=small_table(t))}, True,
     ["measure.candidates", "[8] exceed the largest tree the acceptance table", "small.csv", "can build (7 nodes)"]),
    ("tree-file-without-parent", lambda t, m: {"measure": dict(MEASURE, trees=[write_file(t, "orphan.yaml", "[[0, 1]]")])},
     True, ["measure.trees[0]", "orphan.yaml", "path [0, 1] has no parent [0]"]),
    ("speedup-tree-beyond-heads", lambda t, m: {"speedup": {"trees": [write_file(t, "deep.yaml", "[[0], [0, 0], [0, 0, 0]]")],
                                                            "max_candidates": 4},
                                                "measure": {"acceptance_table": small_table(t)}}, True,
     ["speedup.trees[0]", "deep.yaml", "path [0, 0, 0] is 3 deep but there are only 2 Medusa heads"]),
    ("microbench-candidates-beyond-tree", lambda t, m: {"measure": {"acceptance_table": small_table(t)},
                                                        "microbench": dict(MICRO, candidates=[16])}, True,
     ["microbench.candidates", "[16] exceed the largest tree", "(7 nodes)"]),
    ("batch-0", lambda t, m: {"measure": dict(MEASURE, batch=[0])}, True,
     ["batch", "less than the minimum of 1"]),
    ("kv-len-0", lambda t, m: {"measure": dict(MEASURE, kv_len=[0])}, True,
     ["kv_len", "less than the minimum of 1"]),
    ("kv-len-beyond-positions", lambda t, m: {"measure": dict(MEASURE, kv_len=[64, 4090])}, True,
     ["measure.kv_len", "4106 tokens", "max_position_embeddings 4096", "allowed kv_len <= 4080"]),
    ("dtype-unsupported", lambda t, m: {"measure": dict(MEASURE, dtype="float8")}, True,
     ["dtype", "float8", "is not one of"]),
    ("bf16-on-gpu-without-it", lambda t, m: fake_nvidia_smi(t, m) or {
        "measure": dict(MEASURE, device="cuda", dtype="bfloat16")}, True,
     ["measure.dtype", "bfloat16 needs a GPU with compute capability >= 8.0", "Tesla T4", "7.5"]),
    ("acceptance-missing-columns", lambda t, m: {"measure": dict(MEASURE, acceptance_table=write_file(
        t, "acc.csv", "head,rank,prob\n0,0,0.5\n"))}, False,
     ["measure.acceptance_table", "acc.csv", "lacks column(s) accuracy", "required columns are head,rank,accuracy"]),
    ("acceptance-probability-above-1", lambda t, m: {"measure": dict(MEASURE, acceptance_table=write_file(
        t, "acc.csv", "head,rank,accuracy\n0,0,0.5\n0,1,1.5\n"))}, True,
     ["measure.acceptance_table", "acc.csv", "line 3", "accuracy 1.5 is outside [0, 1]"]),
    # checked even with no measured models: the speedup figures default to it too
    ("acceptance-table-missing", lambda t, m: {"measure": {"acceptance_table": str(t / "inputs" / "nope.csv")}},
     True,
     ["measure.acceptance_table", "nope.csv", "does not exist"]),
    ("speedup-acceptance-bad", lambda t, m: {"speedup": {"acceptance_table": write_file(
        t, "acc.csv", "head,rank,accuracy\n0,0,0.5\n0,1,1.5\n")}}, False,
     ["speedup.acceptance_table", "acc.csv", "line 3", "accuracy 1.5 is outside [0, 1]"]),
    ("acceptance-head-out-of-range", lambda t, m: {"measure": dict(MEASURE, acceptance_table=write_file(
        t, "acc.csv", "head,rank,accuracy\n0,0,0.5\n10000,10000,0.5\n"))}, True,
     ["measure.acceptance_table", "line 3", "head 10000 is outside 0..63"]),
    ("model-asks-for-remote-code", lambda t, m: {"analytic": {"models": [write_model(
        t, auto_map={"AutoModelForCausalLM": "modeling_x.XForCausalLM"})]}}, True,
     ["analytic.models", "asks for custom model code (auto_map: AutoModelForCausalLM)", "remove auto_map"]),
    ("layers-beyond-model", lambda t, m: {"measure": dict(MEASURE, layers=3)}, False,
     ["measure.layers", "3 is outside 1..2", "'tiny'"]),
    ("empty-grid-batch", lambda t, m: {"measure": dict(MEASURE, batch=[])}, True,
     ["measure.batch", "the sweep grid is empty"]),
    ("empty-grid-candidates", lambda t, m: {"measure": dict(MEASURE, candidates=[])}, True,
     ["measure.candidates", "the sweep grid is empty"]),
    ("best-tree-unknown-gpu", lambda t, m: {"best_tree": {"hardware": ["a100-80gb-pcie", "tpu-v9"]}}, True,
     ["best_tree.hardware[1]", "unknown hardware 'tpu-v9'"]),
    ("best-tree-all-and-more", lambda t, m: {"best_tree": {"hardware": ["all", "a40"]}}, True,
     ["best_tree.hardware", "'all' stands alone"]),
    ("best-tree-missing-reference", lambda t, m: {"best_tree": {"reference_tree": str(t / "nope.yaml")}}, True,
     ["best_tree.reference_tree", "does not exist"]),
    ("best-tree-too-many-candidates", lambda t, m: {"best_tree": {
        "max_candidates": 8, "reference_tree": write_file(t, "one.yaml", "[[0]]"),
        "acceptance_table": write_file(t, "small.csv", "head,rank,accuracy\n0,0,0.5\n0,1,0.2\n")}}, True,
     ["best_tree.max_candidates", "exceeds the largest tree", "(3 nodes)"]),
    ("step-heads-unknown", lambda t, m: {"step": {"medusa_heads": "some"}}, True, ["medusa_heads", "tree"]),
    ("acceptance-not-a-measured-model", lambda t, m: {"acceptance": {"models": {"other": {"heads": heads_file(t)}}}},
     True, ["acceptance.models.other", "'other' is not a measured model", "none (measure.models is empty)"]),
    ("acceptance-heads-file-missing", lambda t, m: merge(tiny_acceptance(t), {"acceptance": {"models": {"tiny": {
        "heads": str(t / "inputs" / "nope.safetensors")}}}}), True,
     ["acceptance.models.tiny.heads", "nope.safetensors", "does not exist"]),
    ("acceptance-prompt-file-missing", lambda t, m: tiny_acceptance(t, prompts=str(t / "inputs" / "nope.jsonl")),
     True, ["acceptance.models.tiny.prompts", "nope.jsonl", "does not exist"]),
    ("demo-tree-beyond-heads", lambda t, m: merge(DEMO, {"acceptance": {"top_k": 2},
                                                         "measure": {"candidates": [4, 40]}}), True,
     ["[40] exceed the largest tree the demo's 4 heads x top-2 table can build (31 nodes)"]),
    ("demo-kv-len-beyond-positions", lambda t, m: merge(DEMO, {"demo": {"base": {"max_positions": 128}},
                                                               "measure": {"kv_len": [200]}}), True,
     ["measure.kv_len", "204 tokens", "'demo-llama' max_position_embeddings 128"]),
    ("demo-layers-beyond-model", lambda t, m: merge(DEMO, {"measure": {"layers": 3}}), True,
     ["measure.layers: 3 is outside 1..2, the decoder layers the demo model 'demo-llama' has"]),
    ("demo-name-taken", lambda t, m: merge(DEMO, {"demo": {"name": "tiny"}, "measure": {"models": ["tiny"]}}), True,
     ["demo.name: 'tiny' is already a measured model name"]),
    ("demo-entry-in-acceptance-models", lambda t, m: merge(DEMO, {"acceptance": {"models": {
        "demo-llama": {"heads": heads_file(t)}}}}), True,
     ["acceptance.models.demo-llama", "come from the demo rules"]),
]

@pytest.mark.workflow
@pytest.mark.parametrize("name,patch,dry,needles", CASES, ids=[c[0] for c in CASES])
def test_bad_input_stops_before_any_output(tmp_path, monkeypatch, snakemake_here, tiny_analytic_config,
                                           name, patch, dry, needles):
    config = merge(tiny_analytic_config, patch(tmp_path, monkeypatch))
    run = snakemake_here(tmp_path, config, *(["-n"] if dry else []))
    out = run.stdout + run.stderr
    assert run.returncode != 0, out[-2000:]
    for needle in needles:
        assert needle in out, f"{needle!r} not in:\n{out[-2000:]}"
    assert not (tmp_path / "results").exists()


@pytest.mark.workflow
def test_malformed_config_yaml_stops(tmp_path, snakemake_here):
    bad = tmp_path / "bad.yaml"
    bad.write_text("analytic: {models: [tiny\nmeasure: : :\n")
    run = snakemake_here(tmp_path, None, "--configfile", str(bad))
    out = run.stdout + run.stderr
    assert run.returncode != 0
    # Snakemake parses --configfile before the Snakefile runs; its message does not name the file.
    assert "Config file is not valid JSON or YAML" in out
    assert not (tmp_path / "results").exists()


def test_bf16_check_respects_device_label_and_capable_gpus(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    measure = dict(MEASURE, device="cuda", dtype="bfloat16", device_label=None)
    monkeypatch.setattr(settings, "gpu_compute_capabilities", lambda: [("NVIDIA A100", 8.0)])
    settings.check_device_dtype(measure)  # fine
    monkeypatch.setattr(settings, "gpu_compute_capabilities", lambda: [("Tesla V100", 7.0)])
    with pytest.raises(ConfigError, match="^measure.dtype"):
        settings.check_device_dtype(measure)
    settings.check_device_dtype(dict(measure, device_label="h100-sxm"))  # jobs run elsewhere
    settings.check_device_dtype(dict(measure, dtype="float16"))
    monkeypatch.setattr(settings, "gpu_compute_capabilities", lambda: None)  # no nvidia-smi
    settings.check_device_dtype(measure)
