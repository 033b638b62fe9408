"""Snakemake entry: measured rows x cost model at the shapes run x measured/datasheet roofs."""

from medusa_roofline.analytic.hardware import detect_hardware, load_ceilings, load_table
from medusa_roofline.core.io import write_csv
from medusa_roofline.decoding.tree import load_acceptance_table
from medusa_roofline.entry import logged
from medusa_roofline.models.source import model_dims
from medusa_roofline.results.metrics import compute_metrics, load_measured

with logged(snakemake) as log:  # noqa: F821 (injected by Snakemake)
    p = snakemake.params  # noqa: F821
    inp = snakemake.input  # noqa: F821
    measured = load_measured(
        [(path, "sweep") for path in inp.measured]
        + [(path, "microbench") for path in inp.microbench]
    )
    ceilings = load_ceilings(inp.ceilings)
    datasheet = detect_hardware(load_table(inp.hardware_table), ceilings["device_name"])
    metrics = compute_metrics(
        measured,
        {snakemake.wildcards.model: model_dims(p.source)},  # noqa: F821
        ceilings,
        datasheet,
        num_medusa_heads=load_acceptance_table(inp.acceptance).shape[0],
    )
    log.info(
        "%d measured rows -> %d metrics rows; %d skipped (status != ok: %s)",
        len(measured),
        len(metrics),
        metrics.attrs["skipped"],
        metrics.attrs["skipped_by_status"],
    )
    write_csv(metrics, snakemake.output[0])  # noqa: F821
