"""medusa-roofline: where LLM decoding sits on the roofline, and why Medusa moves it."""

import os
import sys

from snakemake.utils import min_version, validate

min_version("9.0")

# The package lives beside this Snakefile; scripts import it through PYTHONPATH.
sys.path.insert(0, workflow.basedir)
os.environ.update(
    PYTHONPATH=os.pathsep.join(
        p for p in (workflow.basedir, os.environ.get("PYTHONPATH", "")) if p
    )
)

from medusa_roofline.core.io import read_yaml
from medusa_roofline.repro.overrides import type_overrides


configfile: "config/config.yaml"


# `--config 'measure={"batch": [4]}'` arrives with string leaves; type them as the schema says.
type_overrides(
    config,
    workflow.config_settings.config,
    read_yaml(f"{workflow.basedir}/config/schema.yaml", "config schema"),
)


validate(config, "config/schema.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/analytic.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/acceptance.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/sweep.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/predict.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/archive.smk"


check_measuring_rules()


rule all:
    default_target: True
    input:
        archive_inputs(),
