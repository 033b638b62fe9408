"""Snakemake entry: train the demo's Medusa heads on the base model's greedy continuations."""

from pathlib import Path

from medusa_roofline.core.io import write_json
from medusa_roofline.demo_train import DemoSpec, build_heads
from medusa_roofline.entry import logged

with logged(snakemake) as log:  # noqa: F821 (injected by Snakemake)
    out = snakemake.output  # noqa: F821
    spec = DemoSpec.from_dict(snakemake.params.spec)  # noqa: F821
    info = build_heads(spec, Path(snakemake.input.config).parent, out.heads)  # noqa: F821
    log.info("heads: loss %.4f -> %.4f in %.1f s", info["loss_first"], info["loss_last"], info["seconds"])
    write_json(info, out.log_json)
