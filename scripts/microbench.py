"""Snakemake entry: qk/softmax/pv (and fused attention) micro-benchmark at a model's true attention shapes.

Points are checkpointed under results/.checkpoints/… as they are measured, so a killed job resumes
from them when rerun; the checkpoint is removed once the table is written.
"""

from medusa_roofline.entry import logged
from medusa_roofline.measure import checkpoint
from medusa_roofline.measure.microbench import run_microbench
from medusa_roofline.measure.table import write_measured_csv
from medusa_roofline.measure.timing import use_threads

with logged(snakemake):  # noqa: F821 (injected by Snakemake)
    p = snakemake.params  # noqa: F821
    use_threads(p.threads)  # fixed and recorded: the ceilings and the ops are timed alike
    out = snakemake.output[0]  # noqa: F821
    ckpt = checkpoint.checkpoint_dir_for(out)
    rows = run_microbench(
        p.source,
        p.modes,
        p.batch,
        p.kv_len,
        dtype=p.dtype,
        device=p.device,
        reps=p.reps,
        warmup=p.warmup,
        acceptance_table=snakemake.input.acceptance,  # noqa: F821
        checkpoint_dir=ckpt,
        attention_backends=p.attention_backends,
        trees=list(snakemake.input.trees),  # noqa: F821 (the tree files tree-NAME modes run)
    )
    rows["device"] = snakemake.wildcards.device  # noqa: F821
    write_measured_csv(rows, out)
    checkpoint.remove(ckpt)
