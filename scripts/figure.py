"""Snakemake entry for every figure rule: one figure of the kind named in params (see render.KINDS).

Read inputs/params -> medusa_roofline.render -> figure files, points CSV and recipe JSON.
"""

from medusa_roofline.entry import logged
from medusa_roofline.results import render

with logged(snakemake):  # noqa: F821 (injected by Snakemake)
    params = render.plain(snakemake.params)  # noqa: F821
    kind = params.pop("kind")
    inputs = render.figure_inputs(kind, snakemake.input)  # noqa: F821
    fig, points = render.render(kind, inputs, params)
    out = snakemake.output  # noqa: F821
    render.save(fig, points, kind, inputs, params, out.points, out.recipe)
