"""Snakemake entry: pack one run into results/archive/<run_name>.tar.gz (medusa_roofline.archive)."""

from medusa_roofline.entry import logged
from medusa_roofline.repro.archive import pack_run

with logged(snakemake) as log:  # noqa: F821 (injected by Snakemake)
    inp = snakemake.input  # noqa: F821
    manifest = pack_run(
        snakemake.output.tarball,  # noqa: F821
        results=list(inp.results),
        config_files=list(inp.config_files),
        config=snakemake.params.config,  # noqa: F821
        resolved=snakemake.params.resolved,  # noqa: F821
    )
    log.info("packed %d files (sha256 manifest included)", len(manifest))
