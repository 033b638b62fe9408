"""Model sources: presets and local Hugging Face directories, read offline as config.json.

A model *source* is either a preset name (a directory ``config/models/<name>/`` holding a
Hugging Face ``config.json``) or a path to a local HF Llama-family model directory. Everything
here reads files only (no torch, no transformers), so the Snakefile can check a config at parse
time and the cost model can take a model's shapes from it.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

from ..core.errors import ConfigError
from ..core.paths import CONFIG_DIR

PRESET_DIR = CONFIG_DIR / "models"
LLAMA_FAMILY = {"llama", "mistral", "qwen2"}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


@dataclass(frozen=True)
class ModelDims:
    """The shapes the cost model needs, read off a Llama-family config."""

    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    layers: int
    vocab: int
    max_positions: int

    def to_dict(self) -> dict:
        return asdict(self)


def preset_names() -> list[str]:
    return sorted(p.name for p in PRESET_DIR.iterdir() if (p / "config.json").is_file())


NAME_RE = re.compile(r"[A-Za-z0-9._-]+")
"""A name used in result paths; always matched whole (``fullmatch``: no trailing newline slips through)."""

REQUIRED_FIELDS = ("hidden_size", "num_attention_heads", "intermediate_size", "num_hidden_layers", "vocab_size")


def resolve_source(source: str, key: str = "model") -> Path:
    """Map a preset name or a local directory to the directory holding config.json.

    A local path is resolved (``~`` expanded, symlinks followed) and must be a readable directory
    holding a regular, readable ``config.json``; anything else is a :class:`ConfigError` naming
    ``key`` and the path.
    """
    if not isinstance(source, str) or not source.strip():
        raise ConfigError(f"{key}: a model must be a preset name or a local directory path, got {source!r}")
    if is_preset(source):
        return PRESET_DIR / source
    path = Path(source).expanduser()
    if "/" in source or source.startswith((".", "~")) or path.exists():
        path = path.resolve()
        if not path.exists():
            raise ConfigError(
                f"{key}: local model path {source!r} does not exist ({path}); give an existing Hugging Face "
                f"model directory or a preset ({', '.join(preset_names())})"
            )
        if not path.is_dir():
            raise ConfigError(f"{key}: local model path {source!r} is not a directory; a model source is a preset "
                              "name or a directory holding config.json (and optionally *.safetensors weights)")
        if not os.access(path, os.R_OK | os.X_OK):
            raise ConfigError(f"{key}: local model directory {path} is not readable")
        config = path / "config.json"
        if not config.exists():
            raise ConfigError(f"{key}: local model directory {source!r} has no config.json; a Hugging Face model "
                              "directory needs config.json (and optionally *.safetensors weights)")
        if not config.is_file():
            raise ConfigError(f"{key}: {config} is not a regular file")
        if not os.access(config, os.R_OK):
            raise ConfigError(f"{key}: {config} is not readable")
        if not NAME_RE.fullmatch(path.name):
            raise ConfigError(f"{key}: local model directory name {path.name!r} is used in result paths and may "
                              "only contain letters, digits, '.', '_' and '-'; rename the directory or link it")
        return path
    raise ConfigError(
        f"{key}: unknown model preset {source!r}; presets are {', '.join(preset_names())}, "
        "or give a path to a local Hugging Face Llama-family model directory"
    )


def is_preset(source: str) -> bool:
    """A bare preset name (never a path: ``PRESET_DIR / "/abs/dir"`` would be ``/abs/dir``)."""
    return bool(isinstance(source, str) and NAME_RE.fullmatch(source) and (PRESET_DIR / source / "config.json").is_file())


def model_name(source: str) -> str:
    """Name used in result paths: the preset name, or a local directory's basename."""
    return source if is_preset(source) else Path(source).expanduser().resolve().name


def read_config_json(source: str, key: str = "model") -> dict:
    """The raw config.json of a preset or local directory, checked to be a Llama-family config that
    asks for no custom code (``auto_map`` is refused: remote code never runs here).

    Checked on the raw JSON, not on a transformers config object: ``LlamaConfig`` fills absent
    fields with defaults (hidden_size 4096, ...), which would silently turn a truncated config
    into Llama 7B.
    """
    path = resolve_source(source, key) / "config.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{key}: {path} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{key}: {path} must hold a JSON object (a Hugging Face model config)")
    model_type = raw.get("model_type")
    if model_type not in LLAMA_FAMILY:
        raise ConfigError(
            f"{key}: {path} has model_type {model_type!r}; only Llama-family models "
            f"({', '.join(sorted(LLAMA_FAMILY))}) are supported"
        )
    if raw.get("auto_map"):
        raise ConfigError(
            f"{key}: {path} asks for custom model code (auto_map: {', '.join(sorted(map(str, raw['auto_map'])))}); "
            f"code from a model directory never runs here, and measuring the stock {model_type} class in its "
            f"place would record the wrong model; remove auto_map to measure it as a plain {model_type} model"
        )
    missing = [f for f in REQUIRED_FIELDS if raw.get(f) is None]
    if missing:
        raise ConfigError(f"{key}: {path} lacks required field(s) {', '.join(missing)}; a Llama-family config "
                          f"needs {', '.join(REQUIRED_FIELDS)}")
    for field in (*REQUIRED_FIELDS, "num_key_value_heads", "head_dim", "max_position_embeddings"):
        value = raw.get(field)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{key}: {path}: {field} must be a positive integer, got {value!r}")
    heads = raw["num_attention_heads"]
    kv_heads = raw.get("num_key_value_heads") or heads
    if heads % kv_heads:
        raise ConfigError(f"{key}: {path}: num_attention_heads {heads} is not a multiple of "
                          f"num_key_value_heads {kv_heads}")
    if raw.get("head_dim") is None and raw["hidden_size"] % heads:
        raise ConfigError(f"{key}: {path}: hidden_size {raw['hidden_size']} is not a multiple of "
                          f"num_attention_heads {heads}; give head_dim")
    return raw


