"""Snakemake entry: one measured sweep mode (ar, medusa-N or tree-NAME) over the (batch, kv_len) grid.

Points are checkpointed under results/.checkpoints/… as they are measured, so a killed job resumes
from them when rerun; the checkpoint is removed once the table is written.
"""

from medusa_roofline.entry import logged
from medusa_roofline.measure import checkpoint
from medusa_roofline.measure.sweep import run_sweep
from medusa_roofline.measure.table import write_measured_csv
from medusa_roofline.measure.timing import use_threads

with logged(snakemake):  # noqa: F821 (injected by Snakemake)
    p = snakemake.params  # noqa: F821
    use_threads(p.threads)  # fixed and recorded: the ceilings and the ops are timed alike
    out = snakemake.output[0]  # noqa: F821
    ckpt = checkpoint.checkpoint_dir_for(out)
    rows = run_sweep(
        p.source,
        snakemake.wildcards.mode,  # noqa: F821
        p.batch,
        p.kv_len,
        dtype=p.dtype,
        device=p.device,
        layers=p.layers,
        reps=p.reps,
        warmup=p.warmup,
        acceptance_table=snakemake.input.acceptance,  # noqa: F821
        max_memory_bytes=p.max_memory_bytes,
        checkpoint_dir=ckpt,
        **({"medusa_heads": p.medusa_heads} if p.medusa_heads else {}),  # None for ar: no heads
        tree=dict(snakemake.input.items()).get("tree"),  # noqa: F821 (a tree-NAME mode's file)
    )
    rows["device"] = snakemake.wildcards.device  # noqa: F821
    write_measured_csv(rows, out)
    checkpoint.remove(ckpt)
