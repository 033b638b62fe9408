"""The measured stages of the real workflow: load_model, one sweep job per mode, microbench."""

import json

import pandas as pd
import pytest

REQUIRED = ["model", "device", "mode", "phase", "op", "candidates", "batch", "kv_len", "q_len", "keys",
            "dtype", "reps", "time_s_median", "time_s_p10", "time_s_p90", "torch", "transformers", "cuda",
            "device_name", "git_commit"]


@pytest.mark.workflow
def test_tiny_measured_end_to_end(tmp_path, snakemake_run, tiny_measured_config):
    run = snakemake_run(tmp_path, tiny_measured_config)
    assert run.returncode == 0, run.stderr[-3000:]
    spec = json.loads((tmp_path / "results/models/tiny/spec.json").read_text())
    assert spec["source"] == "preset" and spec["layers_instantiated"] == 2
    assert spec["parameters"] > 0 and "config.json" in spec["sha256"]
    for mode, ops in {"ar": 17, "medusa-16": 18}.items():  # per-op rows, remainder, step
        df = pd.read_csv(tmp_path / f"results/measured/tiny/cpu/{mode}.csv")
        assert set(REQUIRED) <= set(df.columns)
        assert len(df) == ops and (df["status"] == "ok").all()
        assert (df["time_s_median"] > 0).all()
        assert set(df["device"]) == {"cpu"}
    micro = pd.read_csv(tmp_path / "results/microbench/tiny/cpu.csv")
    assert set(micro["op"]) == {"qk", "softmax", "pv"} and set(micro["mode"]) == {"ar", "medusa-16"}


@pytest.mark.workflow
def test_every_figure_for_every_model_and_hardware(tmp_path, snakemake_run, tiny_measured_config):
    """A figure (with its points CSV and recipe) exists for every configured pair; no row lost."""
    config = dict(tiny_measured_config)
    config["analytic"] = dict(config["analytic"], hardware=["a100-80gb-pcie", "a40"])
    config["speedup"] = dict(config["speedup"], hardware=["a100-80gb-pcie", "a40"])
    config["ceilings"] = {"reps": 2, "warmup": 1, "cpu_copy_mib": 8, "cpu_matmul_n": 128}
    run = snakemake_run(tmp_path, config)
    assert run.returncode == 0, run.stderr[-3000:]
    figures = tmp_path / "results/figures/tiny"
    for hardware in ("a100-80gb-pcie", "a40"):
        for kind in ("qkpv_medusa", "all_ops", "mlp_spec", "speedup"):
            for ext in ("png", "svg", "csv", "recipe.json"):
                assert (figures / hardware / f"{kind}.{ext}").stat().st_size > 0, (hardware, kind, ext)
    for kind in ("qkpv_medusa_measured", "measured_vs_analytic", "speedup_measured", "prediction"):
        assert (figures / "cpu" / f"{kind}.csv").stat().st_size > 0, kind
    assert (figures / "all-gpus" / "best_tree.png").stat().st_size > 0
    prediction = pd.read_csv(tmp_path / "results/prediction/tiny/cpu.csv")
    assert (prediction["op"] == "step").sum() == 2 and set(prediction["calibration"]) == {"measured"}
    summary = pd.read_csv(tmp_path / "results/prediction/tiny/cpu_summary.csv")
    assert "step" in set(summary["op_family"])
    best = pd.read_csv(tmp_path / "results/best_tree/tiny.csv")
    assert set(best["calibration"]) == {"datasheet", "measured", "measured steps"}
    assert (tmp_path / "results/best_tree/tiny/datasheet/a100-80gb-pcie.csv").exists()
    assert (tmp_path / "results/best_tree/tiny/measured/cpu.csv").exists()
    measured = sum(len(pd.read_csv(p)) for p in (tmp_path / "results/measured/tiny/cpu").glob("*.csv"))
    measured += len(pd.read_csv(tmp_path / "results/microbench/tiny/cpu.csv"))
    assert len(pd.read_csv(tmp_path / "results/metrics/tiny/cpu.csv")) == measured
