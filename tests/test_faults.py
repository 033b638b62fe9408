"""Faults: OOM at a point, a job killed mid-sweep, resuming from checkpoints, bad timings, safe loading,
and byte-identical analytic outputs."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from conftest import changed_pins

from medusa_roofline.analytic.costmodel import measured_ops
from medusa_roofline.core.errors import ConfigError, MeasurementError
from medusa_roofline.measure import checkpoint, microbench, sweep
from medusa_roofline.measure.sweep import run_sweep
from medusa_roofline.measure.table import COLUMNS, validate_measured, write_measured_csv
from medusa_roofline.models import load
from medusa_roofline.models import source as models
from medusa_roofline.results.render import rule_kinds

REPO = Path(__file__).resolve().parent.parent
TINY = dict(reps=2, warmup=1, progress=False)
KEY = ["model", "mode", "phase", "op", "scope", "calls", "candidates", "batch", "kv_len", "q_len", "keys",
       "layers", "dtype", "reps", "warmup", "status"]


# ------------------------------------------------------------------------------------------ OOM


@pytest.mark.slow
def test_sweep_oom_at_one_point_is_recorded_and_the_sweep_goes_on(monkeypatch):
    original = sweep.measure_point

    def flaky(step, *args, **kwargs):
        if step.batch == 2 and step.kv_len == 16:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")
        return original(step, *args, **kwargs)

    monkeypatch.setattr(sweep, "measure_point", flaky)
    df = run_sweep("tiny", "ar", [1, 2], [8, 16], **TINY)
    oom = (df["batch"] == 2) & (df["kv_len"] == 16)
    assert (df.loc[oom, "status"] == "oom").all() and df.loc[oom, "time_s_median"].isna().all()
    assert (df.loc[~oom, "status"] == "ok").all() and (df.loc[~oom, "time_s_median"] > 0).all()
    assert len(df) == 4 * len(measured_ops("ar"))  # every row a point yields, for each of the 4 points
    validate_measured(df)  # oom rows are allowed


def test_microbench_oom_at_one_point_is_recorded_and_the_run_goes_on(monkeypatch):
    original = microbench.attention_inputs

    def flaky(dims, batch, kv_len, q_len, *args, **kwargs):
        if q_len == 16 and kv_len == 32:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return original(dims, batch, kv_len, q_len, *args, **kwargs)

    monkeypatch.setattr(microbench, "attention_inputs", flaky)
    df = microbench.run_microbench("tiny", ["ar", "medusa-16"], [1], [16, 32], **TINY)
    oom = (df["mode"] == "medusa-16") & (df["kv_len"] == 32)
    assert (df.loc[oom, "status"] == "oom").all() and df.loc[oom, "time_s_median"].isna().all()
    assert (df.loc[~oom, "status"] == "ok").all() and len(df) == 2 * 2 * 3


# ------------------------------------------------------------------------------- bad timings


def _table(**change):
    row = {c: 1 for c in COLUMNS}
    row.update(model="tiny", mode="medusa-16", op="qk", batch=2, kv_len=64, status="ok",
               time_s_median=2e-5, time_s_p10=1e-5, time_s_p90=3e-5)
    row.update(change)
    return pd.DataFrame([row], columns=COLUMNS)


@pytest.mark.parametrize("change,needle", [
    (dict(time_s_median=math.nan), "time_s_median is nan"),
    (dict(time_s_p90=math.inf), "time_s_p90 is inf"),
    (dict(time_s_p10=0.0), "time_s_p10 is 0.0"),
    (dict(time_s_median=-1e-6), "time_s_median is -1e-06"),
    (dict(time_s_p10=5e-5), "does not hold"),
    (dict(status="weird"), "status 'weird'"),
])
def test_bad_timings_are_rejected_naming_the_point(tmp_path, change, needle):
    out = tmp_path / "measured.csv"
    with pytest.raises(MeasurementError) as err:
        write_measured_csv(_table(**change), out)
    assert needle in str(err.value)
    assert "model=tiny mode=medusa-16 op=qk batch=2 kv_len=64" in str(err.value)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_oom_rows_with_nan_times_are_written(tmp_path):
    write_measured_csv(_table(status="oom", time_s_median=math.nan, time_s_p10=math.nan, time_s_p90=math.nan),
                       tmp_path / "m.csv")
    assert pd.read_csv(tmp_path / "m.csv")["status"].tolist() == ["oom"]


# ------------------------------------------------------------------------------- checkpoints


class Killed(Exception):
    pass


MEASURE_POINT = sweep.measure_point


def _die_after(monkeypatch, n):
    """measure_point raises after ``n`` points, like a job killed mid-sweep; returns the call log."""
    calls = []
    original = MEASURE_POINT

    def counting(step, *args, **kwargs):
        if len(calls) == n:
            raise Killed
        calls.append((step.batch, step.kv_len))
        return original(step, *args, **kwargs)

    monkeypatch.setattr(sweep, "measure_point", counting)
    return calls


@pytest.mark.slow
def test_sweep_resumes_from_checkpointed_points(tmp_path, monkeypatch, caplog):
    ckpt = tmp_path / "results" / ".checkpoints" / "measured" / "tiny" / "cpu" / "medusa-4"
    calls = _die_after(monkeypatch, 2)
    with pytest.raises(Killed):
        run_sweep("tiny", "medusa-4", [1, 2], [8, 16], checkpoint_dir=ckpt, **TINY)
    assert calls == [(1, 8), (1, 16)]
    saved = sorted(p.name for p in ckpt.glob("*/point-*.json"))
    assert saved == ["point-1_16.json", "point-1_8.json"]
    first = json.loads(next(ckpt.glob("*/point-1_8.json")).read_text())["rows"]

    calls = _die_after(monkeypatch, 99)
    with caplog.at_level("INFO", logger="medusa_roofline"):
        df = run_sweep("tiny", "medusa-4", [1, 2], [8, 16], checkpoint_dir=ckpt, **TINY)
    assert calls == [(2, 8), (2, 16)]  # only the points not measured before the kill
    assert "resumed 2 of 4 points" in caplog.text
    assert list(df.columns) == COLUMNS and len(df) == 4 * len(measured_ops("medusa")) and (df["status"] == "ok").all()
    assert df[["batch", "kv_len"]].drop_duplicates().values.tolist() == [[1, 8], [1, 16], [2, 8], [2, 16]]
    resumed = df[(df["batch"] == 1) & (df["kv_len"] == 8)]
    assert resumed["time_s_median"].tolist() == [r["time_s_median"] for r in first]

    # anything that changes the measurement (here reps) starts over and drops the stale points
    calls = _die_after(monkeypatch, 99)
    run_sweep("tiny", "medusa-4", [1], [8], checkpoint_dir=ckpt, reps=3, warmup=1, progress=False)
    assert calls == [(1, 8)]
    assert len(list(ckpt.iterdir())) == 1

    checkpoint.remove(ckpt)
    assert not (tmp_path / "results" / ".checkpoints").exists() and (tmp_path / "results").is_dir()


def test_microbench_resumes_from_checkpointed_points(tmp_path, monkeypatch, caplog):
    ckpt = tmp_path / "ckpt"
    df1 = microbench.run_microbench("tiny", ["ar", "medusa-8"], [1], [16], checkpoint_dir=ckpt, **TINY)
    monkeypatch.setattr(microbench, "attention_inputs", lambda *a, **k: pytest.fail("re-measured a saved point"))
    with caplog.at_level("INFO", logger="medusa_roofline"):
        df2 = microbench.run_microbench("tiny", ["ar", "medusa-8"], [1], [16], checkpoint_dir=ckpt, **TINY)
    assert "resumed 2 of 2 points" in caplog.text
    pd.testing.assert_frame_equal(df1, df2)


def test_checkpoint_dir_for_output_paths():
    assert checkpoint.checkpoint_dir_for("results/measured/tiny/cpu/medusa-16.csv") == \
        Path("results/.checkpoints/measured/tiny/cpu/medusa-16")
    assert checkpoint.checkpoint_dir_for("/x/results/microbench/llama-33b/cuda.csv") == \
        Path("/x/results/.checkpoints/microbench/llama-33b/cuda")
    assert checkpoint.checkpoint_dir_for("out/t.csv") == Path("out/.checkpoints/t")


# --------------------------------------------------------------------------- killed workflow

SWEEP_TARGET = "results/measured/tiny/cpu/ar.csv"


def _kill_config(kv_lens):
    return {
        "analytic": {"models": ["tiny"], "hardware": ["a100-80gb-pcie"], "candidates": [16], "batch": [1],
                     "kv_len": [128]},
        "measure": {"models": ["tiny"], "device": "cpu", "candidates": [16], "batch": [1], "kv_len": kv_lens,
                    "reps": 2, "warmup": 0},
        "microbench": {"models": []},
        "plot": {"formats": ["png"]},
    }


_SPAWNED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _kill_leftover_runs():
    """A failing assertion must not leave a Snakemake run (and its jobs) behind."""
    yield
    while _SPAWNED:
        proc = _SPAWNED.pop()
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _popen_snakemake(workdir: Path, config: dict | None, *args: str) -> subprocess.Popen:
    """Snakemake in its own process group (so the whole job tree can be killed), output to a file."""
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "2", *args]
    if config is not None:  # last: --configfile takes every argument after it
        (workdir / "test-config.yaml").write_text(yaml.safe_dump(config))
        cmd += ["--configfile", str(workdir / "test-config.yaml")]
    with open(workdir / "snakemake.out", "a") as log:
        proc = subprocess.Popen(cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    _SPAWNED.append(proc)
    return proc


def _output(workdir: Path) -> str:
    return (workdir / "snakemake.out").read_text()


@pytest.mark.workflow
def test_sigkill_mid_sweep_then_rerun_matches_an_uninterrupted_run(tmp_path, snakemake_here):
    kv_lens = [16, 32, 48, 64, 80, 96]
    config = _kill_config(kv_lens)
    killed = tmp_path / "killed"
    victim = _popen_snakemake(killed, config, SWEEP_TARGET)
    points = killed / "results" / ".checkpoints" / "measured" / "tiny" / "cpu" / "ar"
    deadline = time.monotonic() + 300
    try:
        while not list(points.glob("*/point-*.json")):
            assert victim.poll() is None, "the sweep ended before it could be killed:\n" + _output(killed)[-3000:]
            assert time.monotonic() < deadline, "no checkpointed point after 300 s"
            time.sleep(0.02)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()

    # the partial output never appears as complete; the measured points survive the kill
    assert not (killed / SWEEP_TARGET).exists()
    out_dir = (killed / SWEEP_TARGET).parent
    assert not out_dir.exists() or not list(out_dir.iterdir())  # not even a temporary file
    n_saved = len(list(points.glob("*/point-*.json")))
    assert 1 <= n_saved < 6

    # a SIGKILLed Snakemake leaves its lock: unlock, then rerun the same command
    unlock = snakemake_here(killed, config, "--unlock")
    assert unlock.returncode == 0, (unlock.stdout + unlock.stderr)[-3000:]
    rerun = _popen_snakemake(killed, config, "--rerun-incomplete", SWEEP_TARGET)
    assert rerun.wait(timeout=300) == 0, _output(killed)[-3000:]
    log = (killed / "results" / "logs" / "sweep" / "tiny" / "cpu" / "ar.log").read_text()
    resumed = int(log.split("resumed ")[1].split(" of 6 points")[0])
    assert resumed == n_saved
    assert not (killed / "results" / ".checkpoints").exists()  # removed once the table is written

    # the uninterrupted run: the same sweep in this process, with the settings the rule resolved (CPU, so float32)
    a = pd.read_csv(killed / SWEEP_TARGET)
    b = run_sweep("tiny", "ar", [1], kv_lens, dtype="float32", device="cpu", reps=2, warmup=0,
                  acceptance_table=REPO / "config" / "acceptance" / "default.csv", progress=False)
    assert list(a.columns) == COLUMNS
    pd.testing.assert_frame_equal(a[KEY], b[KEY].reset_index(drop=True), check_dtype=False)
    assert (a["status"] == "ok").all() and (a["time_s_median"] > 0).all()


# ------------------------------------------------------------------ safe loading, determinism


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A real HF checkpoint of the tiny preset: LlamaForCausalLM.save_pretrained, safetensors only."""
    from transformers import AutoConfig, LlamaForCausalLM

    directory = tmp_path_factory.mktemp("ckpt") / "tiny-ckpt"
    torch.manual_seed(1)
    model = LlamaForCausalLM(AutoConfig.from_pretrained(models.PRESET_DIR / "tiny"))
    model.save_pretrained(directory, safe_serialization=True)
    assert (directory / "model.safetensors").is_file() and not list(directory.glob("*.bin"))
    return directory, model


