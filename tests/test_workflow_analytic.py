"""The real workflow on a tiny analytic config, in a temporary directory: its analytic outputs (read
from the session's shared tiny run, whose analytic grid is this config's) and bad configs."""

import pandas as pd
import pytest

from medusa_roofline.analytic.table import COLUMNS


@pytest.mark.workflow
def test_tiny_analytic_end_to_end(tiny_measured_run, snakemake_here, tiny_analytic_config):
    tmp_path = tiny_measured_run.workdir
    assert tiny_measured_run.config["analytic"] == dict(tiny_analytic_config["analytic"],
                                                        hardware=["a100-80gb-pcie", "a40"])
    assert tiny_measured_run.config["plot"] == tiny_analytic_config["plot"]
    table = pd.read_csv(tmp_path / "results/analytic/tiny/a100-80gb-pcie.csv")
    assert list(table.columns) == COLUMNS
    assert len(table) == 11 * 2 * 2 * 4
    fig_dir = tmp_path / "results/figures/tiny/a100-80gb-pcie"
    for ext in ("png", "svg", "csv"):
        assert (fig_dir / f"qkpv_medusa.{ext}").stat().st_size > 0
    assert not (fig_dir / "qkpv_medusa.pdf").exists()  # formats come from config
    points = pd.read_csv(fig_dir / "qkpv_medusa.csv")
    assert set(points["series"]) == {"qk/pv ar", "qk/pv Medusa (# cand.: 16)", "qk/pv Medusa (# cand.: 32)"}
    assert set(points["source"]) == {"analytic"}
    assert len(points) == 2 * 2 * 2 * 3  # (qk, pv) x batch x kv_len x (ar + 2 trees)
    svg = (fig_dir / "qkpv_medusa.svg").read_text()
    assert "Tiny Llama, A100 80GB PCIe" in svg and "1,935GB/s" in svg and "312 TFLOP/s" in svg

    again = snakemake_here(tmp_path, tiny_measured_run.config, "-n", repo=tiny_measured_run.repo)
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.workflow
@pytest.mark.parametrize(
    "patch,needle",
    [
        ({"analytic": {"batch": [0]}}, "batch"),
        ({"analytic": {"candidates": [1]}}, "candidates"),
        ({"analytic": {"dtype": "float8"}}, "dtype"),
        ({"analytic": {"attention": "flash"}}, "attention"),
        ({"analytic": {"hardware": ["tpu-v9"]}}, "tpu-v9"),
        ({"analytic": {"models": ["llama-999b"]}}, "llama-999b"),
        ({"plot": {"formats": ["gif"]}}, "formats"),
        ({"analytyc": {}}, "analytyc"),
    ],
)
def test_bad_config_stops_before_any_output(tmp_path, snakemake_here, patch, needle):
    run = snakemake_here(tmp_path, patch)
    assert run.returncode != 0
    assert needle in run.stdout + run.stderr
    assert not (tmp_path / "results").exists()
