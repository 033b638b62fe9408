"""The resolved settings, wildcard constraints, target lists and helpers every rule file shares.

Read top to bottom: imports, the config resolved once (repro/settings.py: every check that needs the
files behind the config runs here, before any job), then the target lists `rule all` and the
archive collect, then the helpers the rules call.
"""

from pathlib import Path

from medusa_roofline.analytic import memory
from medusa_roofline.core.codedeps import module_closure, module_files
from medusa_roofline.core.dtypes import DTYPE_BYTES
from medusa_roofline.core.errors import ConfigError
from medusa_roofline.decoding.tree import load_acceptance_table
from medusa_roofline.models.source import instantiated_layers, model_dims
from medusa_roofline.repro import settings
from medusa_roofline.repro.tree_settings import query_tokens, tree_paths_param
from medusa_roofline.results.render import KINDS, PAPER_ROLE, rule_kinds

# ---- the config, checked and resolved once ----------------------------------------------------

try:
    SETTINGS = settings.resolve(config, workflow.basedir)
except ConfigError as err:
    raise WorkflowError(f"invalid configuration: {err}") from None

ANALYTIC = SETTINGS.analytic
MEASURE = SETTINGS.measure
MICROBENCH = SETTINGS.microbench
SPEEDUP = SETTINGS.speedup
STEP = SETTINGS.step
PREDICT = SETTINGS.predict
BEST_TREE = SETTINGS.best_tree
# Models with Medusa heads (rule acceptance, acceptance.smk); the demo (demo.smk), None unless enabled.
ACCEPTANCE = SETTINGS.acceptance
DEMO = SETTINGS.demo
HARDWARE = SETTINGS.hardware
PAPER = SETTINGS.paper_overlay
DEVICE = MEASURE.device_label
FIGURE_FILES = SETTINGS.plot["formats"] + ["csv", "recipe.json"]
BEST_TREE_PLACE = "all-gpus"
"""Where a model's best-tree figure goes (it has one panel per GPU): results/figures/{model}/all-gpus/."""
FUSED_BACKEND_LISTED = not set(MICROBENCH.attention_backends) <= {"eager"}
FIGURE_TARGETS = {
    "analytic": [(m, hw) for m in ANALYTIC.models for hw in ANALYTIC.hardware],
    "speedup": [(m, hw) for m in SPEEDUP.models for hw in SPEEDUP.hardware],
    "measured": [(m, DEVICE) for m in SETTINGS.measured_models],
    "swept": [(m, DEVICE) for m in MEASURE.models],
    "fused": [(m, DEVICE) for m in MICROBENCH.models] if FUSED_BACKEND_LISTED else [],
    "best_tree": [(m, BEST_TREE_PLACE) for m in BEST_TREE.models],
}
"""Where the figures of each kind's `targets` are: (model, hardware or device) pairs."""
# Measuring jobs on CUDA hold the `gpu` resource (one at a time per GPU).
GPU_JOBS = 0 if MEASURE.device == "cpu" else 1
TIMING_MODULE = "medusa_roofline.measure.timing"
"""Scripts that import this module time something; their rules are measuring rules (measuring_threads)."""


wildcard_constraints:
    model=r"[A-Za-z0-9._-]+",
    hardware=r"[A-Za-z0-9._-]+",
    device=r"[A-Za-z0-9._-]+",
    mode=r"ar|medusa-[0-9]+|tree-[A-Za-z0-9][A-Za-z0-9_.]*",


# ---- target lists (rule all, archive) ---------------------------------------------------------


def analytic_tables():
    return expand(
        "results/analytic/{model}/{hardware}.csv",
        model=ANALYTIC.models,
        hardware=ANALYTIC.hardware,
    )


def drawn_kinds():
    """The figure kinds this config draws: those of analytic.attention (unfused and fused charts have
    their own names), every kind that does not depend on it."""
    return [
        name
        for rule in dict.fromkeys(k.rule for k in KINDS.values())
        for name in figure_kinds(rule)
    ]


def figure_files():
    """Every figure of every kind drawn, with its points CSV and recipe."""
    return [
        f"results/figures/{model}/{place}/{name}.{ext}"
        for name in drawn_kinds()
        for model, place in FIGURE_TARGETS[KINDS[name].targets]
        for ext in FIGURE_FILES
    ]


