"""Where the repository is, where the shipped config files are, how a configured path is found, and how
an untrusted relative name is kept inside its root.

The presets, the default acceptance table and the hardware table live in the repository's top-level
``config/``. From a clone (or an editable install) the package reads them there; an installed wheel
carries the same files as package data in ``medusa_roofline/_config`` (pyproject.toml maps ``config/``
there at build time, so git holds one copy).
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import IntegrityError

PACKAGE_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = PACKAGE_DIR.parent
INSTALLED_CONFIG_DIR = PACKAGE_DIR / "_config"


def in_clone(root: Path = REPO_ROOT) -> bool:
    """True when the package sits in a checkout of the workflow (Snakefile and config/ beside it)."""
    return (root / "Snakefile").is_file() and (root / "config" / "hardware.yaml").is_file()


def shipped_config_dir(root: Path = REPO_ROOT, installed: Path = INSTALLED_CONFIG_DIR) -> Path:
    """The shipped ``config/`` folder: the clone's when there is one, else the wheel's copy."""
    return root / "config" if in_clone(root) else installed


CONFIG_DIR = shipped_config_dir()


def configured_path(value: str | Path, basedir: str | Path = REPO_ROOT) -> Path:
    """A configured path as Snakemake resolves ``configfile:``: as given when absolute or when it
    exists relative to the working directory, else relative to the repository (``basedir``)."""
    path = Path(value).expanduser()
    if path.is_absolute() or path.exists():
        return path
    return Path(basedir) / path


_DRIVE = re.compile(r"[A-Za-z]:")


def safe_relative_name(name, what: str) -> str:
    """``name`` checked to be a plain relative POSIX path that stays below its root.

    Refused (IntegrityError naming ``what`` and the name): empty or non-string names, absolute
    paths, Windows drive or backslash paths, ``.``/``..``/empty parts, control characters.
    Untrusted names (archive members, manifest lines, recipe outputs) pass here before any use."""
    if not isinstance(name, str) or not name:
        raise IntegrityError(f"{what}: {name!r} is not a file name")
    problem = None
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        problem = "holds a control character"
    elif name.startswith("/"):
        problem = "is an absolute path"
    elif "\\" in name or _DRIVE.match(name):
        problem = "is a Windows path (drive letter or backslash)"
    elif any(part in ("", ".", "..") for part in name.split("/")):
        problem = "has an empty, '.' or '..' part"
    if problem:
        raise IntegrityError(f"{what}: {name!r} {problem}; only relative paths below the root are allowed")
    return name


def contained(root: str | Path, name: str, what: str) -> Path:
    """``root/name`` with symlinks resolved, refused unless it stays inside ``root`` (resolved too)."""
    base = Path(root).resolve()
    path = (base / safe_relative_name(name, what)).resolve()
    if not path.is_relative_to(base):
        raise IntegrityError(f"{what}: {name!r} resolves to {path}, outside {base} (a symbolic link?)")
    return path
