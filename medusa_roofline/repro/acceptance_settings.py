"""Settings of acceptance measured from local models (``acceptance``) and of the demo (``demo``).

The demo's checkpoint and heads are made by rules of the same run, so nothing of them is looked for
on disk here; its sweep grid is checked against the shapes its config section gives. Every other
configured file must exist and be readable when the Snakefile is parsed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..core.errors import ConfigError
from ..decoding import tree
from ..models.source import ModelDims
from .checks import check_grid, check_positions, config_directory, config_path, grid


@dataclass(frozen=True)
class Acceptance:
    """Acceptance measured from local models (rule acceptance): per measured model, its heads file and
    optional prompt file / tokenizer (None: random prompts / the model directory's tokenizer)."""

    models: dict[str, dict[str, str | None]]  # measured model name -> {heads, prompts, tokenizer}
    random_prompts: int
    prompt_len: int
    max_new_tokens: int
    top_k: int
    candidates: list[int]  # tree sizes real generation runs with
    seed: int
    threads: int

    def table(self, model: str) -> str | None:
        """The measured table that builds ``model``'s trees (None: the model has no heads configured)."""
        return f"results/acceptance/{model}/acceptance.csv" if model in self.models else None

    def generation(self, model: str) -> str | None:
        return f"results/acceptance/{model}/generation.csv" if model in self.models else None


@dataclass(frozen=True)
class Demo:
    """The self-contained demo: a checkpoint and heads the demo rules train under results/demo/."""

    name: str
    checkpoint: str  # directory of the trained base model (made by rule demo_base)
    dims: ModelDims  # its shapes, from the demo section (the checkpoint does not exist at parse time)
    files: dict[str, str]  # heads, prompts, base_log, heads_log
    training: dict  # the DemoSpec keys the training rules take


DEMO_DIR = "results/demo"
DEMO_VOCAB = 31  # len(models.synthetic.SYMBOLS); that module imports tokenizers, too heavy for parse time
DEMO_TRAINING_KEYS = ("seed", "words", "base", "heads", "train_prompts", "prompt_chars", "eval_prompts", "threads")


def resolve_demo(config: dict, measure) -> Demo | None:
    """The demo section (None when disabled), its sweep grid (``measure``: the resolved measure settings)
    checked against the model it will train: the shapes are known from the config alone."""
    section = config.get("demo") or {}
    if not section.get("enabled"):
        return None
    name, base, heads = section["name"], section["base"], section["heads"]
    if name in measure.models:
        raise ConfigError(f"demo.name: {name!r} is already a measured model name (measure.models); choose another")
    if base["hidden"] % base["heads"] or base["heads"] % base["kv_heads"]:
        raise ConfigError(f"demo.base: hidden {base['hidden']} must be a multiple of heads {base['heads']}, and "
                          f"heads a multiple of kv_heads {base['kv_heads']}")
    check_grid(config["measure"], "measure")
    sizes = list(measure.candidates) + list(config["acceptance"]["candidates"] or [])
    if not measure.candidates:
        raise ConfigError("measure.candidates: the demo's sweep grid is empty; give at least one tree size >= 2")
    largest = tree.max_tree_size([[0.0] * config["acceptance"]["top_k"]] * heads["num_heads"])
    too_big = sorted({n for n in sizes if n > largest})
    if too_big:
        raise ConfigError(f"measure.candidates / acceptance.candidates: {too_big} exceed the largest tree the demo's "
                          f"{heads['num_heads']} heads x top-{config['acceptance']['top_k']} table can build "
                          f"({largest} nodes)")
    dims = ModelDims(hidden=base["hidden"], heads=base["heads"], kv_heads=base["kv_heads"],
                     head_dim=base["hidden"] // base["heads"], intermediate=base["intermediate"],
                     layers=base["layers"], vocab=DEMO_VOCAB, max_positions=base["max_positions"])
    check_positions(measure.kv_len, "measure.kv_len", {name: dims}, max(measure.candidates))
    if measure.layers is not None and not 1 <= measure.layers <= dims.layers:
        raise ConfigError(f"measure.layers: {measure.layers} is outside 1..{dims.layers}, the decoder layers the demo "
                          f"model {name!r} has (demo.base.layers); use at most {dims.layers} (or null for all)")
    need = max(section["prompt_chars"]) + 1 + config["acceptance"]["max_new_tokens"] + 2 * heads["num_heads"] + 1
    if need > base["max_positions"]:
        raise ConfigError(f"demo.base.max_positions: {base['max_positions']} is below the {need} positions a "
                          "held-out prompt + acceptance.max_new_tokens + the tree depth need")
    files = {"heads": f"{DEMO_DIR}/medusa_lm_head.safetensors", "prompts": f"{DEMO_DIR}/prompts.txt",
             "base_log": f"{DEMO_DIR}/train_base.json", "heads_log": f"{DEMO_DIR}/train_heads.json"}
    return Demo(name=name, checkpoint=f"{DEMO_DIR}/{name}", dims=dims, files=files,
                training={k: section[k] for k in DEMO_TRAINING_KEYS})


def resolve_acceptance(section: dict, basedir: Path, measure, demo: Demo | None) -> Acceptance:
    """``acceptance.models`` (plus the demo's entry) checked: each a measured model, every configured file
    existing and readable now, so a typo stops the run before any job starts."""
    models: dict[str, dict[str, str | None]] = {}
    for name, entry in section["models"].items():
        key = f"acceptance.models.{name}"
        if demo is not None and name == demo.name:
            raise ConfigError(f"{key}: the demo model's heads and prompts come from the demo rules; remove this entry")
        if name not in measure.models:
            raise ConfigError(f"{key}: {name!r} is not a measured model; measured models are "
                              f"{', '.join(measure.models) or 'none (measure.models is empty)'}")
        models[name] = {"heads": str(config_path(entry["heads"], basedir, f"{key}.heads")),
                        "prompts": None if entry.get("prompts") is None
                        else str(config_path(entry["prompts"], basedir, f"{key}.prompts")),
                        "tokenizer": None if entry.get("tokenizer") is None
                        else str(config_directory(entry["tokenizer"], basedir, f"{key}.tokenizer"))}
    if demo is not None:
        models[demo.name] = {"heads": demo.files["heads"], "prompts": demo.files["prompts"], "tokenizer": None}
    return Acceptance(models=models, random_prompts=section["random_prompts"], prompt_len=section["prompt_len"],
                      max_new_tokens=section["max_new_tokens"], top_k=section["top_k"],
                      candidates=grid(section["candidates"] or measure.candidates), seed=section["seed"],
                      threads=section["threads"])
