"""The demo's trained parts: its spec, the base model, the Medusa heads and the held-out prompts.

Training only, nothing timed: the workflow's demo rules (``workflow/rules/demo.smk``) run these as
ordinary jobs beside others, so this module must not reach the measuring code (:mod:`.demo` adds the
acceptance, sweep and speedup steps on top for the one-process CLI demo).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .core.errors import ConfigError
from .core.io import atomic_write_bytes
from .decoding.heads import save_medusa_heads
from .decoding.train_heads import HeadsSpec, train_heads
from .models import synthetic
from .models.load import build_model
from .models.train import BaseSpec, save_base, train_base

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
