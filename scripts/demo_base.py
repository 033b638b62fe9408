"""Snakemake entry: train and save the demo's base model, and write the held-out prompts."""

from pathlib import Path

from medusa_roofline.core.io import write_json
from medusa_roofline.demo_train import DemoSpec, build_base, write_prompts
from medusa_roofline.entry import logged

with logged(snakemake) as log:  # noqa: F821 (injected by Snakemake)
    out = snakemake.output  # noqa: F821
    spec = DemoSpec.from_dict(snakemake.params.spec)  # noqa: F821
    info = build_base(spec, Path(out.config).parent)
    write_prompts(spec, out.prompts)
    log.info("base model: loss %.4f -> %.4f in %.1f s", info["loss_first"], info["loss_last"], info["seconds"])
    write_json(info, out.log_json)
