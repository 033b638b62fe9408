"""Archive of one run, not part of `rule all`: `snakemake --cores all archive`.

results/archive/<run_name>.tar.gz holds every result of `rule all` (figures, points CSVs, recipes,
tables, spec.json files, ceilings), the hardware table, acceptance table(s), model config.json
files and the paper layer's table that the figures read, the resolved config, provenance and a
sha256 manifest.
`python -m medusa_roofline regenerate results/archive/<run_name>.tar.gz` redraws every figure from it.
Names from common.smk: archive_inputs, archive_config_files, resolved_summary.
"""


rule archive:
    """Target: the archive of this run (named after config run_name)."""
    input:
        f"results/archive/{SETTINGS.run_name}.tar.gz",
    localrule: True


rule archive_run:
    """Pack the run's results, the config files they read, provenance and a sha256 manifest."""
    input:
        results=archive_inputs(),
        config_files=archive_config_files(),
        code=script_code("archive.py"),
    output:
        tarball=f"results/archive/{SETTINGS.run_name}.tar.gz",
    log:
        f"results/logs/archive/{SETTINGS.run_name}.log",
    benchmark:
        f"results/benchmarks/archive/{SETTINGS.run_name}.tsv"
    localrule: True
    conda:
        "../../envs/workflow.yaml"
    params:
        config=config,
        resolved=resolved_summary(),
    script:
        "../../scripts/archive.py"
