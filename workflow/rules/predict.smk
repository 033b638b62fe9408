"""The roofline predictor closes the loop: its error against every measured row and step, and the best
Medusa tree size per GPU.

Names from common.smk: SETTINGS, MEASURE, STEP, PREDICT, BEST_TREE, DEVICE, acceptance_table, model_config,
model_display_name, best_tree_inputs, best_tree_outputs, script_code.
"""


rule prediction:
    """Every measured row and step of one model with its predicted time (measured calibration, and
    datasheet when the device is in the hardware table), relative error, and a summary per op family.
    """
    input:
        metrics="results/metrics/{model}/{device}.csv",
        ceilings="results/ceilings/{device}.json",
        hardware_table=SETTINGS.hardware_table,
        acceptance=acceptance_table,
        model_config=model_config(SETTINGS.measured_models),
        code=script_code("prediction.py"),
    output:
        table=report(
            "results/prediction/{model}/{device}.csv",
            caption="../report/prediction.rst",
            category=lambda w: model_display_name(w.model),
            subcategory="{device} (measured)",
            labels={"figure": "prediction table", "format": "csv"},
        ),
        summary="results/prediction/{model}/{device}_summary.csv",
    log:
        "results/logs/prediction/{model}/{device}.log",
    benchmark:
        "results/benchmarks/prediction/{model}/{device}.tsv"
    conda:
        "../../envs/workflow.yaml"
    params:
        source=lambda w: SETTINGS.measured_models[w.model],
        per_launch_s=PREDICT.per_launch_s,
    script:
        "../../scripts/prediction.py"


rule best_tree:
    """The best tree size of one model for every configured GPU (datasheet calibration) and for the
    device at hand (measured calibration, and measured steps where the model was swept).
    """
    input:
        unpack(best_tree_inputs),
        code=script_code("best_tree.py"),
    output:
        **best_tree_outputs(),
    log:
        "results/logs/best_tree/{model}.log",
    benchmark:
        "results/benchmarks/best_tree/{model}.tsv"
    conda:
        "../../envs/workflow.yaml"
    params:
        source=lambda w: BEST_TREE.models[w.model],
        hardware=[hardware_entry_of(key) for key in BEST_TREE.hardware],
        dtype=BEST_TREE.dtype,
        attention=BEST_TREE.attention,
        batch=BEST_TREE.batch,
        kv_len=BEST_TREE.kv_len,
        max_candidates=BEST_TREE.max_candidates,
        medusa_heads=STEP.medusa_heads,
        per_launch_s=PREDICT.per_launch_s,
        measured_dtype=MEASURE.dtype,
        device=DEVICE,
    script:
        "../../scripts/best_tree.py"
