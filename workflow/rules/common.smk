"""Config resolution, target lists and package-module inputs shared by every rule file."""

from pathlib import Path

from medusa_roofline.core.codedeps import module_files
from medusa_roofline.core.errors import ConfigError
from medusa_roofline.repro import settings

try:
    RESOLVED = settings.resolve(config, workflow.basedir)
except ConfigError as err:
    raise WorkflowError(f"invalid configuration: {err}") from None

ANALYTIC = config["analytic"]
PLOT = config["plot"]
HARDWARE = RESOLVED["hardware_table"]
ANALYTIC_MODELS = RESOLVED["analytic_models"]
MEASURE = config["measure"]
MICROBENCH = config["microbench"]
MEASURE_MODELS = RESOLVED["measure_models"]
MICROBENCH_MODELS = RESOLVED["microbench_models"]
DEVICE = RESOLVED["device"]
MEASURE_DTYPE = RESOLVED["measure_dtype"]
ACCEPTANCE_TABLE = RESOLVED["acceptance_table"]
TORCH_DEVICE = RESOLVED["torch_device"]
GPU_JOBS = 0 if TORCH_DEVICE == "cpu" else 1


wildcard_constraints:
    model=r"[A-Za-z0-9._-]+",
    hardware=r"[A-Za-z0-9._-]+",
    device=r"[A-Za-z0-9._-]+",
    mode=r"ar|medusa-[0-9]+",


def script_code(script):
    """The package modules a script runs (read from its imports, transitively), as inputs:
    editing one reruns exactly the rules whose scripts import it."""
    return module_files(Path(workflow.basedir) / "scripts" / script)


def hardware_entry(wildcards):
    """The one hardware entry a job uses, as params: editing another entry reruns nothing here."""
    hw = HARDWARE[wildcards.hardware]
    return {
        "key": hw.key,
        "display_name": hw.display_name,
        "bandwidth": hw.bandwidth,
        "peak_flops": hw.peak_flops,
        "source": hw.source,
    }


def model_display_name(name):
    return RESOLVED["display_names"].get(name, name)


def analytic_tables():
    return expand(
        "results/analytic/{model}/{hardware}.csv",
        model=ANALYTIC_MODELS,
        hardware=ANALYTIC["hardware"],
    )


def qkpv_figures():
    return expand(
        "results/figures/{model}/{hardware}/qkpv_medusa.{ext}",
        model=ANALYTIC_MODELS,
        hardware=ANALYTIC["hardware"],
        ext=FIGURE_FILES,
    )


def sweep_modes():
    return ["ar"] + [f"medusa-{n}" for n in MEASURE["candidates"]]


def measured_tables():
    return expand(
        "results/measured/{model}/{device}/{mode}.csv",
        model=MEASURE_MODELS,
        device=DEVICE,
        mode=sweep_modes(),
    )


def microbench_tables():
    return expand(
        "results/microbench/{model}/{device}.csv",
        model=MICROBENCH_MODELS,
        device=DEVICE,
    )


# ---- measured ceilings, metrics and figures (workflow/rules/metrics.smk, figures.smk) ----
from medusa_roofline.analytic.hardware import get as hardware_get

CEILINGS = config["ceilings"]
SPEEDUP = config["speedup"]
# Every model with measured rows (sweep and/or micro-benchmark).
MEASURED_MODELS = {**MICROBENCH_MODELS, **MEASURE_MODELS}
ANALYTIC_FIGURES = ["all_ops", "mlp_spec"]
MEASURED_FIGURES = ["qkpv_medusa_measured", "measured_vs_analytic"]


def check_speedup(section):
    """speedup.models resolved (name -> source); speedup.hardware checked against the table."""
    for i, key in enumerate(section["hardware"]):
        hardware_get(HARDWARE, key, f"speedup.hardware[{i}]")
    return settings.model_sources(section["models"], "speedup.models")


try:
    SPEEDUP_MODELS = check_speedup(SPEEDUP)
except ConfigError as err:
    raise WorkflowError(f"invalid configuration: {err}") from None


def config_file(path):
    """A configured file path as given (absolute or cwd-relative), else relative to the repo."""
    path = Path(path)
    if path.is_absolute() or path.exists():
        return str(path)
    return str(Path(workflow.basedir) / path)


def speedup_acceptance():
    """speedup.acceptance_table, or the measured sweep's table when unset."""
    path = SPEEDUP["acceptance_table"]
    return config_file(path) if path else ACCEPTANCE_TABLE


