"""Reading a run archive back as untrusted input, before anything is written.

An archive may have been edited by anyone (and its manifest recomputed), so nothing in it is
trusted until checked here: every tar member is a regular file (or directory) with a plain
relative name; ``MANIFEST.sha256`` parses line by line and lists only such names; every listed
file matches its sha256 and every extracted file is listed; ``inputs.json`` maps only to listed
files; every recipe parses, reads only listed files and writes only below ``--out``. Every path
is resolved (symbolic links followed) and must stay inside the extraction root or ``--out``.
A failure raises :class:`IntegrityError` naming the member, file and line; digest mismatches
are collected so that all of them can be reported at once.
"""

from __future__ import annotations

import json
import os
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import ConfigError, IntegrityError
from ..core.io import sha256_file
from ..core.paths import contained, safe_relative_name
from ..results.render import RECIPE_SUFFIX, load_recipe, output_stem

MANIFEST = "MANIFEST.sha256"
INPUTS = "inputs.json"
_MANIFEST_LINE = re.compile(r"([0-9a-f]{64})  (.+)")


# ------------------------------------------------------------------------------------ unpacking


def _member_kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return "a symbolic link"
    if member.islnk():
        return "a hard link"
    return "a device, FIFO or other special file"


def checked_members(tar: tarfile.TarFile, archive: str | Path) -> list[tarfile.TarInfo]:
    """The members of ``tar`` to extract: regular files and directories with safe relative names
    (a leading ``./``, as ``tar`` writes it, is dropped). Anything else is refused, naming the member."""
    members, seen = [], set()
    for member in tar.getmembers():
        name = member.name.removeprefix("./")
        if member.isdir() and name in ("", "."):
            continue
        where = f"{archive}: member {member.name!r}"
        safe_relative_name(name, where)
        if not (member.isfile() or member.isdir()):
            raise IntegrityError(f"{where} is {_member_kind(member)}; an archive holds regular files only")
        if member.isfile():
            if name in seen:
                raise IntegrityError(f"{where} appears twice")
            seen.add(name)
        member.name = name
        members.append(member)
    return members


def unpack(archive: str | Path, dest: str | Path) -> Path:
    """Extract a .tar.gz into ``dest``: only :func:`checked_members`, never outside ``dest``."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(dest, members=checked_members(tar, archive), filter="data")
    except IntegrityError:
        raise
    except (OSError, tarfile.TarError) as err:
        raise ConfigError(f"{archive}: cannot unpack: {err}") from None
    return Path(dest)


# ------------------------------------------------------------------------------------ manifest


def read_manifest(root: str | Path) -> dict[str, str]:
    """``MANIFEST.sha256`` of an unpacked archive as {name: sha256}, every line and name checked."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise ConfigError(f"{root}: no {MANIFEST}; not an unpacked medusa-roofline archive")
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as err:
        raise IntegrityError(f"{MANIFEST}: cannot read as UTF-8 text: {err}") from None
    if lines[-1] == "":
        lines.pop()
    manifest: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        where = f"{MANIFEST} line {number}"
        match = _MANIFEST_LINE.fullmatch(line)
        if not match:
            raise IntegrityError(f"{where}: expected '<64 hex digits>  <name>', got {line[:80]!r}")
        digest, name = match.groups()
        safe_relative_name(name, where)
        if name == MANIFEST or name in manifest:
            raise IntegrityError(f"{where}: {name} is listed twice (or is the manifest itself)")
        manifest[name] = digest
    if not manifest:
        raise IntegrityError(f"{MANIFEST}: lists no files")
    return manifest


def verify_manifest(root: str | Path, manifest: dict[str, str] | None = None) -> list[str]:
    """Names whose content no longer matches the manifest (empty = intact). A name that resolves
    outside ``root`` (a symbolic link in an unpacked directory) raises IntegrityError."""
    manifest = read_manifest(root) if manifest is None else manifest
    bad = []
    for name, digest in manifest.items():
        path = contained(root, name, MANIFEST)
        if not path.is_file() or sha256_file(path) != digest:
            bad.append(name)
    return bad