def test_local_checkpoint_loads_from_safetensors(tiny_checkpoint):
    directory, reference = tiny_checkpoint
    loaded = load.build_model(str(directory), torch.float32)
    for (name, a), (_, b) in zip(reference.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    spec = load.model_spec(str(directory), "float32", "cpu", layers=1)
    assert spec["model"] == "tiny-ckpt" and spec["source"] == str(directory)
    assert spec["weights"] == "checkpoint" and set(spec["sha256"]) == {"config.json", "model.safetensors"}
    assert spec["layers_instantiated"] == 1


def test_pickled_checkpoint_is_never_unpickled(tmp_path, tiny_checkpoint):
    directory = tmp_path / "evil"
    directory.mkdir()
    (directory / "config.json").write_bytes((tiny_checkpoint[0] / "config.json").read_bytes())
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"model.embed_tokens.weight": Payload()}, directory / "pytorch_model.bin")
    with pytest.raises(ConfigError, match="refusing to load the checkpoint .*weights_only=True"):
        load.build_model(str(directory), torch.float32)
    assert not marker.exists()


def test_stray_weights_without_hf_files_are_refused(tmp_path, tiny_checkpoint):
    directory = tmp_path / "heads-only"
    directory.mkdir()
    (directory / "config.json").write_bytes((tiny_checkpoint[0] / "config.json").read_bytes())
    torch.save({"w": torch.zeros(2)}, directory / "medusa_lm_head.pt")
    with pytest.raises(ConfigError, match="no Hugging Face weights"):
        load.build_model(str(directory), torch.float32)


