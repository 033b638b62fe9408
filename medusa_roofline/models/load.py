"""Build or load a Llama-family model with transformers, and record what a measurement ran on.

Presets get seeded random weights, made on the device they run on (:mod:`.init`); a local checkpoint
loads its real weights from safetensors (or ``pytorch_model*.bin`` with ``weights_only=True``).
Nothing reaches a hub and remote code never runs.
"""

from __future__ import annotations

import re

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from ..core.devices import resolve_dtype
from ..core.dtypes import canonical_dtype
from ..core.errors import ConfigError
from ..core.io import sha256_file
from .init import seeded_fill_
from .source import (
    LLAMA_FAMILY,
    check_weight_files,
    checkpoint_weights,
    dims_from_config,
    instantiated_layers,
    is_preset,
    model_name,
    read_config_json,
    resolve_source,
)


def load_hf_config(source: str, key: str = "model"):
    """AutoConfig from a preset or local directory (offline, no remote code), checked to be Llama-family."""
    read_config_json(source, key)
    directory = resolve_source(source, key)
    try:
        cfg = AutoConfig.from_pretrained(directory, trust_remote_code=False, local_files_only=True)
    except (ValueError, OSError) as exc:
        raise ConfigError(f"{key}: cannot read {directory / 'config.json'}: {exc}") from exc
    if getattr(cfg, "model_type", None) not in LLAMA_FAMILY:
        raise ConfigError(
            f"{key}: {directory / 'config.json'} has model_type {getattr(cfg, 'model_type', None)!r}; "
            f"only Llama-family models ({', '.join(sorted(LLAMA_FAMILY))}) are supported"
        )
    return cfg


def _load_error(exc: Exception, directory) -> Exception:
    """What a failed ``from_pretrained`` means, as a ConfigError (or ``exc`` itself when it is not a file problem)."""
    name = type(exc).__name__
    first = (re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines() or [""])[0]
    corrupt = name in ("SafetensorError", "HeaderTooLarge", "EOFError") or "PytorchStreamReader" in first
    if corrupt:
        return ConfigError(f"model: cannot load the checkpoint in {directory}: a weight file is truncated or "
                           f"corrupt ({name}: {first[:200]}); copy or save it again")
    if name == "UnpicklingError":
        return ConfigError(
            f"model: refusing to load the checkpoint in {directory} ({name}: {first[:200]}); "
            "weights are read only from safetensors or with torch.load(weights_only=True), never by "
            "unpickling arbitrary objects; save it with save_pretrained(dir, safe_serialization=True)"
        )
    mismatch = isinstance(exc, RuntimeError) and "mismatch" in str(exc)
    if not (mismatch or isinstance(exc, (OSError, ValueError))):
        return exc
    hint = "the weights do not match its config.json" if mismatch else "is it a complete HF checkpoint?"
    return ConfigError(f"model: cannot load the checkpoint in {directory} ({name}: {first[:300]}); {hint}")


def build_model(source: str, dtype, device="cpu", layers: int | None = None, seed: int = 0,
                attn_implementation: str = "eager"):
    """A LlamaForCausalLM on ``device``: from_pretrained for a checkpoint, random weights otherwise.

    Random weights are built on the meta device, allocated on ``device`` and filled there with a
    seeded fill (:mod:`.init`): no parameter is created or initialised on the host when ``device``
    is a GPU. ``layers`` instantiates only the first N decoder layers (per-layer ops are identical,
    so timing Llama 33B on one GPU needs only a couple of full-width layers).
    """
    cfg = load_hf_config(source)
    dims = dims_from_config(cfg)
    cfg.num_hidden_layers = instantiated_layers(dims, layers, source)
    cfg._attn_implementation = attn_implementation
    directory = resolve_source(source)
    weights = check_weight_files(source)
    if weights:
        safetensors = weights[0].suffix == ".safetensors"
        try:
            model, info = AutoModelForCausalLM.from_pretrained(
                directory, config=cfg, dtype=dtype, trust_remote_code=False, local_files_only=True,
                use_safetensors=safetensors, weights_only=True, output_loading_info=True,
            )
        except (MemoryError, torch.OutOfMemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - pickle/safetensors/size errors have no common base
            err = _load_error(exc, directory)
            if err is exc:
                raise
            raise err from exc
        # Unexpected keys are fine (layers beyond ``layers`` are dropped); missing or mismatched
        # ones would silently be random: the checkpoint does not match its config.json.
        bad = sorted(info.get("missing_keys") or []) + [str(k) for k in info.get("mismatched_keys") or []]
        if bad:
            shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            raise ConfigError(f"model: the checkpoint in {directory} does not match its config.json: "
                              f"missing or mis-shaped weights {shown}")
        return model.to(device).eval()
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype, trust_remote_code=False)
    model = model.to_empty(device=device)
    std = getattr(cfg, "initializer_range", None) or 0.02
    return seeded_fill_(model, seed, std).eval()


def model_spec(source: str, dtype: str, device: str, layers: int | None = None) -> dict:
    """What a measurement ran on: architecture, size, instantiated layers, and file hashes.

    A checkpoint is loaded for real (proving it loads); a preset is built on the meta device,
    which counts parameters exactly without allocating them.
    """
    dtype = canonical_dtype(dtype)
    if str(device).startswith("cuda") and torch.cuda.is_available():
        resolve_dtype(dtype, device)  # bfloat16 on a GPU without it stops here, before spec.json exists
    cfg = load_hf_config(source)
    dims = dims_from_config(cfg)
    n_layers = instantiated_layers(dims, layers, source)
    directory = resolve_source(source)
    weights = checkpoint_weights(source)
    torch_dtype = getattr(torch, dtype)
    if weights:
        model = build_model(source, torch_dtype, "cpu", n_layers)
    else:
        model = build_model(source, torch_dtype, "meta", n_layers)
    return {
        "model": model_name(source),
        "source": "preset" if is_preset(source) else str(directory),
        "architecture": type(model).__name__,  # the class that ran, whatever config.json names
        "config_architectures": list(getattr(cfg, "architectures", None) or []),
        "model_type": cfg.model_type,
        "dims": dims.to_dict(),
        "layers_instantiated": n_layers,
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights": "checkpoint" if weights else "random (seeded, from config)",
        "dtype": dtype,
        "device": device,
        "sha256": {p.name: sha256_file(p) for p in [directory / "config.json", *weights]},
    }