def paper_drawn():
    """Whether any figure of this config draws the paper layer (its table is then archived)."""
    targets = [
        (name, model, place)
        for name in drawn_kinds()
        if PAPER_ROLE in KINDS[name].optional
        for model, place in FIGURE_TARGETS[KINDS[name].targets]
    ]
    return any(paper_layer_on(name, model, place) for name, model, place in targets)


def measured_tables():
    return expand(
        "results/measured/{model}/{device}/{mode}.csv",
        model=MEASURE.models,
        device=DEVICE,
        mode=MEASURE.modes,
    )


def microbench_tables():
    return expand(
        "results/microbench/{model}/{device}.csv",
        model=MICROBENCH.models,
        device=DEVICE,
    )


def ceilings_files():
    return [f"results/ceilings/{DEVICE}.json"] if SETTINGS.measured_models else []


def metrics_tables():
    return expand(
        "results/metrics/{model}/{device}.csv",
        model=SETTINGS.measured_models,
        device=DEVICE,
    )


def prediction_tables():
    return expand(
        "results/prediction/{model}/{device}{suffix}.csv",
        model=SETTINGS.measured_models,
        device=DEVICE,
        suffix=["", "_summary"],
    )


def best_tree_outputs(model="{model}"):
    """The best-tree tables of one model: one per configured GPU (datasheet), one for the device at
    hand when anything is measured (its ceilings exist), and all of them in one table (the figure's).
    """
    outputs = {
        "datasheet": [
            f"results/best_tree/{model}/datasheet/{hw}.csv" for hw in BEST_TREE.hardware
        ],
        "combined": f"results/best_tree/{model}.csv",
    }
    if SETTINGS.measured_models:
        outputs["measured"] = f"results/best_tree/{model}/measured/{DEVICE}.csv"
    return outputs


def best_tree_files():
    files = []
    for model in BEST_TREE.models:
        for value in best_tree_outputs(model).values():
            files += value if isinstance(value, list) else [value]
    return files


def archive_inputs():
    """Everything `rule all` builds, plus the measured models' spec.json files."""
    return (
        analytic_tables()
        + measured_tables()
        + microbench_tables()
        + ceilings_files()
        + metrics_tables()
        + prediction_tables()
        + best_tree_files()
        + figure_files()
        + expand("results/models/{model}/spec.json", model=MEASURE.models)
        + acceptance_outputs()
    )


def acceptance_outputs():
    """The measured acceptance of every model with heads, and the demo's trained files."""
    files = expand(
        "results/acceptance/{model}/{file}",
        model=ACCEPTANCE.models,
        file=["acceptance.csv", "generation.csv", "acceptance.json"],
    )
    return files + (list(DEMO.files.values()) if DEMO else [])


def archive_config_files():
    """Files outside results/ that the figures read: hardware table, acceptance table(s), model config.json."""
    models = {
        **ANALYTIC.models,
        **SPEEDUP.models,
        **SETTINGS.measured_models,
        **BEST_TREE.models,
    }
    files = [SETTINGS.hardware_table, MEASURE.acceptance_table]
    if SPEEDUP.models:
        files.append(SPEEDUP.acceptance_table)
    if BEST_TREE.models:
        files += [BEST_TREE.acceptance_table, BEST_TREE.reference_tree]
    if paper_drawn():
        files.append(PAPER.table)
    files += [SETTINGS.model_config_file(source) for source in models.values()]
    return sorted(set(files))


def resolved_summary():
    """What the config resolved to on this machine (recorded in the archive's provenance.json)."""
    return {
        "analytic_models": ANALYTIC.models,
        "measure_models": MEASURE.models,
        "microbench_models": MICROBENCH.models,
        "speedup_models": SPEEDUP.models,
        "device": DEVICE,
        "torch_device": MEASURE.device,
        "measure_dtype": MEASURE.dtype,
        "hardware_table": SETTINGS.hardware_table,
        "acceptance_table": MEASURE.acceptance_table,
        "speedup_acceptance_table": SPEEDUP.acceptance_table,
        "best_tree_models": BEST_TREE.models,
        "best_tree_hardware": BEST_TREE.hardware,
        "best_tree_acceptance_table": BEST_TREE.acceptance_table,
        "medusa_heads": STEP.medusa_heads,
    }