CKPT_FIGURES = "results/figures/tiny-ckpt/a100-80gb-pcie"
CKPT_PINNED = {
    "results/analytic/tiny-ckpt/a100-80gb-pcie.csv": "4d3005643c411195c500b22bc6f496681ef5cad24d8c12502d50082d7a61d09a",
    f"{CKPT_FIGURES}/qkpv_medusa.csv": "c8925eba9586bd79f83c67d03c178e5ed9434eae543a7973c4a23fc48cbe2e63",
    f"{CKPT_FIGURES}/all_ops.csv": "73daea74b06717eef616372c0a5bfe1a449f07545b76301b8fc4b973f9f03643",
    f"{CKPT_FIGURES}/mlp_spec.csv": "9bac60aa740c655396f4e5a145bc5fa073dc7fce2ab2b4ed41fb9dbb95950729",
}
"""The analytic table and the points of its three figures (the default, unfused attention's kinds) for a local
checkpoint of the tiny preset, byte for byte: every fresh run, in any session, writes these bytes. A change meant to
change them updates the pins here and in test_pinned_outputs.py, and says why."""


@pytest.mark.workflow
def test_analytic_outputs_are_byte_identical_and_local_checkpoints_work(tmp_path, snakemake_here, tiny_analytic_config,
                                                                        tiny_checkpoint):
    """A fresh run of the analytic stage (the table and its three figures as targets, not the speedup and
    best-tree jobs), with analytic.models = [a local checkpoint directory], writes the pinned bytes."""
    from medusa_roofline.analytic.hardware import load_table
    from medusa_roofline.analytic.table import analytic_table

    config = dict(tiny_analytic_config, plot={"formats": ["png"]})
    config["analytic"] = dict(config["analytic"], models=[str(tiny_checkpoint[0])])
    table = "results/analytic/tiny-ckpt/a100-80gb-pcie.csv"  # the local checkpoint, by its directory name
    kinds = rule_kinds("analytic", "unfused")
    assert {f"{CKPT_FIGURES}/{kind}.csv" for kind in kinds} == set(CKPT_PINNED) - {table}
    run = snakemake_here(tmp_path, config, "--", table, *[f"{CKPT_FIGURES}/{kind}.png" for kind in kinds])
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    written = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "results" / "analytic").rglob("*") if p.is_file())
    written += sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "results" / "figures").rglob("*.csv"))
    assert written == sorted(CKPT_PINNED)
    changed = changed_pins(tmp_path, CKPT_PINNED)
    assert not changed, f"changed bytes: {changed}"
    # same architecture as the tiny preset, so the same table
    cfg = config["analytic"]
    expected = analytic_table("tiny-ckpt", models.model_dims("tiny"),
                              load_table(REPO / "config" / "hardware.yaml")["a100-80gb-pcie"], "float16",
                              cfg["candidates"], cfg["batch"], cfg["kv_len"])
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / table), pd.read_csv(
        __import__("io").StringIO(expected.to_csv(index=False, float_format="%.6g"))))