def ceilings_settings():
    """The ceilings keys this device uses (a CPU run does not rerun when a cuda_* key changes)."""
    kind = "cpu" if TORCH_DEVICE == "cpu" else "cuda"
    return {
        "reps": CEILINGS["reps"],
        "warmup": CEILINGS["warmup"],
        "copy_mib": CEILINGS[f"{kind}_copy_mib"],
        "matmul_n": CEILINGS[f"{kind}_matmul_n"],
    }


def measured_csvs(wildcards):
    """The sweep's per-mode tables of a model (none for a micro-benchmark-only model)."""
    if wildcards.model not in MEASURE_MODELS:
        return []
    return expand(
        "results/measured/{model}/{device}/{mode}.csv",
        model=wildcards.model,
        device=wildcards.device,
        mode=sweep_modes(),
    )


def microbench_csvs(wildcards):
    if wildcards.model not in MICROBENCH_MODELS:
        return []
    return [f"results/microbench/{wildcards.model}/{wildcards.device}.csv"]


def figure_title(wildcards):
    return f"{model_display_name(wildcards.model)}, {HARDWARE[wildcards.hardware].display_name}"


def ceilings_files():
    return [f"results/ceilings/{DEVICE}.json"] if MEASURED_MODELS else []


def metrics_tables():
    return expand(
        "results/metrics/{model}/{device}.csv", model=MEASURED_MODELS, device=DEVICE
    )


def analytic_figures():
    """all_ops and mlp_spec per (analytic model, hardware); speedup per (speedup model, hardware)."""
    return expand(
        "results/figures/{model}/{hardware}/{figure}.{ext}",
        model=ANALYTIC_MODELS,
        hardware=ANALYTIC["hardware"],
        figure=ANALYTIC_FIGURES,
        ext=FIGURE_FILES,
    ) + expand(
        "results/figures/{model}/{hardware}/speedup.{ext}",
        model=SPEEDUP_MODELS,
        hardware=SPEEDUP["hardware"],
        ext=FIGURE_FILES,
    )


def measured_figures():
    """Measured charts of every measured model; the speedup only where the sweep ran steps."""
    return expand(
        "results/figures/{model}/{device}/{figure}.{ext}",
        model=MEASURED_MODELS,
        device=DEVICE,
        figure=MEASURED_FIGURES,
        ext=FIGURE_FILES,
    ) + expand(
        "results/figures/{model}/{device}/speedup_measured.{ext}",
        model=MEASURE_MODELS,
        device=DEVICE,
        ext=FIGURE_FILES,
    )


def backend_figures():
    """qkpv_backends (eager qk/pv vs fused attention) per micro-benchmark model, when a fused backend is listed."""
    if set(MICROBENCH["attention_backends"]) <= {"eager"}:
        return []
    return expand(
        "results/figures/{model}/{device}/qkpv_backends.{ext}",
        model=MICROBENCH_MODELS,
        device=DEVICE,
        ext=FIGURE_FILES,
    )


# ---- figure recipes, run archive and report (workflow/rules/archive.smk, docs: README) ----
FIGURE_FILES = PLOT["formats"] + ["csv", "recipe.json"]


def archive_inputs():
    """Everything `rule all` builds, plus the measured models' spec.json files."""
    return (
        analytic_tables()
        + qkpv_figures()
        + measured_tables()
        + microbench_tables()
        + ceilings_files()
        + metrics_tables()
        + analytic_figures()
        + measured_figures()
        + backend_figures()
        + expand("results/models/{model}/spec.json", model=MEASURE_MODELS)
    )


def archive_config_files():
    """Files outside results/ that the figures read: hardware table, acceptance table(s), model config.json."""
    models = {**ANALYTIC_MODELS, **SPEEDUP_MODELS, **MEASURED_MODELS}
    files = [config_file(config["hardware_table"]), ACCEPTANCE_TABLE]
    if SPEEDUP_MODELS:
        files.append(speedup_acceptance())
    files += [settings.model_config_file(source) for source in models.values()]
    return sorted(set(files))


def resolved_summary():
    """What the config resolved to on this machine (recorded in the archive's provenance.json)."""
    return {
        "analytic_models": ANALYTIC_MODELS,
        "measure_models": MEASURE_MODELS,
        "microbench_models": MICROBENCH_MODELS,
        "speedup_models": SPEEDUP_MODELS,
        "device": DEVICE,
        "torch_device": TORCH_DEVICE,
        "measure_dtype": MEASURE_DTYPE,
        "hardware_table": config_file(config["hardware_table"]),
        "acceptance_table": ACCEPTANCE_TABLE,
        "speedup_acceptance_table": speedup_acceptance(),
    }
