"""Acceptance measured from a local model: per measured model with Medusa heads (acceptance.models, or the
demo), its acceptance table and real generation's tokens per step; the table then builds that model's trees.

Names from common.smk: ACCEPTANCE, MEASURE, GPU_JOBS, SETTINGS, script_code.
"""


rule acceptance:
    """How often each head's rank-k proposal is the base model's greedy token (Wilson 95 % intervals),
    and the tokens per step real Medusa generation reaches with trees built from that table.
    """
    input:
        model_config=lambda w: SETTINGS.model_config_file(MEASURE.models[w.model]),
        weights=lambda w: SETTINGS.model_weight_files(MEASURE.models[w.model]),
        heads=lambda w: ACCEPTANCE.models[w.model]["heads"],
        prompts=lambda w: ACCEPTANCE.models[w.model]["prompts"] or [],
        code=script_code("acceptance.py"),
    output:
        table="results/acceptance/{model}/acceptance.csv",
        generation="results/acceptance/{model}/generation.csv",
        summary="results/acceptance/{model}/acceptance.json",
    log:
        "results/logs/acceptance/{model}.log",
    benchmark:
        "results/benchmarks/acceptance/{model}.tsv"
    conda:
        "../../envs/workflow.yaml"
    threads: ACCEPTANCE.threads
    resources:
        gpu=GPU_JOBS,
        mem_mb=8000,
    params:
        source=lambda w: MEASURE.models[w.model],
        tokenizer=lambda w: ACCEPTANCE.models[w.model]["tokenizer"],
        device=MEASURE.device,
        dtype=MEASURE.dtype,
        random_prompts=ACCEPTANCE.random_prompts,
        prompt_len=ACCEPTANCE.prompt_len,
        max_new_tokens=ACCEPTANCE.max_new_tokens,
        top_k=ACCEPTANCE.top_k,
        candidates=ACCEPTANCE.candidates,
        seed=ACCEPTANCE.seed,
    script:
        "../../scripts/acceptance.py"
