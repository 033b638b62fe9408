"""The installable package: pyproject.toml, the pinned locks, the shipped config files, and (slow) a
wheel built and installed into a fresh virtual environment, run from outside the repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from medusa_roofline.core.paths import shipped_config_dir

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
SELF = canonicalize_name(PYPROJECT["project"]["name"])


def read_lock(path: Path) -> dict[str, str]:
    """name -> pinned version of a requirements file, following `-r` includes."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r"):
            pins.update(read_lock(path.parent / line[2:].strip()))
        elif line:
            name, sep, version = line.partition("==")
            assert sep, f"{path.name}: {line!r} is not pinned with =="
            pins[canonicalize_name(name)] = version.strip()
    return pins


def declared(*groups: str) -> list[Requirement]:
    """Requirements of pyproject's dependencies ('') and the named extras, without self-references."""
    reqs = []
    for group in groups:
        items = PYPROJECT["project"]["dependencies"] if group == "" else \
            PYPROJECT["project"]["optional-dependencies"][group]
        reqs += [r for r in map(Requirement, items) if canonicalize_name(r.name) != SELF]
    return reqs


def test_lock_pins_satisfy_every_declared_requirement():
    lock = read_lock(REPO / "requirements-dev.txt")
    for req in declared("", *PYPROJECT["project"]["optional-dependencies"]):
        name = canonicalize_name(req.name)
        assert name in lock, f"{req} is declared in pyproject.toml but not pinned in the lock"
        assert req.specifier.contains(lock[name]), f"lock pins {name}=={lock[name]}, outside {req}"


def test_runtime_lock_is_the_runtime_and_workflow_dependencies_only():
    runtime = set(read_lock(REPO / "requirements.txt"))
    assert runtime == {canonicalize_name(r.name) for r in declared("", "workflow")}
    dev_only = set(read_lock(REPO / "requirements-dev.txt")) - runtime
    # black: pinned because snakefmt formats with it (a dependency of snakefmt, not ours).
    assert dev_only == {canonicalize_name(r.name) for r in declared("test", "lint")} - runtime | {"black"}
    assert "-r ../requirements.txt" in (REPO / "envs" / "workflow.yaml").read_text()


def test_pyproject_lists_every_subpackage():
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "medusa_roofline").rglob("__init__.py")}
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    assert listed - {"medusa_roofline._config"} == on_disk
    assert PYPROJECT["tool"]["setuptools"]["package-dir"] == {"medusa_roofline._config": "config"}


def test_the_wheel_ships_every_config_file():
    """Every file of config/ matches a package-data glob, so an installed package can read it."""
    config = REPO / "config"
    globs = PYPROJECT["tool"]["setuptools"]["package-data"]["medusa_roofline._config"]
    shipped = {p for pattern in globs for p in config.glob(pattern) if p.is_file()}
    assert shipped == {p for p in config.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def test_config_dir_is_the_clones_when_there_is_one(tmp_path):
    installed = tmp_path / "site-packages" / "medusa_roofline" / "_config"
    assert shipped_config_dir(tmp_path, installed) == installed
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "hardware.yaml").write_text("{}")
    assert shipped_config_dir(tmp_path, installed) == installed  # a config/ without a Snakefile
    (tmp_path / "Snakefile").write_text("")
    assert shipped_config_dir(tmp_path, installed) == tmp_path / "config"


def run(cmd, cwd, timeout=300):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{cmd}: exit {out.returncode}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def not_source(directory, names):
    """What a copy of the tree leaves out: VCS and caches anywhere, run outputs at the top."""
    top = {"results", ".snakemake", "build", "dist", "regenerated", "report.html"} if Path(directory) == REPO else set()
    return {n for n in names if n in top or n in {".git", "__pycache__", ".pytest_cache", ".ruff_cache"}
            or n.endswith(".egg-info")}


@pytest.mark.slow
def test_wheel_and_editable_installs_work_outside_the_repository(tmp_path):
    """Build the wheel from a copy of the tree, install it into a fresh venv (system site-packages:
    torch is not downloaded again) and run the console command from an unrelated directory."""
    src, elsewhere = tmp_path / "src", tmp_path / "elsewhere"
    shutil.copytree(REPO, src, ignore=not_source)
    elsewhere.mkdir()
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-build-isolation", "--no-deps",
         "-w", tmp_path / "dist", src], tmp_path)
    wheel, = (tmp_path / "dist").glob("medusa_roofline-*.whl")
    venv = tmp_path / "venv"
    # No pip of its own: this pip installs into it, and builds with the (visible) system setuptools.
    run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv], tmp_path)
    python, command = venv / "bin" / "python", venv / "bin" / "medusa-roofline"
    pip = [sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps"]
    run(pip + ["--no-index", wheel], tmp_path)

    where = run([python, "-c", "import medusa_roofline, medusa_roofline.core.paths as p; "
                 "print(medusa_roofline.__file__); print(p.CONFIG_DIR)"], elsewhere).split()
    assert all(Path(w).is_relative_to(venv) for w in where), where
    assert (Path(where[1]) / "hardware.yaml").is_file()
    assert "generate" in run([command, "--help"], elsewhere) and "regenerate" in run([command, "--help"], elsewhere)
    for sub in ("generate", "regenerate"):
        assert "usage: medusa-roofline " + sub in run([command, sub, "--help"], elsewhere)
    out = run([command, "generate", "--model", "tiny", "--max-new-tokens", "4"], elsewhere)
    assert "identical: yes" in out

    run(pip + ["--no-build-isolation", "-e", src], tmp_path)
    where = run([python, "-c", "import medusa_roofline.core.paths as p; print(p.__file__); print(p.CONFIG_DIR)"],
                elsewhere).split()
    assert where == [str(src / "medusa_roofline" / "core" / "paths.py"), str(src / "config")]
    assert "generate" in run([command, "--help"], elsewhere)
