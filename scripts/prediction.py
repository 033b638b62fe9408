"""Snakemake entry: every measured row and step against the roofline predictor -> table + summary."""

import pandas as pd

from medusa_roofline.analytic.hardware import detect_hardware, load_ceilings, load_table
from medusa_roofline.core.io import write_csv
from medusa_roofline.decoding.tree import load_acceptance_table
from medusa_roofline.entry import logged
from medusa_roofline.models.source import model_dims
from medusa_roofline.results.prediction import calibrations, prediction_table, summarise

with logged(snakemake) as log:  # noqa: F821 (injected by Snakemake)
    p = snakemake.params  # noqa: F821
    inp = snakemake.input  # noqa: F821
    metrics = pd.read_csv(inp.metrics)
    ceilings = load_ceilings(inp.ceilings)
    datasheet = detect_hardware(load_table(inp.hardware_table), ceilings["device_name"])
    dtype = str(metrics["dtype"].iloc[0]) if len(metrics) else ceilings["dtype"]
    table = prediction_table(
        metrics,
        model_dims(p.source),
        calibrations(ceilings, datasheet, dtype, p.per_launch_s),
        num_heads=load_acceptance_table(inp.acceptance).shape[0],
    )
    summary = summarise(table)
    for row in summary[summary["op_family"] == "step"].itertuples():
        log.info("step, %s calibration: median |error| %.1f %%, p90 %.1f %% over %d steps",
                 row.calibration, 100 * row.median_abs_rel_error, 100 * row.p90_abs_rel_error, row.rows)
    write_csv(table, snakemake.output.table)  # noqa: F821
    write_csv(summary, snakemake.output.summary)  # noqa: F821
