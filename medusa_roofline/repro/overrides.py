"""Nested ``--config`` overrides, typed as the schema says before the config is validated.

Snakemake reads ``--config key=value`` with YAML's BaseLoader, which keeps every scalar inside a
mapping a string: ``--config 'measure={"batch": [4]}'`` arrives as ``{"measure": {"batch": ["4"]}}``
(merged key by key into the configfile's ``measure``) and then fails validation with
"'4' is not of type 'integer'". Here each such string is read as YAML again and kept typed when the
schema allows that type at its place; anything else stays as given, so a bad value still fails
validation with the key's path. Flat values (``--config run_name=x``) Snakemake types itself.
Imported by the Snakefile at parse time: no torch, transformers or matplotlib.
"""

from __future__ import annotations

from collections.abc import Mapping

import yaml

JSON_TYPES = {
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "string": lambda v: isinstance(v, str),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


def allows(schema: dict, value) -> bool:
    """Whether ``schema``'s ``enum`` or ``type`` admits ``value`` (nested keywords are not checked)."""
    if "enum" in schema:
        return any(value == e and type(value) is type(e) for e in schema["enum"])
    types = schema.get("type", [])
    return any(JSON_TYPES[t](value) for t in ([types] if isinstance(types, str) else types))


def typed_scalar(text: str, schema: dict):
    """``text`` as YAML reads it when that is a non-string the schema allows here, else ``text``."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if not isinstance(value, str) and allows(schema, value) else text


def retype(value, schema: dict):
    """``value`` from the command line with its string leaves typed as ``schema`` says."""
    if isinstance(value, str):
        return typed_scalar(value, schema)
    if isinstance(value, Mapping):
        extra = schema.get("additionalProperties")
        default = extra if isinstance(extra, dict) else {}
        return {k: retype(v, schema.get("properties", {}).get(k, default)) for k, v in value.items()}
    if isinstance(value, list):
        return [retype(v, schema.get("items", {})) for v in value]
    return value


def set_leaves(config: dict, typed: Mapping) -> None:
    """Write ``typed`` into ``config`` leaf by leaf, keeping the keys ``typed`` does not name."""
    for key, value in typed.items():
        if isinstance(value, Mapping) and isinstance(config.get(key), dict):
            set_leaves(config[key], value)
        else:
            config[key] = value


def type_overrides(config: dict, overrides: Mapping, schema: dict) -> None:
    """Replace the values ``--config`` gave (``overrides``, already merged into ``config``) by their
    typed forms; ``config`` is changed in place."""
    set_leaves(config, retype(dict(overrides), schema))
