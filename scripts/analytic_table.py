"""Snakemake entry: analytic roofline table for one (model, hardware)."""

from medusa_roofline.analytic.hardware import parse_entry
from medusa_roofline.analytic.table import analytic_table
from medusa_roofline.core.io import write_csv
from medusa_roofline.entry import logged
from medusa_roofline.models.source import model_dims

with logged(snakemake):  # noqa: F821 (injected by Snakemake)
    p = snakemake.params  # noqa: F821
    hw = parse_entry(p.hardware["key"], p.hardware)
    table = analytic_table(
        snakemake.wildcards.model,  # noqa: F821
        model_dims(p.source),
        hw,
        p.dtype,
        p.candidates,
        p.batch,
        p.kv_len,
        p.attention,
    )
    write_csv(table, snakemake.output[0])  # noqa: F821
