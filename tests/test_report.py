"""`snakemake --report` on the tiny workflow: every figure registered, with its caption and grouping."""

from __future__ import annotations

import pytest
from conftest import copy_run


@pytest.mark.workflow
def test_report_lists_every_figure(tmp_path, snakemake_run, tiny_measured_run):
    """On a copy of the session's tiny measured run (conftest.tiny_measured_run)."""
    config = tiny_measured_run.config
    assert config["plot"]["formats"] == ["png", "svg"]
    copy_run(tiny_measured_run, tmp_path)
    report = snakemake_run(tmp_path, config, "--report", "report.html", repo=tiny_measured_run.repo)
    assert report.returncode == 0, (report.stdout + report.stderr)[-3000:]
    html = (tmp_path / "report.html").read_text()

    figures = sorted(p for ext in ("png", "svg") for p in (tmp_path / "results/figures").rglob(f"*.{ext}"))
    # 4 kinds on 2 GPUs, 4 measured kinds (+ prediction), best_tree (every GPU); png and svg
    assert len(figures) == 2 * (4 * 2 + 4 + 1)
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
    assert "<strong>Tiny Llama, A100 80GB PCIe</strong> (analytic)" in html
