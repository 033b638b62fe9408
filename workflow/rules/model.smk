"""Model loading: what each measured model is (architecture, size, source, file hashes)."""


rule load_model:
    """Build or load the model once and record it; every sweep job depends on this spec."""
    input:
        model_config=model_config(MEASURE.models),
        code=script_code("load_model.py"),
    output:
        "results/models/{model}/spec.json",
    log:
        "results/logs/load_model/{model}.log",
    benchmark:
        "results/benchmarks/load_model/{model}.tsv"
    conda:
        "../../envs/workflow.yaml"
    params:
        source=lambda w: MEASURE.models[w.model],
        dtype=MEASURE.dtype,
        device=MEASURE.device,
        layers=MEASURE.layers,
    script:
        "../../scripts/load_model.py"