def unlisted_files(root: str | Path, manifest: dict[str, str]) -> list[str]:
    """Files under ``root`` that the manifest does not list (the manifest itself aside)."""
    root = Path(root)
    found = []
    for directory, _, files in os.walk(root):
        for name in files:
            rel = (Path(directory) / name).relative_to(root).as_posix()
            if rel != MANIFEST and rel not in manifest:
                found.append(rel)
    return sorted(found)


def read_inputs_map(root: str | Path, manifest: dict[str, str]) -> dict[str, str]:
    """``inputs.json``'s ``files`` (a recipe's recorded path -> archive member), each member listed."""
    if INPUTS not in manifest:
        return {}
    try:
        data = json.loads(contained(root, INPUTS, MANIFEST).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise IntegrityError(f"{INPUTS} line {err.lineno} column {err.colno}: not valid JSON: {err.msg}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise IntegrityError(f"{INPUTS}: cannot read: {err}") from None
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict):
        raise IntegrityError(f"{INPUTS}: must be an object with a 'files' object")
    for recorded, name in files.items():
        if not isinstance(name, str) or name not in manifest:
            raise IntegrityError(f"{INPUTS}: {recorded!r} maps to {name!r}, which the manifest does not list")
    return files


# ------------------------------------------------------------------------------------- recipes


@dataclass
class Planned:
    """One recipe, checked: what it reads (inside the root) and where it writes (inside ``out``)."""

    name: str
    recipe: dict
    reads: dict[str, Path]  # recorded input path -> checked file in the archive
    points: str


@dataclass
class Checked:
    """An unpacked archive after :func:`check_unpacked`: manifest, digest mismatches, recipes."""

    manifest: dict[str, str]
    changed: list[str] = field(default_factory=list)
    recipes: list[Planned] = field(default_factory=list)


def plan_recipe(root: Path, name: str, manifest: dict[str, str], inputs_map: dict[str, str],
                out: Path) -> Planned:
    recipe = load_recipe(contained(root, name, MANIFEST), where=name)
    reads = {}
    for role, recorded in recipe["inputs"].items():
        member = inputs_map.get(recorded, recorded)
        if member not in manifest:
            raise IntegrityError(f"recipe {name}: input {role} {recorded!r} is not in the archive's manifest")
        reads[recorded] = contained(root, member, f"recipe {name}: input {role}")
    output_stem(recipe, out, f"recipe {name}")
    return Planned(name, recipe, reads, recipe["outputs"]["points"])


def check_unpacked(root: str | Path, out: str | Path, every_file_listed: bool = False) -> Checked:
    """Everything :func:`~.archive.regenerate_dir` will read or write, checked before it writes.

    Raises IntegrityError on the first structural problem (malformed manifest, inputs map or
    recipe; a path leaving ``root`` or ``out``; with ``every_file_listed``, a file the manifest
    does not list); digest mismatches are returned in ``changed`` (then no recipe is planned)."""
    root, out = Path(root), Path(out)
    checked = Checked(read_manifest(root))
    manifest = checked.manifest
    if every_file_listed:
        extra = unlisted_files(root, manifest)
        if extra:
            raise IntegrityError(f"member {extra[0]!r} is not listed in {MANIFEST}"
                                 + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))
    checked.changed = verify_manifest(root, manifest)
    if checked.changed:
        return checked
    inputs_map = read_inputs_map(root, manifest)
    writers: dict[str, str] = {}
    for name in sorted(n for n in manifest if n.endswith(RECIPE_SUFFIX)):
        planned = plan_recipe(root, name, manifest, inputs_map, out)
        if planned.points in writers:
            raise IntegrityError(f"recipe {name}: outputs.points {planned.points} is also written by "
                                 f"{writers[planned.points]}")
        writers[planned.points] = name
        checked.recipes.append(planned)
    return checked
