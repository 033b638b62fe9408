"""`snakemake --report` on the tiny workflow: every figure registered, with its caption and grouping."""

from __future__ import annotations

import pytest


@pytest.mark.workflow
def test_report_lists_every_figure(tmp_path, snakemake_run, tiny_analytic_config):
    config = dict(
        tiny_analytic_config,
        measure={"models": [], "device": "cpu"},
        microbench={"models": ["tiny"], "candidates": [16], "batch": [1], "kv_len": [64], "reps": 2, "warmup": 1},
        ceilings={"reps": 2, "warmup": 1, "cpu_copy_mib": 4, "cpu_matmul_n": 128},
    )
    run = snakemake_run(tmp_path, config)
    assert run.returncode == 0, run.stderr[-3000:]
    report = snakemake_run(tmp_path, config, "--report", "report.html")
    assert report.returncode == 0, (report.stdout + report.stderr)[-3000:]
    html = (tmp_path / "report.html").read_text()

    figures = sorted(p for ext in ("png", "svg") for p in (tmp_path / "results/figures").rglob(f"*.{ext}"))
    assert len(figures) == 2 * 8  # + prediction (measured) and best_tree (every GPU)
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
