"""What the workflow reads back besides archives: resume checkpoints, model configs and weights,
acceptance tables, and the messages that used to mislead (one test per finding of the integrity issue)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import tracemalloc
from pathlib import Path

import pytest
import torch
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from medusa_roofline.analytic.hardware import load_table
from medusa_roofline.core.errors import ConfigError
from medusa_roofline.decoding.tree import DEFAULT_ACCEPTANCE, MAX_HEADS, MAX_RANKS, load_acceptance_table
from medusa_roofline.measure import checkpoint, sweep
from medusa_roofline.measure.sweep import run_sweep
from medusa_roofline.measure.table import TIME_COLUMNS
from medusa_roofline.models import load
from medusa_roofline.models import source as models
from medusa_roofline.repro import settings

REPO = Path(__file__).resolve().parent.parent
TINY = dict(reps=2, warmup=1, progress=False)
TINY_JSON = json.loads((models.PRESET_DIR / "tiny" / "config.json").read_text())


def model_dir(tmp_path: Path, name: str = "my-model", **overrides) -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "config.json").write_text(json.dumps(dict(TINY_JSON, **overrides)))
    return d


# ------------------------------------------------------------- finding 3: resume checkpoints


def _times_x1000(data: dict) -> None:
    for row in data["rows"]:
        for col in TIME_COLUMNS:
            row[col] *= 1000


def _other_device(data: dict) -> None:
    """Self-consistent (sha256 recomputed) but produced on another device."""
    produced_by = dict(data["integrity"]["produced_by"], device="cuda:0")
    data["integrity"] = {"produced_by": produced_by,
                         "sha256": checkpoint.content_digest(data["point"], data["rows"], produced_by)}


@pytest.mark.slow
@pytest.mark.parametrize("tamper, reason", [
    (_times_x1000, "does not match its sha256"),
    (lambda data: data.pop("integrity"), "no integrity record"),
    (_other_device, "produced by"),
])
def test_a_checkpoint_point_that_does_not_verify_is_measured_again(tmp_path, monkeypatch, caplog, tamper, reason):
    ckpt = tmp_path / "ckpt"
    first = run_sweep("tiny", "ar", [1], [8, 16], checkpoint_dir=ckpt, **TINY)
    point = next(ckpt.glob("*/point-1_8.json"))
    data = json.loads(point.read_text())
    tamper(data)
    point.write_text(json.dumps(data))

    calls = []
    original = sweep.measure_point
    monkeypatch.setattr(sweep, "measure_point", lambda step, *a, **k: calls.append((step.batch, step.kv_len))
                        or original(step, *a, **k))
    with caplog.at_level("WARNING", logger="medusa_roofline"):
        df = run_sweep("tiny", "ar", [1], [8, 16], checkpoint_dir=ckpt, **TINY)
    assert calls == [(1, 8)]  # the tampered point only; (1, 16) resumed
    assert f"{point} does not verify" in caplog.text and reason in caplog.text
    q_proj = df[(df["op"] == "q_proj") & (df["kv_len"] == 8)]["time_s_median"].item()
    assert q_proj < 100 * first[(first["op"] == "q_proj") & (first["kv_len"] == 8)]["time_s_median"].item()
    resumed = df[df["kv_len"] == 16].reset_index(drop=True)
    assert resumed["time_s_median"].tolist() == first[first["kv_len"] == 16]["time_s_median"].tolist()


# --------------------------------------------------------------- finding 5: remote code


def test_a_config_asking_for_custom_code_is_refused(tmp_path):
    d = model_dir(tmp_path, architectures=["EvilForCausalLM"],
                  auto_map={"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"})
    for call in (lambda: models.model_dims(str(d), "measure.models"), lambda: load.build_model(str(d), torch.float32)):
        with pytest.raises(ConfigError, match=r"asks for custom model code \(auto_map: AutoModelForCausalLM\).*"
                                              "never runs.*remove auto_map"):
            call()


def test_spec_records_the_class_that_ran_not_the_name_in_the_config(tmp_path):
    d = model_dir(tmp_path, architectures=["MyLlamaVariantForCausalLM"])
    spec = load.model_spec(str(d), "float32", "cpu")
    assert spec["architecture"] == "LlamaForCausalLM"
    assert spec["config_architectures"] == ["MyLlamaVariantForCausalLM"]
    assert load.model_spec("tiny", "float32", "cpu")["config_architectures"] == ["LlamaForCausalLM"]


# ------------------------------------------------------------- finding 6: acceptance tables


def test_the_acceptance_loader_is_bounded_by_the_file_not_by_its_indices(tmp_path):
    huge = tmp_path / "huge.csv"
    huge.write_text("head,rank,accuracy\n0,0,0.5\n10000,10000,0.5\n1,0,0.5\n")
    with pytest.raises(ConfigError, match=rf"line 3: head 10000 is outside 0..{MAX_HEADS - 1}"):
        load_acceptance_table(huge)
    rank = tmp_path / "rank.csv"
    rank.write_text("head,rank,accuracy\n0,0,0.5\n0,5000,0.5\n")
    with pytest.raises(ConfigError, match=rf"line 3: rank 5000 is outside 0..{MAX_RANKS - 1}"):
        load_acceptance_table(rank)
    corner = tmp_path / "corner.csv"  # the largest indices allowed, nothing between: a sparse rectangle
    corner.write_text(f"head,rank,accuracy\n0,0,0.5\n{MAX_HEADS - 1},{MAX_RANKS - 1},0.5\n")
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError, match=rf"missing cell\(s\) head=0 rank=1, .* and {MAX_HEADS * MAX_RANKS - 7} more"):
            load_acceptance_table(corner)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"{peak} bytes for a 3-line file"


# ------------------------------------------------------------- finding 7: misleading messages


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory):
    """A real HF checkpoint of the tiny preset (safetensors)."""
    from transformers import AutoConfig, LlamaForCausalLM

    directory = tmp_path_factory.mktemp("ckpt") / "tiny-ckpt"
    torch.manual_seed(1)
    LlamaForCausalLM(AutoConfig.from_pretrained(models.PRESET_DIR / "tiny")).save_pretrained(directory)
    return directory


def resolve_measuring(model_dir: Path):
    """The config check of a measured sweep of ``model_dir`` (as the Snakefile runs it)."""
    section = {"models": [str(model_dir)], "device": "cpu", "dtype": "auto", "layers": None, "candidates": [16],
               "batch": [1], "kv_len": [64], "reps": 2, "warmup": 1, "max_memory_gb": None}
    return settings.resolve_measure(section, str(DEFAULT_ACCEPTANCE))


@pytest.mark.parametrize("keep", [0.5, 0.999, 4])
def test_a_truncated_safetensors_file_is_called_truncated_not_unsafe(tmp_path, saved_tiny, keep):
    d = tmp_path / "truncated"
    shutil.copytree(saved_tiny, d)
    weights = d / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: int(len(data) * keep) if keep < 1 else keep])
    for call in (lambda: load.build_model(str(d), torch.float32), lambda: resolve_measuring(d)):
        with pytest.raises(ConfigError) as err:
            call()
        assert "model.safetensors is truncated or corrupt" in str(err.value)
        assert "unpickl" not in str(err.value)
    assert resolve_measuring(saved_tiny).models  # the whole file is fine


def test_a_truncated_torch_save_file_is_called_truncated(tmp_path, saved_tiny):
    d = tmp_path / "truncated-bin"
    d.mkdir()
    shutil.copy(saved_tiny / "config.json", d / "config.json")
    from safetensors.torch import load_file
    torch.save(load_file(saved_tiny / "model.safetensors"), d / "pytorch_model.bin")
    data = (d / "pytorch_model.bin").read_bytes()
    (d / "pytorch_model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigError, match="pytorch_model.bin is truncated or corrupt: .*zip"):
        load.build_model(str(d), torch.float32)


def test_more_candidates_than_positions_says_so_not_a_negative_kv_len(tmp_path):
    small = {"small": dataclasses.replace(models.model_dims("tiny"), max_positions=100)}
    with pytest.raises(ConfigError) as err:
        settings.check_positions([64], "measure.kv_len", small, 112)
    assert "measure.candidates: 112 query tokens leave no room" in str(err.value)
    assert "allowed candidates <= 99" in str(err.value) and "-12" not in str(err.value)
    with pytest.raises(ConfigError, match=r"allowed kv_len <= 84"):  # still the message when the tree fits
        settings.check_positions([90], "measure.kv_len", small, 16)


def test_names_are_matched_whole_a_trailing_newline_does_not_pass(tmp_path):
    schema = REPO / "config" / "schema.yaml"
    validate({"run_name": "tiny-test"}, str(schema))
    for key, bad in (("run_name", "tiny-test\n"), ("measure", {"device": "cpu\n"}),
                     ("analytic", {"hardware": ["a40\n"]})):
        with pytest.raises(WorkflowError):
            validate({key: bad}, str(schema))
    d = model_dir(tmp_path, name="model\n")
    with pytest.raises(ConfigError, match="may only contain letters"):
        models.resolve_source(str(d))
    assert not models.is_preset("tiny\n")


def test_speedup_acceptance_table_is_checked_with_the_config(tmp_path):
    bad = tmp_path / "acc.csv"
    bad.write_text("head,rank,accuracy\n0,0,1.5\n")
    small = tmp_path / "small.csv"
    small.write_text("head,rank,accuracy\n0,0,0.6\n0,1,0.2\n")  # the largest tree: 3 nodes
    table = load_table(REPO / "config" / "hardware.yaml")
    section = {"models": [], "hardware": ["a100-80gb-pcie"], "batch": 4, "kv_len": [128], "max_candidates": 16,
               "acceptance_table": str(bad)}
    default = str(DEFAULT_ACCEPTANCE)
    with pytest.raises(ConfigError, match=r"^speedup.acceptance_table: .*acc.csv line 2: accuracy 1.5"):
        settings.resolve_speedup(section, table, REPO, default, [1])
    section.update(models=["tiny"], acceptance_table=str(small))
    with pytest.raises(ConfigError, match=r"^speedup.max_candidates: 16 exceeds .*small.csv .*\(3 nodes\)"):
        settings.resolve_speedup(section, table, REPO, default, [1])
    section.update(acceptance_table=None)  # the default table: 11111 nodes
    settings.resolve_speedup(section, table, REPO, default, [1])


# ---------------------------------------------------------- finding 4: weights are workflow inputs


@pytest.mark.workflow
@pytest.mark.slow
def test_replacing_local_weights_reruns_load_model_and_spec_hashes_stay_true(tmp_path, snakemake_here,
                                                                              tiny_analytic_config, saved_tiny):
    from transformers import AutoConfig, LlamaForCausalLM

    from medusa_roofline.core.io import sha256_file

    ckpt = tmp_path / "inputs" / "tiny-ckpt"
    shutil.copytree(saved_tiny, ckpt)
    config = dict(tiny_analytic_config, measure={"models": [str(ckpt)], "device": "cpu", "candidates": [16],
                                                 "batch": [1], "kv_len": [64]})
    work = tmp_path / "work"
    work.mkdir()
    target = "results/models/tiny-ckpt/spec.json"
    run = snakemake_here(work, config, "--", target)
    assert run.returncode == 0, run.stderr[-3000:]
    spec = json.loads((work / target).read_text())
    assert spec["sha256"]["model.safetensors"] == sha256_file(ckpt / "model.safetensors")
    again = snakemake_here(work, config, "-n", "--", target)
    assert "Nothing to be done" in again.stdout + again.stderr

    torch.manual_seed(2)  # other weights, same shapes: what "replace the weights" means
    LlamaForCausalLM(AutoConfig.from_pretrained(models.PRESET_DIR / "tiny")).save_pretrained(ckpt)
    dry = snakemake_here(work, config, "-n", "--", target)
    assert "load_model" in dry.stdout + dry.stderr and "Nothing to be done" not in dry.stdout + dry.stderr
    sweep_dry = snakemake_here(work, config, "-n", "--", "results/measured/tiny-ckpt/cpu/ar.csv")
    assert "load_model" in sweep_dry.stdout + sweep_dry.stderr
    run = snakemake_here(work, config, "--", target)
    assert run.returncode == 0, run.stderr[-3000:]
    spec = json.loads((work / target).read_text())
    assert spec["sha256"]["model.safetensors"] == sha256_file(ckpt / "model.safetensors")