def dims_from_config(cfg, key: str = "model") -> ModelDims:
    """ModelDims from a transformers config object or a raw config.json mapping."""
    get = cfg.get if isinstance(cfg, dict) else (lambda f, default=None: getattr(cfg, f, default))
    missing = [f for f in REQUIRED_FIELDS if get(f) is None]
    if missing:
        raise ConfigError(f"{key}: model config lacks required field(s) {', '.join(missing)}")
    heads = get("num_attention_heads")
    kv_heads = get("num_key_value_heads") or heads
    head_dim = get("head_dim") or get("hidden_size") // heads
    return ModelDims(
        hidden=get("hidden_size"),
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate=get("intermediate_size"),
        layers=get("num_hidden_layers"),
        vocab=get("vocab_size"),
        max_positions=get("max_position_embeddings") or 0,
    )


def model_dims(source: str, key: str = "model") -> ModelDims:
    """The shapes of a preset or local model, from its config.json alone (no torch, no transformers)."""
    return dims_from_config(read_config_json(source, key), key)


def weight_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))


def hf_weight_files(directory: Path) -> list[Path]:
    """The files ``from_pretrained`` loads: ``model*.safetensors``, else ``pytorch_model*.bin``.

    Safetensors hold tensors only; ``.bin`` files are unpickled with ``weights_only=True``, which
    refuses arbitrary objects. Other ``.pt``/``.pth``/``.bin`` files (Medusa heads, optimizer or
    trainer state) are never loaded as base-model weights.
    """
    safetensors = sorted(directory.glob("model*.safetensors"))
    if safetensors:
        return safetensors
    return sorted(directory.glob("pytorch_model*.bin"))


def checkpoint_weights(source: str, key: str = "model") -> list[Path]:
    """The weight files a local checkpoint loads from ([] for a preset or a config-only directory)."""
    if is_preset(source):
        return []
    directory = resolve_source(source, key)
    weights = hf_weight_files(directory)
    if not weights:
        other = weight_files(directory)
        if other:
            raise ConfigError(
                f"{key}: {directory} holds {', '.join(p.name for p in other)} but no Hugging Face weights "
                "(model*.safetensors or pytorch_model*.bin); save the model with "
                "save_pretrained(dir, safe_serialization=True), or remove the weight files to use random weights"
            )
        return []
    for path in weights:
        if not path.is_file() or not os.access(path, os.R_OK):
            raise ConfigError(f"{key}: weight file {path} is not a readable regular file")
    return weights


def instantiated_layers(dims: ModelDims, layers: int | None, source: str = "model") -> int:
    """Decoder layers to build: all (``None``) or the first ``layers``, which must exist in the model."""
    if layers is None:
        return dims.layers
    if isinstance(layers, bool) or not isinstance(layers, int) or not 1 <= layers <= dims.layers:
        raise ConfigError(f"layers: {layers!r} is outside 1..{dims.layers} for model {source!r}")
    return layers


SHARD_INDEX = {".safetensors": "model.safetensors.index.json", ".bin": "pytorch_model.bin.index.json"}
SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024  # the safetensors format's own limit


def _safetensors_problem(path: Path, size: int) -> str | None:
    if size < 8:
        return f"it holds {size} bytes, fewer than the 8-byte header length"
    with open(path, "rb") as fh:
        header_len = int.from_bytes(fh.read(8), "little")
        if header_len > min(size - 8, SAFETENSORS_MAX_HEADER):
            return f"its header length says {header_len} bytes but the file holds {size}"
        try:
            header = json.loads(fh.read(header_len))
            end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            return "its header is not valid safetensors JSON"
    if 8 + header_len + end != size:
        return f"its header describes {8 + header_len + end} bytes of tensors but the file holds {size}"
    return None


def weight_file_problem(path: Path) -> str | None:
    """Why a weight file is incomplete (truncated or corrupt), from its header alone; None when it
    looks whole or cannot be told without loading it (a legacy pickle ``.bin``).

    ``.safetensors``: the header's tensor offsets must cover the file exactly. ``.bin`` written by
    ``torch.save`` is a zip archive: its central directory (at the end) must be readable."""
    size = path.stat().st_size
    if path.suffix == ".safetensors":
        return _safetensors_problem(path, size)
    with open(path, "rb") as fh:
        zipped = fh.read(2) == b"PK"
    if zipped and not zipfile.is_zipfile(path):
        return "it starts as a zip archive (torch.save) but has no readable end (central directory)"
    return None


def check_weight_files(source: str, key: str = "model") -> list[Path]:
    """:func:`checkpoint_weights`, each checked by :func:`weight_file_problem` (ConfigError naming it)."""
    weights = checkpoint_weights(source, key)
    for path in weights:
        problem = weight_file_problem(path)
        if problem:
            raise ConfigError(f"{key}: weight file {path} is truncated or corrupt: {problem}; copy or save it again")
    return weights


def checkpoint_files(source: str, key: str = "model") -> list[Path]:
    """Every file a local checkpoint's model is loaded from besides config.json: its weight files and
    the shard index beside them (a workflow input, so replacing one reruns what used it)."""
    weights = checkpoint_weights(source, key)
    if not weights:
        return []
    index = weights[0].parent / SHARD_INDEX[weights[0].suffix]
    return weights + ([index] if index.is_file() else [])
