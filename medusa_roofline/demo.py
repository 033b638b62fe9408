"""A self-contained demonstration that Medusa accepts tokens: everything trained and measured locally.

1. **Base model.** A tiny Llama-style model trained on a synthetic language
   (:mod:`.models.synthetic`, :mod:`.models.train`), saved with ``save_pretrained`` (safetensors +
   config.json + a character tokenizer).
2. **Heads.** Medusa-1 heads trained on the frozen base model's own greedy continuations
   (:mod:`.decoding.train_heads`), saved as ``medusa_lm_head.safetensors`` in the reference layout.
3. **Acceptance.** Per-head, per-rank acceptance measured on held-out plain-text prompts, and the
   tokens per step real Medusa generation reaches with trees built from that table
   (:mod:`.decoding.acceptance`).
4. **Sweep and speedup.** The measured sweep (:mod:`.measure.sweep`) on the trained checkpoint with
   trees from the measured table, and the measured speedup with both acceptance sources (measured
   table, real generation) (:mod:`.results.speedup`).

Seeded and deterministic (on one machine and thread count); nothing is downloaded. Every stage runs
with ``threads`` torch threads (default 1): a model this small gains nothing from a second thread,
and on a shared 2-core machine two spinning OpenMP threads per process make it many times slower. The Snakemake
rules of ``workflow/rules/demo.smk`` run steps 1-3 (the workflow's own sweep and figures do 4);
``python -m medusa_roofline demo --out DIR`` runs all four in one process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .core.errors import ConfigError
from .core.io import atomic_write_bytes, write_csv, write_json
from .decoding import acceptance
from .decoding.heads import save_medusa_heads
from .decoding.train_heads import HeadsSpec, train_heads
from .measure.sweep import run_sweep
from .models import synthetic
from .models.load import build_model
from .models.train import BaseSpec, save_base, train_base
from .results.speedup import MEASURED_TABLE, measured_speedup

HEADS_FILE = "medusa_lm_head.safetensors"


@dataclass(frozen=True)
class DemoSpec:
    """Every knob of the demo (defaults: the documented run, sized for a 2-core CPU)."""

    seed: int = 0
    words: int = 24
    base: BaseSpec = field(default_factory=BaseSpec)
    heads: HeadsSpec = field(default_factory=HeadsSpec)
    train_prompts: int = 128
    prompt_chars: tuple[int, ...] = (12, 16, 20)
    eval_prompts: int = 30
    new_tokens: int = 64
    top_k: int = 10
    candidates: tuple[int, ...] = (4, 16, 64)
    tree: int = 16
    sweep_batch: tuple[int, ...] = (1,)
    sweep_kv_len: tuple[int, ...] = (64, 256)
    reps: int = 10
    warmup: int = 3
    threads: int = 1

    @classmethod
    def from_dict(cls, values: dict | None, key: str = "demo") -> DemoSpec:
        """A spec from a (partial) mapping, e.g. the workflow config's ``demo`` section."""
        values = dict(values or {})
        nested = {"base": BaseSpec, "heads": HeadsSpec}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{key}: unknown key(s) {', '.join(unknown)}; known are {', '.join(sorted(known))}")
        for name, kind in nested.items():
            sub = values.get(name) or {}
            bad = sorted(set(sub) - {f.name for f in dataclasses.fields(kind)})
            if bad:
                raise ConfigError(f"{key}.{name}: unknown key(s) {', '.join(bad)}")
            values[name] = kind(**{**sub, "seed": values.get("seed", 0)})
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        spec = cls(**values)
        if spec.tree not in spec.candidates:
            raise ConfigError(f"{key}.tree: {spec.tree} must be one of {key}.candidates {list(spec.candidates)}")
        return spec

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@contextlib.contextmanager
def torch_threads(n: int):
    """Run the block with ``n`` intra-op torch threads, then restore the previous count."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def language(spec: DemoSpec) -> synthetic.Language:
    return synthetic.make_language(spec.seed, spec.words)


def build_base(spec: DemoSpec, model_dir) -> dict:
    """Train and save the base model (with its tokenizer); returns what the training did."""
    t0 = time.perf_counter()
    with torch_threads(spec.threads):
        model, losses = train_base(language(spec), spec.base)
    save_base(model, model_dir, synthetic.char_tokenizer())
    return {"base": dataclasses.asdict(spec.base), "loss_first": losses[0], "loss_last": losses[-1],
            "parameters": sum(p.numel() for p in model.parameters()), "seconds": time.perf_counter() - t0}


def build_heads(spec: DemoSpec, model_dir, heads_path) -> dict:
    """Train Medusa heads on the saved base model's greedy continuations and save them."""
    t0 = time.perf_counter()
    model = build_model(str(model_dir), torch.float32)
    rng = np.random.default_rng(spec.seed + 2)
    length = max(spec.prompt_chars) + 1
    prompts = torch.from_numpy(synthetic.sample_batch(language(spec), rng, spec.train_prompts, length))
    with torch_threads(spec.threads):
        heads, losses = train_heads(model, prompts, spec.heads)
    save_medusa_heads(heads, heads_path)
    return {"heads": dataclasses.asdict(spec.heads), "loss_first": losses[0], "loss_last": losses[-1],
            "seconds": time.perf_counter() - t0}


