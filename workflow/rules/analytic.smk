"""Analytic roofline tables: the paper's FLOP/byte accounting per (model, hardware)."""


rule analytic_table:
    """Every (phase, op, candidates, batch, kv_len) of one model on one GPU, with its roof."""
    input:
        model_config=model_config(ANALYTIC.models),
        code=script_code("analytic_table.py"),
    output:
        "results/analytic/{model}/{hardware}.csv",
    log:
        "results/logs/analytic/{model}/{hardware}.log",
    benchmark:
        "results/benchmarks/analytic/{model}/{hardware}.tsv"
    conda:
        "../../envs/workflow.yaml"
    params:
        hardware=hardware_entry,
        source=lambda w: ANALYTIC.models[w.model],
        dtype=ANALYTIC.dtype,
        attention=ANALYTIC.attention,
        candidates=ANALYTIC.candidates,
        batch=ANALYTIC.batch,
        kv_len=ANALYTIC.kv_len,
    script:
        "../../scripts/analytic_table.py"
