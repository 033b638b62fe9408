"""Snakemake entry: measured memory bandwidth and matmul peak of the local device -> JSON."""

from medusa_roofline.core.io import write_json
from medusa_roofline.entry import logged
from medusa_roofline.measure.ceilings import measure_ceilings
from medusa_roofline.measure.timing import use_threads

with logged(snakemake):  # noqa: F821 (injected by Snakemake)
    p = snakemake.params  # noqa: F821
    use_threads(p.threads)  # fixed and recorded: the ceilings and the ops are timed alike
    ceilings = measure_ceilings(
        p.device,
        p.dtype,
        reps=p.ceilings["reps"],
        warmup=p.ceilings["warmup"],
        copy_bytes=p.ceilings["copy_bytes"],
        matmul_n=p.ceilings["matmul_n"],
    )
    ceilings["device_label"] = snakemake.wildcards.device  # noqa: F821
    write_json(ceilings, snakemake.output[0])  # noqa: F821
