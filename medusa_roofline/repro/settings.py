"""The workflow config, checked once at the edge and resolved into typed settings.

The JSON schema (``config/schema.yaml``, applied by the Snakefile's ``validate``) catches types and
ranges and fills defaults; :func:`resolve` then checks what needs the files behind the config
(presets, the hardware table, acceptance tables, context lengths against a model's positions) and
resolves every ``auto`` and every path, so that a bad config stops with one message naming the key
before any job runs or any output is written. The rules pass these resolved values to the scripts as
params, and the library trusts them.

This module is imported when the Snakefile is parsed: it reads files only (no torch, no transformers).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..analytic import hardware as hw_mod
from ..core.dtypes import auto_dtype
from ..core.errors import ConfigError
from ..core.nvidia import nvidia_gpu_visible
from ..decoding import tree
from ..measure.backends import parse_backends
from ..models.source import ModelDims, check_weight_files, model_dims
from ..results.paper_table import PaperOverlay, load_paper_table
from .acceptance_settings import Acceptance, Demo, resolve_acceptance, resolve_demo
from .checks import (acceptance_table, check_grid, check_positions, config_path, display_names, grid, model_config_file,
                     model_shapes, model_sources, model_weight_files)
from .tree_settings import check_tree_sizes, resolve_tree_files, table_heads

MIB = 1 << 20


@dataclass(frozen=True)
class Analytic:
    models: dict[str, str]  # result name -> source
    hardware: list[str]
    dtype: str
    attention: str
    candidates: list[int]
    batch: list[int]
    kv_len: list[int]


@dataclass(frozen=True)
class Measure:
    models: dict[str, str]
    device: str  # the torch device: cpu, cuda or cuda:N
    device_label: str  # the device's name in result paths
    dtype: str  # resolved: float32, float16 or bfloat16
    layers: int | None
    candidates: list[int]
    batch: list[int]
    kv_len: list[int]
    reps: int
    warmup: int
    acceptance_table: str
    max_memory_bytes: int | None
    threads: int = 1  # CPU threads every measuring job times with (ceilings, sweep, micro-benchmark)
    trees: dict[str, tree.Tree] = field(default_factory=dict)  # mode tree-NAME -> its tree (measure.trees)

    @property
    def modes(self) -> list[str]:
        """One sweep job each: ``ar``, ``medusa-N`` for every tree size and ``tree-NAME`` for every tree file."""
        return ["ar"] + [f"medusa-{n}" for n in self.candidates] + list(self.trees)


@dataclass(frozen=True)
class Microbench:
    models: dict[str, str]
    candidates: list[int]
    batch: list[int]
    kv_len: list[int]
    reps: int
    warmup: int
    attention_backends: list[str]

    trees: dict[str, tree.Tree] = field(default_factory=dict)  # mode tree-NAME -> its tree (microbench.trees)

    @property
    def modes(self) -> list[str]:
        return ["ar"] + [f"medusa-{n}" for n in self.candidates] + list(self.trees)


@dataclass(frozen=True)
class Ceilings:
    reps: int
    warmup: int
    copy_bytes: int
    matmul_n: int


@dataclass(frozen=True)
class Speedup:
    models: dict[str, str]
    hardware: list[str]
    batch: int
    kv_len: list[int]
    max_candidates: int
    acceptance_table: str
    measured_batch: int  # of the measured figure: `batch` when the sweep measures it, else its largest batch
    trees: dict[str, tree.Tree] = field(default_factory=dict)  # mode tree-NAME -> its tree (speedup.trees)


@dataclass(frozen=True)
class Step:
    medusa_heads: str  # tree | accepted (costmodel.step_shape)


@dataclass(frozen=True)
class Predict:
    per_launch_s: float  # datasheet calibration, seconds per kernel launch


@dataclass(frozen=True)
class BestTree:
    models: dict[str, str]
    hardware: list[str]  # resolved: `all` expanded to every key of the table
    dtype: str
    attention: str
    batch: list[int]
    kv_len: list[int]
    max_candidates: int
    reference_tree: str  # a tree file, checked against the acceptance table
    acceptance_table: str


@dataclass(frozen=True)
class Settings:
    run_name: str
    hardware_table: str  # path of the table
    hardware: dict[str, hw_mod.Hardware]
    analytic: Analytic
    measure: Measure
    microbench: Microbench
    ceilings: Ceilings
    speedup: Speedup
    step: Step
    predict: Predict
    best_tree: BestTree
    plot: dict
    paper_overlay: PaperOverlay
    display_names: dict[str, str] = field(default_factory=dict)
    acceptance: Acceptance | None = None
    demo: Demo | None = None

    @property
    def measured_models(self) -> dict[str, str]:
        """Every model with measured rows: micro-benchmarked and/or swept."""
        return {**self.microbench.models, **self.measure.models}

    def produced(self, source: str) -> bool:
        """Whether a model source is a checkpoint a rule of this run makes (the demo's)."""
        return self.demo is not None and source == self.demo.checkpoint

    def model_config_file(self, source: str) -> str:
        """A model's config.json as a rule input (the demo's is not looked for: rule demo_base makes it)."""
        return f"{source}/config.json" if self.produced(source) else model_config_file(source)

    def model_weight_files(self, source: str) -> list[str]:
        return [f"{source}/model.safetensors"] if self.produced(source) else model_weight_files(source)

    def model_dims(self, source: str) -> ModelDims:
        return self.demo.dims if self.produced(source) else model_dims(source)

    def display_name(self, model: str) -> str:
        return self.display_names.get(model, model)


# ---------------------------------------------------------------------------------------------- device


def torch_device(measure: dict) -> str:
    """The torch device the measuring jobs use; `auto` means cuda when a GPU is visible."""
    if measure["device"] == "auto":
        return "cuda" if nvidia_gpu_visible() else "cpu"
    return measure["device"]


def device_label(measure: dict, device: str) -> str:
    """Name of the measuring device in result paths, fixed when the DAG is built.

    On a cluster whose login node has no GPU, set `measure.device` / `measure.device_label`."""
    return measure.get("device_label") or device.replace(":", "")


def gpu_compute_capabilities() -> list[tuple[str, float]] | None:
    """(name, compute capability) of each GPU as nvidia-smi lists them; None when it cannot say."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    gpus = []
    for line in out.splitlines():
        name, _, cap = line.rpartition(",")
        try:
            gpus.append((name.strip(), float(cap)))
        except ValueError:
            return None
    return gpus or None


def check_device_dtype(measure: dict) -> None:
    """bfloat16 on a GPU without native support (compute capability < 8.0), checked at parse time.

    Only what this machine can tell: the GPU the jobs will use as nvidia-smi reports it. Skipped
    when ``measure.device_label`` is set (jobs run elsewhere, e.g. on a cluster) or the mapping
    from the torch device to an nvidia-smi row is ambiguous; the job checks again before it
    writes anything.
    """
    if measure.get("dtype") != "bfloat16" or measure.get("device_label"):
        return
    device = torch_device(measure)
    if not device.startswith("cuda"):
        return
    gpus = gpu_compute_capabilities()
    if not gpus:
        return
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        try:
            order = [int(x) for x in visible.split(",") if x.strip()]
        except ValueError:
            return  # UUIDs / MIG names: leave it to the job
        gpus = [gpus[i] for i in order if 0 <= i < len(gpus)]
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= len(gpus):
        return
    if len({cap for _, cap in gpus}) > 1 and any(cap >= 8.0 for _, cap in gpus):
        return  # torch may order mixed GPUs differently from nvidia-smi
    name, cap = gpus[index]
    if cap < 8.0:
        raise ConfigError(
            f"measure.dtype: bfloat16 needs a GPU with compute capability >= 8.0, but {device} is {name} "
            f"(compute capability {cap:g}); use float16 or float32 (or auto). If the jobs run on other "
            "machines than this one, set measure.device_label"
        )


# ---------------------------------------------------------------------------------------------- sections


def resolve_analytic(section: dict, table: dict) -> Analytic:
    for i, key in enumerate(section["hardware"]):
        hw_mod.get(table, key, f"analytic.hardware[{i}]")
    models = model_sources(section["models"], "analytic.models")
    model_shapes(models, "analytic.models")  # the paper's accounting (s = kv_len): positions are no limit
    return Analytic(models=models, hardware=list(section["hardware"]), dtype=section["dtype"],
                    attention=section["attention"], candidates=grid(section["candidates"]),
                    batch=grid(section["batch"]), kv_len=grid(section["kv_len"]))


def timing_threads(value) -> int:
    """``measure.threads``: the CPU threads of every measuring job; null = every CPU this process may run on."""
    if value is not None:
        return int(value)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def resolve_measure(section: dict, acceptance: str, basedir: Path = Path(".")) -> Measure:
    models = model_sources(section["models"], "measure.models")
    device = torch_device(section)
    trees = {}
    if models:
        check_grid(section, "measure")
        check_tree_sizes(section["candidates"], "measure.candidates", acceptance, section.get("trees"))
        shapes = model_shapes(models, "measure.models")
        # the sweep's random heads: one per table row, proposing from the whole vocabulary
        trees = resolve_tree_files(section.get("trees"), "measure.trees", basedir, table_heads(acceptance),
                                   min(d.vocab for d in shapes.values()))
        for source in models.values():
            check_weight_files(source, f"measure.models ({source})")
        layers = section.get("layers")
        for name, dims in shapes.items():
            if layers is not None and not 1 <= layers <= dims.layers:
                raise ConfigError(f"measure.layers: {layers} is outside 1..{dims.layers}, the decoder layers "
                                  f"model {name!r} has; use at most {dims.layers} (or null for all)")
        nodes = [t.candidates for t in trees.values()]
        check_positions(section["kv_len"], "measure.kv_len", shapes, max(section["candidates"] + nodes))
        check_device_dtype(section)
    cap = section.get("max_memory_gb")
    return Measure(
        models=models, device=device, device_label=device_label(section, device),
        dtype=auto_dtype(device.split(":")[0]) if section["dtype"] == "auto" else section["dtype"],
        layers=section.get("layers"), candidates=grid(section["candidates"]), batch=grid(section["batch"]),
        kv_len=grid(section["kv_len"]), reps=section["reps"], warmup=section["warmup"],
        acceptance_table=acceptance, max_memory_bytes=None if cap is None else int(cap * 2**30),
        threads=timing_threads(section.get("threads")), trees=trees,
    )


def resolve_microbench(section: dict, measure: dict, acceptance: str, basedir: Path = Path(".")) -> Microbench:
    models = model_sources(section["models"], "microbench.models")
    trees = {}
    if models:
        trees = resolve_tree_files(section.get("trees"), "microbench.trees", basedir, table_heads(acceptance))
        check_grid(section, "microbench")
        model_shapes(models, "microbench.models")  # no weights, no positions: any kv_len is fine
        # trees come from the measure section's acceptance table
        check_tree_sizes(section["candidates"], "microbench.candidates", acceptance, section.get("trees"))
        check_device_dtype(measure)
    return Microbench(models=models, candidates=grid(section["candidates"]), batch=grid(section["batch"]),
                      kv_len=grid(section["kv_len"]), reps=section["reps"], warmup=section["warmup"],
                      attention_backends=parse_backends(section["attention_backends"], "microbench.attention_backends"),
                      trees=trees)


def resolve_ceilings(section: dict, device: str) -> Ceilings:
    """The ceilings keys of the device's kind (a CPU run does not rerun when a cuda_* key changes)."""
    kind = "cpu" if device == "cpu" else "cuda"
    return Ceilings(reps=section["reps"], warmup=section["warmup"], copy_bytes=section[f"{kind}_copy_mib"] * MIB,
                    matmul_n=section[f"{kind}_matmul_n"])


def analytic_section(section: dict, table: dict, basedir: Path, default_acceptance: str, name: str):
    """(models, acceptance table path) of a section that predicts steps for hardware-table GPUs (speedup,
    best_tree): hardware keys known, models resolved, ``max_candidates`` buildable from the table."""
    for i, key in enumerate(section["hardware"]):
        hw_mod.get(table, key, f"{name}.hardware[{i}]")
    models = model_sources(section["models"], f"{name}.models")
    model_shapes(models, f"{name}.models")
    key = f"{name}.acceptance_table" if section.get("acceptance_table") else "measure.acceptance_table"
    path = acceptance_table(section.get("acceptance_table"), basedir, f"{name}.acceptance_table", default_acceptance)
    largest = tree.max_tree_size(tree.load_acceptance_table(path))
    if models and section["max_candidates"] > largest:
        raise ConfigError(f"{name}.max_candidates: {section['max_candidates']} exceeds the largest tree the "
                          f"acceptance table {path} ({key}) can build ({largest} nodes); lower it or use a larger table")
    return models, path


def resolve_speedup(section: dict, table: dict, basedir: Path, default_acceptance: str, measured: list[int]) -> Speedup:
    models, path = analytic_section(section, table, basedir, default_acceptance, "speedup")
    shape = tree.load_acceptance_table(path).shape  # its expected tokens need the table's heads and ranks
    trees = resolve_tree_files(section.get("trees"), "speedup.trees", basedir, *shape) if models else {}
    return Speedup(models=models, hardware=list(section["hardware"]), batch=section["batch"],
                   kv_len=grid(section["kv_len"]), max_candidates=section["max_candidates"], acceptance_table=path,
                   measured_batch=section["batch"] if section["batch"] in measured or not measured else max(measured),
                   trees=trees)


def resolve_paper_overlay(section: dict, basedir: Path) -> PaperOverlay:
    """The paper layer's switches and its read-off table, checked (only read when a switch is on)."""
    if not (section["analytic"] or section["measured"]):
        return PaperOverlay(None, "", "", False, False)
    path = str(config_path(section["table"], basedir, key := "plot.paper_overlay.table"))
    table = load_paper_table(path, f"{key} ({section['table']})")
    return PaperOverlay(path, table.model, table.hardware, section["analytic"], section["measured"])


def resolve_best_tree(section: dict, table: dict, basedir: Path, default_acceptance: str) -> BestTree:
    """``hardware: [all]`` is every entry of the table, so a GPU added there gets its table and panel."""
    names = list(section["hardware"])
    if "all" in names:
        if names != ["all"]:
            raise ConfigError(f"best_tree.hardware: 'all' stands alone (every entry of the hardware table), got {names}")
        names = list(table)
    models, path = analytic_section(dict(section, hardware=names), table, basedir, default_acceptance, "best_tree")
    reference = str(config_path(section["reference_tree"], basedir, "best_tree.reference_tree"))
    try:
        tree.tree_paths_for(reference, tree.load_acceptance_table(path))
    except ConfigError as err:
        raise ConfigError(f"best_tree.reference_tree: {str(err).removeprefix('tree: ')}") from None
    return BestTree(models=models, hardware=list(dict.fromkeys(names)), dtype=section["dtype"],
                    attention=section["attention"], batch=grid(section["batch"]), kv_len=grid(section["kv_len"]),
                    max_candidates=section["max_candidates"], reference_tree=reference, acceptance_table=path)


def resolve(config: dict, basedir: str | Path) -> Settings:
    """Check everything that can be checked before a job runs and return the resolved settings."""
    basedir = Path(basedir)
    table_path = config_path(config["hardware_table"], basedir, "hardware_table")
    table = hw_mod.load_table(table_path, f"hardware_table ({config['hardware_table']})")
    analytic = resolve_analytic(config["analytic"], table)
    measure_cfg = config["measure"]
    # checked even when nothing is measured: the speedup figures default to it
    acceptance = acceptance_table(measure_cfg.get("acceptance_table"), basedir, "measure.acceptance_table",
                                  str(tree.DEFAULT_ACCEPTANCE))
    measure = resolve_measure(measure_cfg, acceptance, basedir)
    demo = resolve_demo(config, measure)
    if demo is not None:  # a measured model like any other, whose files rules make
        measure = replace(measure, models={**measure.models, demo.name: demo.checkpoint})
    return Settings(
        run_name=config["run_name"],
        hardware_table=str(table_path),
        hardware=table,
        analytic=analytic,
        measure=measure,
        microbench=resolve_microbench(config["microbench"], measure_cfg, acceptance, basedir),
        ceilings=resolve_ceilings(config["ceilings"], measure.device),
        speedup=resolve_speedup(config["speedup"], table, basedir, acceptance, measure.batch),
        step=Step(medusa_heads=config["step"]["medusa_heads"]),
        predict=Predict(per_launch_s=config["predict"]["per_launch_us"] * 1e-6),
        best_tree=resolve_best_tree(config["best_tree"], table, basedir, acceptance),
        plot={k: v for k, v in config["plot"].items() if k != "paper_overlay"},
        paper_overlay=resolve_paper_overlay(config["plot"]["paper_overlay"], basedir),
        display_names=display_names(config),
        acceptance=resolve_acceptance(config["acceptance"], basedir, measure, demo),
        demo=demo,
    )
