"""Prompts for measuring acceptance: a prompt file (JSONL or plain text), or seeded random token ids.

* **JSONL** (``*.jsonl``): one JSON object per line with either ``"input_ids"`` (a list of token ids,
  no tokenizer needed) or ``"prompt"`` / ``"text"`` (a string, encoded with the local tokenizer).
* **Plain text** (any other suffix): one prompt per non-empty line, encoded with the local tokenizer.
* **No file**: ``count`` prompts of ``length`` token ids drawn uniformly from the vocabulary with a
  seeded generator (what a model without a tokenizer can still be measured on).

The tokenizer is read from a local directory only (``local_files_only``), never from a hub. Every
problem is a :class:`ConfigError` naming the file and line, raised before anything is computed.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoTokenizer

from ..core.errors import ConfigError

TEXT_KEYS = ("prompt", "text")


def load_tokenizer(directory, key: str = "tokenizer"):
    """A tokenizer saved with ``save_pretrained`` in a local directory (offline, no remote code)."""
    path = Path(directory).expanduser()
    if not path.is_dir():
        raise ConfigError(f"{key}: tokenizer directory {path} does not exist or is not a directory")
    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"{key}: cannot load a tokenizer from {path}: {exc}") from None


def random_prompts(vocab: int, count: int, length: int, seed: int = 0) -> list[list[int]]:
    """``count`` prompts of ``length`` token ids, uniform over ``0..vocab-1``, from a seeded generator."""
    if count < 1 or length < 1:
        raise ConfigError(f"prompts: random prompts need count >= 1 and length >= 1, got {count} and {length}")
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (count, length), generator=gen).tolist()


def _encode(tokenizer, text: str, where: str) -> list[int]:
    if tokenizer is None:
        raise ConfigError(f"prompts: {where} is text, which needs a tokenizer; configure a local tokenizer "
                          "directory, or give token ids (JSONL lines with \"input_ids\")")
    ids = tokenizer(text).input_ids
    if not ids:
        raise ConfigError(f"prompts: {where} encodes to no tokens")
    return list(ids)


def _jsonl_prompt(line: str, where: str, tokenizer) -> list[int]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"prompts: {where} is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ConfigError(f"prompts: {where} must be a JSON object with \"input_ids\" or \"prompt\"/\"text\"")
    if "input_ids" in obj:
        ids = obj["input_ids"]
        if (not isinstance(ids, list) or not ids
                or any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in ids)):
            raise ConfigError(f"prompts: {where}: \"input_ids\" must be a non-empty list of token ids >= 0")
        return ids
    for k in TEXT_KEYS:
        if isinstance(obj.get(k), str) and obj[k]:
            return _encode(tokenizer, obj[k], where)
    raise ConfigError(f"prompts: {where} has neither \"input_ids\" nor a non-empty \"prompt\"/\"text\" string")


def read_prompt_file(path, tokenizer=None, vocab: int | None = None) -> list[list[int]]:
    """Token ids of every prompt in ``path`` (JSONL or plain text, see the module docstring).

    ``vocab``: when given, every id must be below it (an id the model cannot embed is an input error,
    not an index error deep inside the model)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"prompts: prompt file {path} does not exist or is not a regular file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"prompts: cannot read prompt file {path} as UTF-8 text: {exc}") from None
    jsonl = path.suffix.lower() == ".jsonl"
    prompts = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        ids = _jsonl_prompt(line, where, tokenizer) if jsonl else _encode(tokenizer, line, where)
        if vocab is not None and max(ids) >= vocab:
            raise ConfigError(f"prompts: {where} has token id {max(ids)}, beyond the model's vocabulary of {vocab}")
        prompts.append(ids)
    if not prompts:
        raise ConfigError(f"prompts: prompt file {path} holds no prompts")
    return prompts
