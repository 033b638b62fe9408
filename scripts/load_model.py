"""Snakemake entry: load (or build) a model and record what was loaded in spec.json."""

from medusa_roofline.core.io import write_json
from medusa_roofline.entry import logged
from medusa_roofline.models.load import model_spec

with logged(snakemake):  # noqa: F821 (injected by Snakemake)
    p = snakemake.params  # noqa: F821
    spec = model_spec(p.source, p.dtype, p.device, p.layers)
    write_json(spec, snakemake.output[0])  # noqa: F821
