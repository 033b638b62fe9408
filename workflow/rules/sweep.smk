"""Measured sweeps on the local device: one job per mode (ar, medusa-N, tree-NAME), plus qk/pv micro-benchmarks."""


rule sweep:
    """Real decoding steps through the model on a KV cache, timed per op, for one mode."""
    input:
        unpack(sweep_tree),
        spec="results/models/{model}/spec.json",
        acceptance=acceptance_table,
        code=script_code("sweep.py"),
    output:
        "results/measured/{model}/{device}/{mode}.csv",
    log:
        "results/logs/sweep/{model}/{device}/{mode}.log",
    benchmark:
        "results/benchmarks/sweep/{model}/{device}/{mode}.tsv"
    conda:
        "../../envs/workflow.yaml"
    threads: measuring_threads()
    resources:
        gpu=GPU_JOBS,
        mem_mb=sweep_mem_mb,
    params:
        threads=MEASURE.threads,
        source=lambda w: MEASURE.models[w.model],
        device=MEASURE.device,
        dtype=MEASURE.dtype,
        layers=MEASURE.layers,
        batch=MEASURE.batch,
        kv_len=MEASURE.kv_len,
        reps=MEASURE.reps,
        warmup=MEASURE.warmup,
        max_memory_bytes=MEASURE.max_memory_bytes,
        medusa_heads=lambda w: None if w.mode == "ar" else STEP.medusa_heads,
    script:
        "../../scripts/sweep.py"


rule microbench:
    """qk, softmax and pv alone at the model's true attention shapes (no weights needed), and one fused
    attention op per other listed backend (sdpa, flex), all in one job."""
    input:
        model_config=model_config(MICROBENCH.models),
        acceptance=MEASURE.acceptance_table,
        trees=[t.origin for t in MICROBENCH.trees.values()],
        code=script_code("microbench.py"),
    output:
        "results/microbench/{model}/{device}.csv",
    log:
        "results/logs/microbench/{model}/{device}.log",
    benchmark:
        "results/benchmarks/microbench/{model}/{device}.tsv"
    conda:
        "../../envs/workflow.yaml"
    threads: measuring_threads()
    resources:
        gpu=GPU_JOBS,
        mem_mb=microbench_mem_mb,
    params:
        threads=MEASURE.threads,
        source=lambda w: MICROBENCH.models[w.model],
        device=MEASURE.device,
        dtype=MEASURE.dtype,
        modes=MICROBENCH.modes,
        batch=MICROBENCH.batch,
        kv_len=MICROBENCH.kv_len,
        reps=MICROBENCH.reps,
        warmup=MICROBENCH.warmup,
        attention_backends=MICROBENCH.attention_backends,
    script:
        "../../scripts/microbench.py"
