"""Snakemake entry: the best Medusa tree size of one model per GPU (datasheet) and on the device at hand."""

import pandas as pd

from medusa_roofline.analytic.hardware import load_ceilings, parse_entry
from medusa_roofline.core.io import write_csv
from medusa_roofline.decoding.tree import load_acceptance_table, tree_paths_for
from medusa_roofline.entry import logged
from medusa_roofline.models.source import model_dims
from medusa_roofline.results.best_tree import best_tree_tables

with logged(snakemake) as log:  # noqa: F821 (injected by Snakemake)
    p = snakemake.params  # noqa: F821
    inp = snakemake.input  # noqa: F821
    out = snakemake.output  # noqa: F821
    acceptance = load_acceptance_table(inp.acceptance)
    tables = best_tree_tables(
        snakemake.wildcards.model,  # noqa: F821
        model_dims(p.source),
        acceptance,
        [parse_entry(e["key"], e) for e in p.hardware],
        p.dtype,
        p.batch,
        p.kv_len,
        p.max_candidates,
        tree_paths_for(inp.reference_tree, acceptance),
        medusa_heads=p.medusa_heads,
        fused=p.attention == "fused",
        per_launch_s=p.per_launch_s,
        ceilings=load_ceilings(inp.ceilings) if "ceilings" in inp.keys() else None,
        measured_dtype=p.measured_dtype,
        device=p.device,
        metrics=pd.read_csv(inp.metrics) if "metrics" in inp.keys() else None,
    )
    paths = dict(zip([f"datasheet/{e['key']}" for e in p.hardware], out.datasheet))
    if "measured" in out.keys():
        paths[f"measured/{p.device}"] = out.measured
    for name, path in paths.items():
        write_csv(tables[name], path)
        log.info("%s: %d rows", name, len(tables[name]))
    write_csv(pd.concat([tables[name] for name in paths], ignore_index=True), out.combined)