def eval_prompts(spec: DemoSpec) -> list[str]:
    """Held-out plain-text prompts (another seed than training), lengths cycling through ``prompt_chars``."""
    rng = np.random.default_rng(spec.seed + 3)
    lang = language(spec)
    return [synthetic.sample_text(lang, rng, spec.prompt_chars[i % len(spec.prompt_chars)])
            for i in range(spec.eval_prompts)]


def write_prompts(spec: DemoSpec, path) -> Path:
    atomic_write_bytes(path, "".join(p + "\n" for p in eval_prompts(spec)).encode())
    return Path(path)


def measure(spec: DemoSpec, model_dir, heads_path, prompts_path) -> acceptance.AcceptanceResult:
    """Acceptance table and real tokens per step of the demo's model, heads and prompt file."""
    with torch_threads(spec.threads):
        return acceptance.acceptance_from_files(
            str(model_dir), heads_path, prompts_path, seed=spec.seed, max_new_tokens=spec.new_tokens,
            top_k=spec.top_k, candidates=spec.candidates)


def sweep(spec: DemoSpec, model_dir, table_path, progress: bool = False) -> pd.DataFrame:
    """The measured sweep (ar and every tree size) of the demo checkpoint, trees from the measured table."""
    modes = ["ar"] + [f"medusa-{c}" for c in spec.candidates]
    with torch_threads(spec.threads):
        return pd.concat([run_sweep(str(model_dir), mode, list(spec.sweep_batch), list(spec.sweep_kv_len), "float32",
                                    "cpu", reps=spec.reps, warmup=spec.warmup, acceptance_table=str(table_path),
                                    seed=spec.seed, progress=progress) for mode in modes], ignore_index=True)


def run_demo(out, spec: DemoSpec = DemoSpec(), say=print) -> dict:
    """The whole demo into ``out``: model/, heads, prompts, acceptance, generation, measured, speedup."""
    out = Path(out)
    paths = {name: out / name for name in ("model", HEADS_FILE, "prompts.txt", "acceptance.csv",
                                           "generation.csv", "acceptance.json", "measured.csv", "speedup.csv")}
    t0 = time.perf_counter()
    summary = {"spec": spec.to_dict(), "stages": {}}
    say(f"training the base model ({spec.base.layers} layers, hidden {spec.base.hidden}, {spec.base.steps} steps) ...")
    summary["stages"]["base"] = build_base(spec, paths["model"])
    say(f"training {spec.heads.num_heads} Medusa heads on the base model's greedy continuations ...")
    summary["stages"]["heads"] = build_heads(spec, paths["model"], paths[HEADS_FILE])
    write_prompts(spec, paths["prompts.txt"])
    say(f"measuring acceptance on {spec.eval_prompts} held-out prompts ...")
    t = time.perf_counter()
    result = measure(spec, paths["model"], paths[HEADS_FILE], paths["prompts.txt"])
    acceptance.write_result(result, paths["acceptance.csv"], paths["generation.csv"], paths["acceptance.json"])
    summary["stages"]["acceptance"] = {"seconds": time.perf_counter() - t}
    say(f"timing decode steps (ar, medusa-{'/'.join(map(str, spec.candidates))}) ...")
    t = time.perf_counter()
    measured = sweep(spec, paths["model"], paths["acceptance.csv"])
    write_csv(measured, paths["measured.csv"])
    speedup = measured_speedup(measured, result.table.pivot(index="head", columns="rank", values="accuracy")
                               .to_numpy(), acceptance=MEASURED_TABLE, generation=result.generation)
    write_csv(speedup, paths["speedup.csv"])
    summary["stages"]["sweep"] = {"seconds": time.perf_counter() - t}
    summary["seconds"] = time.perf_counter() - t0
    tree = result.generation.set_index("candidates").loc[spec.tree]
    summary["default_tree"] = {"candidates": spec.tree, "tokens_per_step": float(tree["tokens_per_step"]),
                               "expected_tokens_per_step": float(tree["expected_tokens_per_step"]),
                               "identical_to_greedy": bool(tree["identical_to_greedy"])}
    summary["files"] = {k: str(v) for k, v in paths.items()}
    write_json(summary, out / "summary.json")
    return {"summary": summary, "table": result.table, "generation": result.generation, "speedup": speedup}
