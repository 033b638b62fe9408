"""Checks of configured files and sweep grids, shared by the settings of every section: files checked to
exist and be readable, model sources resolved to unique names, acceptance tables loaded once to check them.

Imported when the Snakefile is parsed: it reads files only (no torch, no transformers).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..core.errors import ConfigError
from ..core.io import read_yaml
from ..core.paths import configured_path
from ..decoding import tree
from ..models.source import (
    PRESET_DIR,
    ModelDims,
    checkpoint_files,
    model_dims,
    model_name,
    resolve_source,
)


def config_path(value, basedir: Path, key: str) -> Path:
    """A configured file (:func:`~medusa_roofline.core.paths.configured_path`), checked to be a readable regular file."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key}: must be a path to a file, got {value!r}")
    path = configured_path(value, basedir).resolve()
    if not path.exists():
        raise ConfigError(f"{key}: {value!r} does not exist (looked for {path}); give a readable file")
    if not path.is_file():
        raise ConfigError(f"{key}: {path} is not a regular file; give a readable file")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"{key}: {path} is not readable")
    return path


def config_directory(value, basedir: Path, key: str) -> Path:
    """A configured directory (e.g. a tokenizer), checked to exist and be readable."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key}: must be a path to a directory, got {value!r}")
    path = configured_path(value, basedir).resolve()
    if not path.is_dir() or not os.access(path, os.R_OK | os.X_OK):
        raise ConfigError(f"{key}: {value!r} is not a readable directory (looked for {path})")
    return path


def check_grid(section: dict, key: str, fields=("batch", "kv_len")) -> None:
    """An empty grid is an input error (the schema allows empty lists to switch a stage off)."""
    for name in fields:
        if name in section and not section[name]:
            raise ConfigError(f"{key}.{name}: the sweep grid is empty; give at least one positive integer")


def check_positions(kv_lens: list[int], key: str, shapes: dict[str, ModelDims], query_tokens: int) -> None:
    """The longest context plus the step's query tokens must fit every model's positions."""
    section = key.split(".")[0]
    longest = max(kv_lens) + query_tokens
    for name, dims in shapes.items():
        limit = dims.max_positions
        if not limit:
            raise ConfigError(f"{section}.models ({name}): config.json lacks max_position_embeddings, "
                              "needed to check that kv_len + candidates fit the model's positions")
        if query_tokens >= limit:
            raise ConfigError(f"{section}.candidates: {query_tokens} query tokens leave no room for a KV cache in "
                              f"model {name!r}, whose max_position_embeddings is {limit}; allowed candidates <= "
                              f"{limit - 1}")
        if longest > limit:
            raise ConfigError(
                f"{key}: {longest} tokens (kv_len {max(kv_lens)} + {query_tokens} query tokens) exceed model "
                f"{name!r} max_position_embeddings {limit}; allowed kv_len <= {limit - query_tokens}"
            )


def grid(values) -> list[int]:
    """A grid as the jobs run it: sorted, each value once."""
    return sorted(set(values))


def model_config_file(source: str) -> str:
    return str(resolve_source(source) / "config.json")


def model_weight_files(source: str) -> list[str]:
    """A local checkpoint's weight files and shard index ([] for a preset): inputs of the rule that
    loads it, so replacing a weight file reruns it and everything after it."""
    return [str(p) for p in checkpoint_files(source)]


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


def model_shapes(models: dict[str, str], key: str) -> dict[str, ModelDims]:
    return {name: model_dims(source, f"{key} ({source})") for name, source in models.items()}


def acceptance_table(value, basedir: Path, key: str, default: str) -> str:
    """A configured acceptance table (``default`` when unset), checked by loading it; errors name ``key``."""
    path = str(config_path(value, basedir, key)) if value else default
    try:
        tree.load_acceptance_table(path)
    except ConfigError as err:
        raise ConfigError(f"{key}: {str(err).removeprefix('acceptance: ')}") from None
    return path


def display_names(config: dict) -> dict[str, str]:
    presets = read_yaml(PRESET_DIR / "presets.yaml", "model presets")
    names = {k: v["display_name"] for k, v in presets.items()}
    names.update(config.get("display_names", {}))
    return names
