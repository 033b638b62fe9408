"""The real workflow's analytic outputs (read from the session's shared run, whose analytic section is the
shipped one: Llama 33B on the A100 80GB PCIe and the A40) and bad configs, in a temporary directory."""

import pandas as pd
import pytest
import yaml
from conftest import REPO

from medusa_roofline.analytic.table import COLUMNS


@pytest.mark.workflow
def test_analytic_end_to_end(shared_run, snakemake_here):
    tmp_path, config = shared_run.workdir, shared_run.config
    shipped = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert config["analytic"] == shipped["analytic"] and shipped["analytic"]["models"] == ["llama-33b"]
    assert config["plot"]["formats"] == ["png", "svg"] and "pdf" in shipped["plot"]["formats"]
    table = pd.read_csv(tmp_path / "results/analytic/llama-33b/a100-80gb-pcie.csv")
    assert list(table.columns) == COLUMNS
    assert len(table) == 11 * 5 * 7 * (2 + 7)  # ops x batch x kv_len x (init, ar and 7 candidate counts)
    fig_dir = tmp_path / "results/figures/llama-33b/a100-80gb-pcie"
    for ext in ("png", "svg", "csv"):
        assert (fig_dir / f"qkpv_medusa.{ext}").stat().st_size > 0
    assert not (fig_dir / "qkpv_medusa.pdf").exists()  # formats come from config
    points = pd.read_csv(fig_dir / "qkpv_medusa.csv")
    computed = points[points["source"] == "analytic"]
    assert set(computed["series"]) == {"qk/pv ar"} | {f"qk/pv Medusa (# cand.: {n})" for n in range(16, 113, 16)}
    assert len(computed) == 2 * 5 * 7 * 8  # (qk, pv) x batch x kv_len x (ar + 7 trees)
    assert set(points["source"]) == {"analytic", "paper"}  # the paper layer, on by default on this chart
    svg = (fig_dir / "qkpv_medusa.svg").read_text()
    assert "Llama 33B, A100 80GB PCIe" in svg and "1,935GB/s" in svg and "312 TFLOP/s" in svg

    again = snakemake_here(tmp_path, config, "-n", repo=shared_run.repo)
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
