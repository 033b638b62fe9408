"""Where the repository is, and how a path the user configured is found."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def configured_path(value: str | Path, basedir: str | Path = REPO_ROOT) -> Path:
    """A configured path as Snakemake resolves ``configfile:``: as given when absolute or when it
    exists relative to the working directory, else relative to the repository (``basedir``)."""
    path = Path(value).expanduser()
    if path.is_absolute() or path.exists():
        return path
    return Path(basedir) / path