# ---- helpers the rules call -------------------------------------------------------------------


def run_cores():
    """The cores this run schedules on (--cores), or None where it has no local limit (Slurm without --cores)."""
    try:
        return workflow.cores
    except WorkflowError:
        return None


def measuring_threads():
    """`threads:` of every measuring rule: every core of the run, so the scheduler starts one only when no
    other job runs and starts nothing beside it (it subtracts a running job's threads from the free cores).
    Where the run has no local core limit (a cluster executor), the timing thread count, the CPUs Slurm
    gives the job (its node exclusively: profiles/slurm). Never fewer than measure.threads.
    """
    cores = run_cores()
    return max(MEASURE.threads, cores or 0)


def check_measuring_rules():
    """Stop before any job when a rule whose script times something (imports measure/timing.py) could share
    the machine: it must ask for measuring_threads(), undiminished by --set-threads or --max-threads.
    """
    max_threads = workflow.resource_settings.max_threads
    cores = run_cores()
    if cores and max_threads is not None and max_threads < cores:
        raise WorkflowError(
            f"--max-threads {max_threads} is below --cores {cores}: measuring jobs ask for every core so that "
            "nothing runs beside a timer; drop --max-threads (or lower --cores to it)"
        )
    for measuring in workflow.rules:
        if not measuring.script:
            continue
        script = Path(workflow.basedir) / "scripts" / Path(measuring.script).name
        if TIMING_MODULE not in module_closure(script):
            continue
        threads = measuring.resources["_cores"]
        threads = getattr(threads, "value", threads)
        if threads != measuring_threads():
            raise WorkflowError(
                f"rule {measuring.name} times something ({script.name} imports {TIMING_MODULE}) but asks for "
                f"threads={threads}, not every core of the run ({measuring_threads()}): other jobs could run "
                "beside its timer; declare `threads: measuring_threads()` and do not --set-threads it"
            )


def script_code(script):
    """The package modules a script runs (read from its imports, transitively), as inputs:
    editing one reruns exactly the rules whose scripts import it."""
    return module_files(Path(workflow.basedir) / "scripts" / script)


def figure_kinds(rule):
    """The figure kinds a rule draws (its `figure` wildcard's values) under analytic.attention."""
    return rule_kinds(rule, ANALYTIC.attention)


def paper_layer_on(figure, model, place):
    """Whether figure `figure` of (model, hardware or device) draws the paper layer (plot.paper_overlay)."""
    if PAPER_ROLE not in KINDS[figure].optional:
        return False
    analytic = KINDS[figure].rule == "analytic"
    return PAPER.on_analytic(model, place) if analytic else PAPER.on_measured(model)


def paper_input(wildcards):
    """The paper layer's read-off table as the `paper` input, where this figure draws it."""
    place = getattr(wildcards, "hardware", None) or wildcards.device
    if paper_layer_on(wildcards.figure, wildcards.model, place):
        return {PAPER_ROLE: PAPER.table}
    return {}


def figure_inputs(wildcards):
    """A measured figure's inputs: metrics, ceilings and hardware table, plus what its kind reads."""
    inputs = {
        "metrics": f"results/metrics/{wildcards.model}/{wildcards.device}.csv",
        "ceilings": f"results/ceilings/{wildcards.device}.json",
        "hardware_table": SETTINGS.hardware_table,
        **paper_input(wildcards),
    }
    kind = KINDS[wildcards.figure]
    if "prediction" in kind.roles:
        inputs["prediction"] = (
            f"results/prediction/{wildcards.model}/{wildcards.device}.csv"
        )
    if "acceptance" in kind.roles:
        inputs["acceptance"] = acceptance_table(wildcards)
    if "generation" in kind.optional and ACCEPTANCE.generation(wildcards.model):
        inputs["generation"] = ACCEPTANCE.generation(wildcards.model)
    if "model_config" in kind.roles:
        inputs["model_config"] = SETTINGS.model_config_file(
            MEASURE.models[wildcards.model]
        )
    return inputs


