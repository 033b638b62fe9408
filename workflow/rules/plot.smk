"""Roofline figures (seaborn), each with the CSV of exactly the points drawn and its recipe.

Every figure is drawn by medusa_roofline.results.render from the rule's named inputs and params; the
recipe ({stem}.recipe.json) records both, so `python -m medusa_roofline regenerate` can redraw it.
"""


rule plot_qkpv_analytic:
    """The paper's qk/pv chart: AR vs Medusa tree sizes, from the analytic table."""
    input:
        table="results/analytic/{model}/{hardware}.csv",
        code=script_code("figure.py"),
    output:
        figures=[
            report(
                f"results/figures/{{model}}/{{hardware}}/qkpv_medusa.{ext}",
                caption="../report/qkpv_medusa.rst",
                category=lambda w: model_display_name(w.model),
                subcategory=lambda w: f"{HARDWARE[w.hardware].display_name} (analytic)",
                labels={"figure": "qkpv_medusa", "format": ext},
            )
            for ext in PLOT["formats"]
        ],
        points="results/figures/{model}/{hardware}/qkpv_medusa.csv",
        recipe="results/figures/{model}/{hardware}/qkpv_medusa.recipe.json",
    log:
        "results/logs/plot/{model}/{hardware}/qkpv_medusa.log",
    benchmark:
        "results/benchmarks/plot/{model}/{hardware}/qkpv_medusa.tsv"
    conda:
        "../../envs/workflow.yaml"
    params:
        kind="qkpv_medusa",
        hardware=hardware_entry,
        title=figure_title,
        attention=ANALYTIC["attention"],
        dtype=ANALYTIC["dtype"],
        plot=PLOT,
    script:
        "../../scripts/figure.py"
