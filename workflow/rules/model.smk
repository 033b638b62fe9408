"""Model loading: what each measured model is (architecture, size, source, file hashes)."""


rule load_model:
    """Build or load the model once and record it; every sweep job depends on this spec. A local
    checkpoint's weight files are inputs: replacing one reruns this and every sweep of the model.
    """
    input:
        model_config=model_config(MEASURE.models),
        weights=lambda w: SETTINGS.model_weight_files(MEASURE.models[w.model]),
        code=script_code("load_model.py"),
    output:
        "results/models/{model}/spec.json",
    log:
        "results/logs/load_model/{model}.log",
    benchmark:
        "results/benchmarks/load_model/{model}.tsv"
    conda:
        "../../envs/workflow.yaml"
    resources:
        mem_mb=model_mem_mb,
    params:
        source=lambda w: MEASURE.models[w.model],
        dtype=MEASURE.dtype,
        device=MEASURE.device,
        layers=MEASURE.layers,
    script:
        "../../scripts/load_model.py"