def sweep_tree(wildcards):
    """A tree-NAME sweep job's tree file (measure.trees), as its `tree` input; none for other modes."""
    return (
        {"tree": MEASURE.trees[wildcards.mode].origin}
        if wildcards.mode in MEASURE.trees
        else {}
    )


def acceptance_table(wildcards):
    """The table a model's trees come from: its measured one (rule acceptance), else measure.acceptance_table."""
    return ACCEPTANCE.table(wildcards.model) or MEASURE.acceptance_table


def kind_param(name, value):
    """A param only the figure kinds that read it get (None for the others: changing it reruns only them)."""
    return lambda wildcards: value if name in KINDS[wildcards.figure].params else None


def model_config(models):
    """Input function: the config.json of the wildcard's model among ``models`` (name -> source)."""
    return lambda wildcards: SETTINGS.model_config_file(models[wildcards.model])


def best_tree_inputs(wildcards):
    """A model's best-tree inputs: its config and the acceptance table; the device's ceilings when
    anything is measured; the model's metrics when it was swept (its measured steps)."""
    inputs = {
        "model_config": SETTINGS.model_config_file(BEST_TREE.models[wildcards.model]),
        "acceptance": BEST_TREE.acceptance_table,
        "reference_tree": BEST_TREE.reference_tree,
    }
    if SETTINGS.measured_models:
        inputs["ceilings"] = f"results/ceilings/{DEVICE}.json"
    if wildcards.model in MEASURE.models:
        inputs["metrics"] = f"results/metrics/{wildcards.model}/{DEVICE}.csv"
    return inputs


def hardware_entry(wildcards):
    """The one hardware entry a job uses, as params: editing another entry reruns nothing here."""
    return hardware_entry_of(wildcards.hardware)


def hardware_entry_of(key):
    """A hardware entry as plain params (display name, roofs, source)."""
    hw = HARDWARE[key]
    return {
        "key": hw.key,
        "display_name": hw.display_name,
        "bandwidth": hw.bandwidth,
        "peak_flops": hw.peak_flops,
        "source": hw.source,
    }


def model_display_name(name):
    return SETTINGS.display_name(name)


def figure_title(wildcards):
    return f"{model_display_name(wildcards.model)}, {HARDWARE[wildcards.hardware].display_name}"


def measured_csvs(wildcards):
    """The sweep's per-mode tables of a model (none for a micro-benchmark-only model)."""
    if wildcards.model not in MEASURE.models:
        return []
    return expand(
        "results/measured/{model}/{device}/{mode}.csv",
        model=wildcards.model,
        device=wildcards.device,
        mode=MEASURE.modes,
    )


def microbench_csvs(wildcards):
    if wildcards.model not in MICROBENCH.models:
        return []
    return [f"results/microbench/{wildcards.model}/{wildcards.device}.csv"]


def model_mem_mb(wildcards, modes=None):
    """Host memory (MB) a job building the wildcard's model needs: weights, heads, KV cache and the step's
    temporaries over the grid (on CUDA only what stays on the host), from analytic/memory.py.
    """
    source = MEASURE.models[wildcards.model]
    dims = SETTINGS.model_dims(source)
    modes = modes or MEASURE.modes
    q_lens = [query_tokens(m, MEASURE.trees) for m in modes]
    heads = (
        0 if modes == ["ar"] else len(load_acceptance_table(MEASURE.acceptance_table))
    )
    weights_read_on_host = bool(SETTINGS.model_weight_files(source))
    return memory.rule_mem_mb(
        dims,
        instantiated_layers(dims, MEASURE.layers, source),
        MEASURE.batch,
        MEASURE.kv_len,
        q_lens,
        DTYPE_BYTES[MEASURE.dtype],
        heads,
        MEASURE.device,
        weights_read_on_host,
    )


def sweep_mem_mb(wildcards):
    return model_mem_mb(wildcards, [wildcards.mode])


def microbench_mem_mb(wildcards):
    return memory.attention_mem_mb(
        model_dims(MICROBENCH.models[wildcards.model]),
        MICROBENCH.batch,
        MICROBENCH.kv_len,
        [query_tokens(m, MICROBENCH.trees) for m in MICROBENCH.modes],
        DTYPE_BYTES[MEASURE.dtype],
        MEASURE.device,
    )
