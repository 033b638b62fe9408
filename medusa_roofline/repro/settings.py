"""Checks and resolution of the workflow config beyond its JSON schema.

The schema catches types and ranges; this catches what needs the files behind the config
(unknown presets, hardware keys, context lengths past a model's positions) so a bad config
stops with one clear message before any job runs or any output is written.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from ..analytic import hardware as hw_mod
from ..core.errors import ConfigError
from ..core.io import read_yaml
from ..decoding import tree
from ..models.source import (
    PRESET_DIR,
    check_weight_files,
    checkpoint_files,
    model_dims,
    model_name,
    resolve_source,
)


def display_names(config: dict) -> dict[str, str]:
    presets = read_yaml(PRESET_DIR / "presets.yaml", "model presets")
    names = {k: v["display_name"] for k, v in presets.items()}
    names.update(config.get("display_names", {}))
    return names


def model_sources(sources: list[str], key: str) -> dict[str, str]:
    """Result name -> source, checking each source resolves and that names are unique."""
    out: dict[str, str] = {}
    for i, source in enumerate(sources):
        resolve_source(source, f"{key}[{i}]")
        name = model_name(source)
        if name in out and out[name] != source:
            raise ConfigError(f"{key}[{i}]: model name {name!r} is used by two sources ({out[name]!r}, {source!r})")
        out[name] = source
    return out


def model_config_file(source: str) -> str:
    return str(resolve_source(source) / "config.json")


def model_weight_files(source: str) -> list[str]:
    """A local checkpoint's weight files and shard index ([] for a preset): inputs of the rule that
    loads it, so replacing a weight file reruns it and everything after it."""
    return [str(p) for p in checkpoint_files(source)]


def config_path(value, basedir: Path, key: str, kind: str = "file") -> Path:
    """A path from the config, resolved and checked: an existing, readable regular file (or directory).

    Relative paths are taken from the working directory when they exist there, else from the
    repository (``basedir``), as Snakemake resolves ``configfile:``.
    """
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key}: must be a path to a {kind}, got {value!r}")
    path = Path(value).expanduser()
    if not path.is_absolute() and not path.exists():
        path = Path(basedir) / path
    path = path.resolve()
    if not path.exists():
        raise ConfigError(f"{key}: {value!r} does not exist (looked for {path}); give a readable {kind}")
    if kind == "file" and not path.is_file():
        raise ConfigError(f"{key}: {path} is not a regular file; give a readable file")
    if kind == "directory" and not path.is_dir():
        raise ConfigError(f"{key}: {path} is not a directory")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"{key}: {path} is not readable")
    return path


def check_grid(section: dict, key: str, max_positions: dict[str, int], extra_tokens: int = 0) -> None:
    """Empty grids and context lengths beyond what a model can position are input errors."""
    for field in ("batch", "kv_len"):
        if field in section and not section[field]:
            raise ConfigError(f"{key}.{field}: the sweep grid is empty; give at least one positive integer")
        bad = [v for v in section.get(field, []) if isinstance(v, bool) or not isinstance(v, int) or v < 1]
        if bad:
            raise ConfigError(f"{key}.{field}: {bad} are not positive integers; allowed are integers >= 1")
    longest = max(section.get("kv_len", [0])) + extra_tokens
    for name, limit in max_positions.items():
        if limit and extra_tokens >= limit:
            raise ConfigError(
                f"{key}.candidates: {extra_tokens} query tokens leave no room for a KV cache in model {name!r}, "
                f"whose max_position_embeddings is {limit}; allowed candidates <= {limit - 1}"
            )
        if limit and longest > limit:
            raise ConfigError(
                f"{key}.kv_len: {longest} tokens (kv_len {max(section['kv_len'])} + {extra_tokens} query tokens) "
                f"exceed model {name!r} max_position_embeddings {limit}; allowed kv_len <= {limit - extra_tokens}"
            )


def check_candidates(section: dict, key: str, table_path: str) -> None:
    """Tree sizes must be >= 2 and buildable from the acceptance table (``table_path`` None: sizes only)."""
    candidates = section.get("candidates", [])
    if not candidates:
        raise ConfigError(f"{key}.candidates: the sweep grid is empty; give at least one tree size >= 2")
    small = [n for n in candidates if isinstance(n, bool) or not isinstance(n, int) or n < 2]
    if small:
        raise ConfigError(f"{key}.candidates: {small} are not tree sizes; allowed are integers >= 2 "
                          "(query tokens per step, root included)")
    if table_path is None:
        return
    table = load_acceptance(table_path)
    largest = tree.max_tree_size(table)
    too_big = [n for n in candidates if n > largest]
    if too_big:
        raise ConfigError(f"{key}.candidates: {too_big} exceed the largest tree the acceptance table "
                          f"{table_path} can build ({largest} nodes); add ranks/heads to the table or lower candidates")


def nvidia_gpu_visible() -> bool:
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())


def torch_device(measure: dict) -> str:
    """The torch device the measuring jobs use; `auto` means cuda when a GPU is visible."""
    if measure["device"] == "auto":
        return "cuda" if nvidia_gpu_visible() else "cpu"
    return measure["device"]


def device_label(measure: dict) -> str:
    """Name of the measuring device in result paths, fixed when the DAG is built.

    `auto` is resolved without importing torch: a visible NVIDIA driver means cuda. On a
    cluster whose login node has no GPU, set `measure.device` / `measure.device_label`.
    """
    if measure.get("device_label"):
        return measure["device_label"]
    return torch_device(measure).replace(":", "")


def acceptance_table_path(measure: dict, basedir: Path) -> str:
    """The acceptance table the trees come from, as a path (the default table when unset)."""
    path = measure.get("acceptance_table")
    if not path:
        return str(Path(basedir) / "config" / "acceptance" / "default.csv")
    path = Path(path).expanduser()
    return str(path if path.is_absolute() or path.exists() else Path(basedir) / path)


def checked_acceptance_table(measure: dict, basedir: Path) -> str:
    """:func:`acceptance_table_path`, checked to be a readable regular file."""
    if not measure.get("acceptance_table"):
        return acceptance_table_path(measure, basedir)
    return str(config_path(measure["acceptance_table"], basedir, "measure.acceptance_table"))


def load_acceptance(path: str, key: str = "measure.acceptance_table"):
    """The acceptance table at ``path``; its errors name the config key and the file."""
    try:
        return tree.load_acceptance_table(path)
    except ConfigError as err:
        raise ConfigError(f"{key}: {str(err).removeprefix('acceptance: ')}") from None


def check_speedup_table(config: dict, basedir: Path) -> None:
    """The analytic speedup's acceptance table, before any job: ``speedup.acceptance_table`` when set
    (even without speedup models, as for the measure table), else the measure table it defaults to;
    with speedup models, its largest tree must reach ``speedup.max_candidates``."""
    speedup = config["speedup"]
    key = "speedup.acceptance_table" if speedup.get("acceptance_table") else "measure.acceptance_table"
    if speedup.get("acceptance_table"):
        path = str(config_path(speedup["acceptance_table"], basedir, key))
    elif speedup["models"]:
        path = checked_acceptance_table(config["measure"], basedir)
    else:
        return
    largest = tree.max_tree_size(load_acceptance(path, key))
    if speedup["models"] and speedup["max_candidates"] > largest:
        raise ConfigError(f"speedup.max_candidates: {speedup['max_candidates']} exceeds the largest tree the "
                          f"acceptance table {path} ({key}) can build ({largest} nodes); lower it or use a larger table")


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


def measure_dtype(measure: dict) -> str:
    """The dtype name a spec records; `auto` follows the device as the sweep does."""
    if measure["dtype"] != "auto":
        return measure["dtype"]
    return "float32" if torch_device(measure) == "cpu" else "float16"


def check_measure(measure: dict, basedir: Path) -> dict[str, str]:
    """The measured sweep's models and grid: everything that can be checked before a job runs."""
    models = model_sources(measure["models"], "measure.models")
    if not models:
        return models
    check_grid(measure, "measure", {}, 0)
    check_candidates(measure, "measure", checked_acceptance_table(measure, basedir))
    for name, source in models.items():
        dims = model_dims(source, f"measure.models ({source})")
        if not dims.max_positions:
            raise ConfigError(f"measure.models ({source}): config.json lacks max_position_embeddings, needed to "
                              "check that kv_len + candidates fit the model's positions")
        check_weight_files(source, f"measure.models ({source})")
        layers = measure.get("layers")
        if layers is not None and not 1 <= layers <= dims.layers:
            raise ConfigError(f"measure.layers: {layers} is outside 1..{dims.layers}, the decoder layers "
                              f"model {name!r} has; use at most {dims.layers} (or null for all)")
        check_grid(measure, "measure", {name: dims.max_positions}, max(measure["candidates"]))
    return models


