"""Figures beyond the paper's qk/pv chart: analytic per (model, hardware), measured per (model, device),
including qkpv_backends (eager qk/pv vs fused attention; requested by common.smk when
microbench.attention_backends lists a fused backend).

Every figure comes with a CSV of exactly the points drawn (source, device, provenance per row) and
a recipe ({stem}.recipe.json: kind, inputs, params) from which medusa_roofline.results.render redraws it.
Names from common.smk: SPEEDUP, SPEEDUP_MODELS, MEASURED_MODELS, ANALYTIC_FIGURES,
MEASURED_FIGURES, speedup_acceptance, config_file, figure_title, model_display_name.
"""


rule figure_analytic:
    """The paper's all-ops chart and the decoding-vs-Medusa MLP chart, from the analytic table."""
    input:
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
            for ext in PLOT["formats"]
        ],
        points="results/figures/{model}/{hardware}/{figure}.csv",
        recipe="results/figures/{model}/{hardware}/{figure}.recipe.json",
    log:
        "results/logs/figures/{model}/{hardware}/{figure}.log",
    benchmark:
        "results/benchmarks/figures/{model}/{hardware}/{figure}.tsv"
    wildcard_constraints:
        figure="|".join(ANALYTIC_FIGURES),
    conda:
        "../../envs/workflow.yaml"
    params:
        kind=lambda w: w.figure,
        hardware=hardware_entry,
        title=figure_title,
        dtype=ANALYTIC["dtype"],
        attention=ANALYTIC["attention"],
        plot=PLOT,
    script:
        "../../scripts/figure.py"


rule figure_speedup:
    """Simulated speedup vs candidate tokens from the analytic roofline and the acceptance table."""
    input:
        model_config=lambda w: settings.model_config_file(SPEEDUP_MODELS[w.model]),
        acceptance=speedup_acceptance(),
        code=script_code("figure.py"),
    output:
        figures=[
            report(
                f"results/figures/{{model}}/{{hardware}}/speedup.{ext}",
                caption="../report/speedup.rst",
                category=lambda w: model_display_name(w.model),
                subcategory=lambda w: f"{HARDWARE[w.hardware].display_name} (analytic)",
                labels={"figure": "speedup", "format": ext},
            )
            for ext in PLOT["formats"]
        ],
        points="results/figures/{model}/{hardware}/speedup.csv",
        recipe="results/figures/{model}/{hardware}/speedup.recipe.json",
    log:
        "results/logs/figures/{model}/{hardware}/speedup.log",
    benchmark:
        "results/benchmarks/figures/{model}/{hardware}/speedup.tsv"
    conda:
        "../../envs/workflow.yaml"
    params:
        kind="speedup",
        model=lambda w: w.model,
        hardware=hardware_entry,
        title=figure_title,
        dtype=ANALYTIC["dtype"],
        attention=ANALYTIC["attention"],
        speedup={
            "batch": SPEEDUP["batch"],
            "kv_len": SPEEDUP["kv_len"],
            "max_candidates": SPEEDUP["max_candidates"],
        },
        plot=PLOT,
    script:
        "../../scripts/figure.py"


rule figure_measured:
    """Measured qk/pv on the local device, and measured vs analytic per op, from the metrics table."""
    input:
        metrics="results/metrics/{model}/{device}.csv",
        ceilings="results/ceilings/{device}.json",
        hardware_table=config_file(config["hardware_table"]),
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
            for ext in PLOT["formats"]
        ],
        points="results/figures/{model}/{device}/{figure}.csv",
        recipe="results/figures/{model}/{device}/{figure}.recipe.json",
    log:
        "results/logs/figures/{model}/{device}/{figure}.log",
    benchmark:
        "results/benchmarks/figures/{model}/{device}/{figure}.tsv"
    wildcard_constraints:
        figure="|".join(MEASURED_FIGURES),
    conda:
        "../../envs/workflow.yaml"
    params:
        kind=lambda w: w.figure,
        model_display=lambda w: model_display_name(w.model),
        plot=PLOT,
    script:
        "../../scripts/figure.py"


rule figure_qkpv_backends:
    """Measured eager qk/pv vs fused attention (SDPA, FlexAttention) on the roofline, from the metrics table."""
    input:
        metrics="results/metrics/{model}/{device}.csv",
        ceilings="results/ceilings/{device}.json",
        hardware_table=config_file(config["hardware_table"]),
        code=script_code("figure.py"),
    output:
        figures=[
            report(
                f"results/figures/{{model}}/{{device}}/qkpv_backends.{ext}",
                caption="../report/qkpv_backends.rst",
                category=lambda w: model_display_name(w.model),
                subcategory="{device} (measured)",
                labels={"figure": "qkpv_backends", "format": ext},
            )
            for ext in PLOT["formats"]
        ],
        points="results/figures/{model}/{device}/qkpv_backends.csv",
        recipe="results/figures/{model}/{device}/qkpv_backends.recipe.json",
    log:
        "results/logs/figures/{model}/{device}/qkpv_backends.log",
    benchmark:
        "results/benchmarks/figures/{model}/{device}/qkpv_backends.tsv"
    conda:
        "../../envs/workflow.yaml"
    params:
        kind="qkpv_backends",
        model_display=lambda w: model_display_name(w.model),
        plot=PLOT,
    script:
        "../../scripts/figure.py"


rule figure_speedup_measured:
    """Speedup from measured step times, with the analytic prediction at the measured roofs."""
    input:
        metrics="results/metrics/{model}/{device}.csv",
        ceilings="results/ceilings/{device}.json",
        hardware_table=config_file(config["hardware_table"]),
        acceptance=ACCEPTANCE_TABLE,
        model_config=lambda w: settings.model_config_file(MEASURE_MODELS[w.model]),
        code=script_code("figure.py"),
    output:
        figures=[
            report(
                f"results/figures/{{model}}/{{device}}/speedup_measured.{ext}",
                caption="../report/speedup_measured.rst",
                category=lambda w: model_display_name(w.model),
                subcategory="{device} (measured)",
                labels={"figure": "speedup_measured", "format": ext},
            )
            for ext in PLOT["formats"]
        ],
        points="results/figures/{model}/{device}/speedup_measured.csv",
        recipe="results/figures/{model}/{device}/speedup_measured.recipe.json",
    log:
        "results/logs/figures/{model}/{device}/speedup_measured.log",
    benchmark:
        "results/benchmarks/figures/{model}/{device}/speedup_measured.tsv"
    conda:
        "../../envs/workflow.yaml"
    params:
        kind="speedup_measured",
        model=lambda w: w.model,
        model_display=lambda w: model_display_name(w.model),
        batch=SPEEDUP["batch"],
        plot=PLOT,
    script:
        "../../scripts/figure.py"
