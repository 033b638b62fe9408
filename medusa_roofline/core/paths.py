"""Where the repository is, where the shipped config files are, and how a configured path is found.

The presets, the default acceptance table and the hardware table live in the repository's top-level
``config/``. From a clone (or an editable install) the package reads them there; an installed wheel
carries the same files as package data in ``medusa_roofline/_config`` (pyproject.toml maps ``config/``
there at build time, so git holds one copy).
"""

from __future__ import annotations

from pathlib import Path

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
