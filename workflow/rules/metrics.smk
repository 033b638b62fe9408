"""Measured ceilings of the local device, and measured rows joined with the cost model and the roofs.

Names from common.smk: SETTINGS, MEASURE, GPU_JOBS, acceptance_table, model_config, measured_csvs,
microbench_csvs, script_code.
"""


rule ceilings:
    """Measured memory bandwidth (copy, read) and matmul peak of the local device, with spread."""
    input:
        code=script_code("ceilings.py"),
    output:
        "results/ceilings/{device}.json",
    log:
        "results/logs/ceilings/{device}.log",
    benchmark:
        "results/benchmarks/ceilings/{device}.tsv"
    conda:
        "../../envs/workflow.yaml"
    threads: measuring_threads()
    resources:
        gpu=GPU_JOBS,
    params:
        threads=MEASURE.threads,
        device=MEASURE.device,
        dtype=MEASURE.dtype,
        ceilings=vars(SETTINGS.ceilings),
    script:
        "../../scripts/ceilings.py"


rule metrics:
    """Every measured row with FLOPs and bytes at the shapes run, achieved rates and both roofs."""
    input:
        measured=measured_csvs,
        microbench=microbench_csvs,
        ceilings="results/ceilings/{device}.json",
        hardware_table=SETTINGS.hardware_table,
        acceptance=acceptance_table,
        model_config=model_config(SETTINGS.measured_models),
        code=script_code("metrics.py"),
    output:
        report(
            "results/metrics/{model}/{device}.csv",
            caption="../report/metrics.rst",
            category=lambda w: model_display_name(w.model),
            subcategory="{device} (measured)",
            labels={"figure": "metrics table", "format": "csv"},
        ),
    log:
        "results/logs/metrics/{model}/{device}.log",
    benchmark:
        "results/benchmarks/metrics/{model}/{device}.tsv"
    conda:
        "../../envs/workflow.yaml"
    params:
        source=lambda w: SETTINGS.measured_models[w.model],
    script:
        "../../scripts/metrics.py"
