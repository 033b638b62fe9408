"""`snakemake --report` on the session's shared run: every figure registered, with its caption and grouping."""

from __future__ import annotations

import pytest
from conftest import copy_run


@pytest.mark.workflow
def test_report_lists_every_figure(tmp_path, snakemake_here, shared_run):
    """On a copy of the session's shared run (conftest.shared_run)."""
    config = shared_run.config
    assert config["plot"]["formats"] == ["png", "svg"]
    copy_run(shared_run, tmp_path)
    report = snakemake_here(tmp_path, config, "--report", "report.html", repo=shared_run.repo)
    assert report.returncode == 0, (report.stdout + report.stderr)[-3000:]
    html = (tmp_path / "report.html").read_text()

    figures = sorted(p for ext in ("png", "svg") for p in (tmp_path / "results/figures").rglob(f"*.{ext}"))
    # 3 analytic kinds on 2 GPUs, the simulated speedup, 4 + 3 measured kinds, 4 best-tree charts; png and svg
    assert len(figures) == 2 * (3 * 2 + 1 + 4 + 3 + 4)
    for fig in figures:
        assert str(fig.relative_to(tmp_path)) in html, fig
    # grouped by model (category) and hardware / device (subcategory)
    for group in ("Tiny Llama", "A100 80GB PCIe (analytic)", "cpu (measured)"):
        assert group in html, group
    # captions rendered with what was measured, on what, with which conventions
    assert "The Medusa paper's qk/pv roofline chart" in html
    assert "1935 GB/s" in html and "312 TFLOP/s" in html
    assert "Measured qk and pv of" in html and "Simulated Medusa speedup" in html
    assert "The roofline predictor against every measured row" in html and "The best Medusa tree size of" in html
    assert "<strong>Llama 33B, A100 80GB PCIe</strong> (analytic)" in html