def check_microbench(micro: dict, measure: dict, basedir: Path) -> dict[str, str]:
    """The micro-benchmark's models and grid (no weights, no positions: any kv_len is fine)."""
    models = model_sources(micro["models"], "microbench.models")
    if models:
        check_grid(micro, "microbench", {}, 0)
        check_candidates(micro, "microbench", None)
        for source in models.values():
            model_dims(source, f"microbench.models ({source})")
        # trees come from the measure section's acceptance table (sweep.smk: ACCEPTANCE_TABLE)
        check_candidates(micro, "microbench", checked_acceptance_table(measure, basedir))
    return models


def resolve(config: dict, basedir: str | Path) -> dict:
    """Validate cross-file facts and return what the rules need, as plain values."""
    basedir = Path(basedir)
    table_path = config_path(config["hardware_table"], basedir, "hardware_table")
    table = hw_mod.load_table(table_path, f"hardware_table ({config['hardware_table']})")
    analytic = config["analytic"]
    for i, key in enumerate(analytic["hardware"]):
        hw_mod.get(table, key, f"analytic.hardware[{i}]")
    models = model_sources(analytic["models"], "analytic.models")
    # The paper's accounting (s = kv_len) is analytic only: positions are not a limit there.
    for name, source in models.items():
        model_dims(source, f"analytic.models ({source})")
    check_grid(analytic, "analytic", {}, 0)
    measure_models = check_measure(config["measure"], basedir)
    microbench_models = check_microbench(config["microbench"], config["measure"], basedir)
    if config["measure"].get("acceptance_table") and not (measure_models or microbench_models):
        # still a file the config names (the speedup figures default to it): check it too
        load_acceptance(checked_acceptance_table(config["measure"], basedir))
    if measure_models or microbench_models:
        check_device_dtype(config["measure"])
    check_speedup_table(config, basedir)
    return {
        "hardware_table": table,
        "analytic_models": models,
        "measure_models": measure_models,
        "microbench_models": microbench_models,
        "device": device_label(config["measure"]),
        "torch_device": torch_device(config["measure"]),
        "measure_dtype": measure_dtype(config["measure"]),
        "acceptance_table": acceptance_table_path(config["measure"], basedir),
        "display_names": display_names(config),
    }
