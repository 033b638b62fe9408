"""Roofline plotting: every figure, one generic rule per kind of source, the kinds read from the registry.

medusa_roofline.results.render.KINDS lists every figure kind: which rule draws it (its inputs), where
its targets are (FIGURE_TARGETS in common.smk) and which extra params it reads. Each figure comes
with a CSV of exactly the points drawn (source, device, provenance per row) and a recipe
({stem}.recipe.json: kind, inputs, params) from which render redraws it
(`python -m medusa_roofline regenerate`).
Kinds whose content depends on `analytic.attention` have one name per value (qkpv_medusa /
qkpv_medusa_fused, ...): only the configured one is a target, so a fused chart never overwrites an
unfused one. The qk/pv charts of the paper's model and hardware also read the paper layer's table
(plot.paper_overlay: paper_input).
Names from common.smk: SETTINGS, ANALYTIC, SPEEDUP, HARDWARE, figure_kinds, figure_inputs,
paper_input, kind_param, model_config, hardware_entry, figure_title, model_display_name, script_code.
"""


rule figure_analytic:
    """Analytic charts of one (model, hardware) from its analytic table: the paper's qk/pv chart,
    all layer ops, the MLP in decoding vs Medusa."""
    input:
        unpack(paper_input),
        table="results/analytic/{model}/{hardware}.csv",
        code=script_code("figure.py"),
    output:
        figures=[
            report(
                f"results/figures/{{model}}/{{hardware}}/{{figure}}.{ext}",
                caption="../report/analytic_figure.rst",
                category=lambda w: model_display_name(w.model),
                subcategory=lambda w: f"{HARDWARE[w.hardware].display_name} (analytic)",
                labels={"figure": "{figure}", "format": ext},
            )
            for ext in SETTINGS.plot["formats"]
        ],
        points="results/figures/{model}/{hardware}/{figure}.csv",
        recipe="results/figures/{model}/{hardware}/{figure}.recipe.json",
    log:
        "results/logs/figures/{model}/{hardware}/{figure}.log",
    benchmark:
        "results/benchmarks/figures/{model}/{hardware}/{figure}.tsv"
    wildcard_constraints:
        figure="|".join(figure_kinds("analytic")),
    conda:
        "../../envs/workflow.yaml"
    params:
        kind=lambda w: w.figure,
        hardware=hardware_entry,
        title=figure_title,
        dtype=ANALYTIC.dtype,
        attention=ANALYTIC.attention,
        plot=SETTINGS.plot,
    script:
        "../../scripts/figure.py"


rule figure_speedup:
    """Simulated speedup vs candidate tokens from the analytic roofline and the acceptance table."""
    input:
        model_config=model_config(SPEEDUP.models),
        acceptance=SPEEDUP.acceptance_table,
        code=script_code("figure.py"),
    output:
        figures=[
            report(
                f"results/figures/{{model}}/{{hardware}}/{{figure}}.{ext}",
                caption="../report/speedup.rst",
                category=lambda w: model_display_name(w.model),
                subcategory=lambda w: f"{HARDWARE[w.hardware].display_name} (analytic)",
                labels={"figure": "{figure}", "format": ext},
            )
            for ext in SETTINGS.plot["formats"]
        ],
        points="results/figures/{model}/{hardware}/{figure}.csv",
        recipe="results/figures/{model}/{hardware}/{figure}.recipe.json",
    log:
        "results/logs/figures/{model}/{hardware}/{figure}.log",
    benchmark:
        "results/benchmarks/figures/{model}/{hardware}/{figure}.tsv"
    wildcard_constraints:
        figure="|".join(figure_kinds("speedup")),
    conda:
        "../../envs/workflow.yaml"
    params:
        kind=lambda w: w.figure,
        model=lambda w: w.model,
        hardware=hardware_entry,
        title=figure_title,
        dtype=ANALYTIC.dtype,
        attention=ANALYTIC.attention,
        speedup={
            "batch": SPEEDUP.batch,
            "kv_len": SPEEDUP.kv_len,
            "max_candidates": SPEEDUP.max_candidates,
            "trees": tree_paths_param(SPEEDUP.trees),
        },
        medusa_heads=STEP.medusa_heads,
        per_launch_s=PREDICT.per_launch_s,
        plot=SETTINGS.plot,
    script:
        "../../scripts/figure.py"


rule figure_measured:
    """Measured charts of one (model, device) from its metrics table, the measured ceilings and the
    hardware table (+ the acceptance table and the model's config for the measured speedup).
    """
    input:
        unpack(figure_inputs),
        code=script_code("figure.py"),
    output:
        figures=[
            report(
                f"results/figures/{{model}}/{{device}}/{{figure}}.{ext}",
                caption="../report/measured_figure.rst",
                category=lambda w: model_display_name(w.model),
                subcategory="{device} (measured)",
                labels={"figure": "{figure}", "format": ext},
            )
            for ext in SETTINGS.plot["formats"]
        ],
        points="results/figures/{model}/{device}/{figure}.csv",
        recipe="results/figures/{model}/{device}/{figure}.recipe.json",
    log:
        "results/logs/figures/{model}/{device}/{figure}.log",
    benchmark:
        "results/benchmarks/figures/{model}/{device}/{figure}.tsv"
    wildcard_constraints:
        figure="|".join(figure_kinds("measured")),
    conda:
        "../../envs/workflow.yaml"
    params:
        kind=lambda w: w.figure,
        model=lambda w: w.model,
        model_display=lambda w: model_display_name(w.model),
        batch=kind_param("batch", SPEEDUP.measured_batch),
        medusa_heads=kind_param("medusa_heads", STEP.medusa_heads),
        trees=kind_param("trees", tree_paths_param(MEASURE.trees)),
        plot=SETTINGS.plot,
    script:
        "../../scripts/figure.py"


rule figure_best_tree:
    """Best tree size against batch, one line per kv_len, one panel per GPU, from a model's best-tree tables."""
    input:
        best_tree="results/best_tree/{model}.csv",
        code=script_code("figure.py"),
    output:
        figures=[
            report(
                f"results/figures/{{model}}/{BEST_TREE_PLACE}/{{figure}}.{ext}",
                caption="../report/best_tree.rst",
                category=lambda w: model_display_name(w.model),
                subcategory="best tree size (every GPU)",
                labels={"figure": "{figure}", "format": ext},
            )
            for ext in SETTINGS.plot["formats"]
        ],
        points=f"results/figures/{{model}}/{BEST_TREE_PLACE}/{{figure}}.csv",
        recipe=f"results/figures/{{model}}/{BEST_TREE_PLACE}/{{figure}}.recipe.json",
    log:
        f"results/logs/figures/{{model}}/{BEST_TREE_PLACE}/{{figure}}.log",
    benchmark:
        f"results/benchmarks/figures/{{model}}/{BEST_TREE_PLACE}/{{figure}}.tsv"
    wildcard_constraints:
        figure="|".join(figure_kinds("best_tree")),
    conda:
        "../../envs/workflow.yaml"
    params:
        kind=lambda w: w.figure,
        model_display=lambda w: model_display_name(w.model),
        plot=SETTINGS.plot,
    script:
        "../../scripts/figure.py"
