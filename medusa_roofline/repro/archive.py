"""Archive a run, and regenerate every figure from an archive alone.

``snakemake --archive`` packs code and config but not results; :func:`pack_run` packs exactly what
the figures came from: every result of the run (figures, points CSVs, recipes, analytic/measured/
micro-benchmark/metrics tables, ``spec.json`` files, ceilings), the files outside ``results/`` the
figures read (hardware table, acceptance tables, model ``config.json`` files: shapes, no weights),
the resolved config, a provenance record and a sha256 manifest of every member.

Members keep their path relative to the working directory; files outside it are stored under
``repo/`` (inside the repository) or ``external/`` (anywhere else, by absolute path), and
``inputs.json`` maps each path as a recipe records it to its member, so :func:`regenerate` can
redraw every figure from its recipe with no model, no GPU and no workflow. An archive read back
is untrusted: :mod:`.verify` checks it whole before :func:`regenerate` writes anything.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import platform
import socket
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import pandas as pd
import yaml

from ..core.errors import EXIT_DIFFERENT, EXIT_TAMPERED, ConfigError, IntegrityError
from ..core.io import sha256_file
from ..core.paths import REPO_ROOT, safe_relative_name
from ..core.provenance import git_commit, git_dirty
from ..results.render import RECIPE_SUFFIX, load_recipe, recorded_path, render_recipe
from .verify import INPUTS, MANIFEST, check_unpacked, read_manifest, unpack, verify_manifest  # noqa: F401 (API)

CONFIG = "config.resolved.yaml"
PROVENANCE = "provenance.json"
META = (MANIFEST, CONFIG, PROVENANCE, INPUTS)


# ----------------------------------------------------------------------------------- provenance


def installed_packages() -> list[str]:
    """`pip freeze` without a subprocess: name==version of every installed distribution."""
    pkgs = {(d.metadata["Name"] or "").lower(): d.version for d in metadata.distributions()}
    return [f"{name}=={version}" for name, version in sorted(pkgs.items()) if name]


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return ""


def nvidia_driver() -> str:
    path = Path("/proc/driver/nvidia/version")
    try:
        return path.read_text().splitlines()[0].strip() if path.is_file() else ""
    except (OSError, IndexError):
        return ""


MEASURED_FIELDS = ("bench", "device", "device_name", "cuda", "torch", "transformers", "hostname", "git_commit",
                   "git_dirty")


def measured_devices(members: dict[str, Path]) -> list[dict]:
    """Distinct (device, device_name, cuda, torch, hostname, commit, ...) of the measured/microbench CSVs."""
    seen: list[dict] = []
    for name, path in sorted(members.items()):
        parts = Path(name).parts
        if name.endswith(".csv") and parts[:1] == ("results",) and parts[1:2] in (("measured",), ("microbench",)):
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
            cols = [c for c in MEASURED_FIELDS if c in df.columns]
            for row in df[cols].drop_duplicates().to_dict("records"):
                if row not in seen:
                    seen.append(row)
    return seen


def ceilings_devices(members: dict[str, Path]) -> list[dict]:
    """Device name, driver, CUDA/torch versions and platform of every ceilings JSON."""
    out = []
    for name, path in sorted(members.items()):
        if name.startswith("results/ceilings/") and name.endswith(".json"):
            data = json.loads(Path(path).read_text())
            versions = data.get("versions", {})
            out.append({
                "file": name, "device": data.get("device"), "device_name": data.get("device_name"),
                "driver": data.get("driver"), "compute_capability": data.get("compute_capability"),
                "cuda": versions.get("cuda"), "torch": versions.get("torch"), "platform": data.get("platform"),
            })
    return out


def model_specs(members: dict[str, Path]) -> list[dict]:
    """What each measured model was (source, device, dtype, file hashes), from its spec.json."""
    out = []
    for name, path in sorted(members.items()):
        if name.startswith("results/models/") and name.endswith("/spec.json"):
            spec = json.loads(Path(path).read_text())
            out.append({"file": name, **{k: spec.get(k) for k in ("model", "source", "device", "dtype", "weights",
                                                                   "layers_instantiated", "sha256")}})
    return out


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")


def run_provenance(members: dict[str, Path], resolved: dict | None = None, repo: Path | str = REPO_ROOT) -> dict:
    """Where and when the archived results came from: git, packages, devices, hosts, file times."""
    times = {name: _utc(Path(path).stat().st_mtime) for name, path in sorted(members.items())}
    stamps = sorted(times.values())
    measured = measured_devices(members)
    return {
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "results_written_utc": {"first": stamps[0] if stamps else None, "last": stamps[-1] if stamps else None},
        "file_mtimes_utc": times,
        "git": {"commit": git_commit(repo), "dirty": git_dirty(repo)},
        "archived_on": {
            "hostname": socket.gethostname(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "nvidia_driver": nvidia_driver(),
            "snakemake": _version("snakemake"),
        },
        "hostnames": sorted({socket.gethostname()} | {r["hostname"] for r in measured if r.get("hostname")}),
        "measured_devices": measured,
        "ceilings": ceilings_devices(members),
        "models": model_specs(members),
        "resolved": resolved or {},
        "packages": installed_packages(),
    }


# ---------------------------------------------------------------------------------------- members


def member_name(path: str | Path, cwd: str | Path | None = None, repo: str | Path = REPO_ROOT) -> str:
    """Where a file lives in the archive: relative to the working directory when inside it, else
    ``repo/<path in the repository>``, else ``external/<absolute path>``."""
    cwd = Path(os.getcwd() if cwd is None else cwd).resolve()
    p = Path(path)
    absolute = Path(os.path.normpath(p if p.is_absolute() else cwd / p))
    for base, prefix in ((cwd, ""), (Path(repo).resolve(), "repo/")):
        try:
            return prefix + absolute.relative_to(base).as_posix()
        except ValueError:
            continue
    return "external/" + absolute.as_posix().lstrip("/")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_archive(out: str | Path, members: dict[str, Path | bytes]) -> dict[str, str]:
    """A .tar.gz of ``members`` (archive name -> file or bytes) plus a sha256 manifest of them all.

    Members are sorted with zeroed owners and times, so the layout is reproducible. Returns the
    manifest as a dict (name -> sha256)."""
    data = {name: (src if isinstance(src, bytes) else Path(src).read_bytes()) for name, src in members.items()}
    for name in data:
        safe_relative_name(name, "archive member")
    if MANIFEST in data:
        raise ValueError(f"archive members may not be named {MANIFEST}")
    manifest = {name: sha256_bytes(blob) for name, blob in sorted(data.items())}
    data[MANIFEST] = "".join(f"{digest}  {name}\n" for name, digest in manifest.items()).encode()

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz:
            with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for name in sorted(data):
                    info = tarfile.TarInfo(name)
                    info.size, info.mode, info.mtime = len(data[name]), 0o644, 0
                    tar.addfile(info, io.BytesIO(data[name]))
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return manifest


def _recipe_inputs(members: dict[str, Path]) -> list[str]:
    """Every input path the archived recipes record."""
    paths = []
    for name, path in sorted(members.items()):
        if name.endswith(RECIPE_SUFFIX):
            paths.extend(load_recipe(path)["inputs"].values())
    return sorted(set(paths))


def pack_run(out: str | Path, results: list[str], config_files: list[str], config: dict, resolved: dict | None = None,
             cwd: str | Path | None = None, repo: str | Path = REPO_ROOT) -> dict[str, str]:
    """Archive one run: ``results`` (paths under the working directory), ``config_files`` (hardware
    table, acceptance tables, model config.json files; anywhere), the resolved config, provenance,
    ``inputs.json`` and the manifest. Every input a recipe records must be among them, else
    ConfigError (the archive could not regenerate that figure). Returns the manifest."""
    cwd = Path(os.getcwd() if cwd is None else cwd).resolve()
    members: dict[str, Path] = {}
    inputs_map: dict[str, str] = {}
    for path in list(results) + list(config_files):
        name = member_name(path, cwd, repo)
        if name in META:
            raise ConfigError(f"archive: {path} would overwrite the archive's own {name}")
        members[name] = Path(path) if Path(path).is_absolute() else cwd / path
        recorded = recorded_path(path, cwd)
        if recorded != name:
            inputs_map[recorded] = name
    missing = [p for p in _recipe_inputs(members) if inputs_map.get(p, p) not in members]
    if missing:
        raise ConfigError(f"archive: recipes read {', '.join(missing)}, which are not among the archived files; "
                          "add them to the archive rule's inputs")
    blobs: dict[str, Path | bytes] = dict(members)
    blobs[CONFIG] = yaml.safe_dump(config, sort_keys=True).encode()
    blobs[INPUTS] = (json.dumps({"workdir": str(cwd), "repo": str(Path(repo).resolve()), "files": inputs_map},
                                indent=2, sort_keys=True) + "\n").encode()
    blobs[PROVENANCE] = (json.dumps(run_provenance(members, resolved, repo), indent=2, sort_keys=True,
                                    default=str) + "\n").encode()
    return write_archive(out, blobs)


# ---------------------------------------------------------------------------------- regenerating


@dataclass
class Regenerated:
    """What :func:`regenerate` did: figures redrawn, and everything that did not match.

    ``rejected`` (the archive failed a structural check) and ``manifest_errors`` (files whose
    sha256 differs) mean the archive was not trusted and nothing was written."""

    manifest_errors: list[str] = field(default_factory=list)
    figures: list[dict] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)

    @property
    def tampered(self) -> bool:
        return bool(self.rejected or self.manifest_errors)

    @property
    def ok(self) -> bool:
        return not (self.tampered or self.mismatches or self.errors)

    @property
    def exit_status(self) -> int:
        return EXIT_TAMPERED if self.tampered else 0 if self.ok else EXIT_DIFFERENT


def _digest(path: Path) -> str | None:
    return sha256_file(path) if path.is_file() else None


def regenerate_dir(root: str | Path, out: str | Path, formats: list[str] | None = None,
                   every_file_listed: bool = False) -> Regenerated:
    """Check an unpacked archive (:func:`~.verify.check_unpacked`) and only then redraw every figure
    from its recipe (inputs from the archive) into ``out``, comparing each points CSV's sha256
    with the manifest's. A failed check writes nothing."""
    root, out = Path(root), Path(out)
    result = Regenerated()
    try:
        checked = check_unpacked(root, out, every_file_listed)
    except IntegrityError as err:
        result.rejected.append(str(err))
        return result
    result.manifest_errors = checked.changed
    if result.tampered:
        return result
    manifest = checked.manifest
    if not checked.recipes:
        result.errors.append("the archive holds no figure recipes (*.recipe.json)")
    out_root = out.resolve()
    for planned in checked.recipes:
        try:
            written, used = render_recipe(planned.recipe, planned.reads.__getitem__, out, formats)
        except Exception as err:  # one broken recipe must not hide the others
            result.errors.append(f"{planned.name}: {type(err).__name__}: {err}")
            continue
        wrote = {Path(w).relative_to(out_root).as_posix(): Path(w) for w in written}
        same = manifest.get(planned.points) == _digest(wrote[planned.points])
        if not same:
            result.mismatches.append(planned.points)
        drawn = [name for name in wrote if not name.endswith(".csv")]
        same_files = [d for d in drawn if manifest.get(d) == _digest(wrote[d])]
        result.figures.append({"recipe": planned.name, "kind": planned.recipe["kind"], "points": planned.points,
                               "identical": same, "figure_files": drawn, "figure_files_identical": same_files,
                               "written": written, "inputs": used})
    return result


def regenerate(source: str | Path, out: str | Path, formats: list[str] | None = None) -> Regenerated:
    """:func:`regenerate_dir` on an archive file (unpacked, every member checked, to a temporary
    directory; every extracted file must be in the manifest) or on an unpacked directory."""
    source = Path(source)
    with contextlib.ExitStack() as stack:
        if source.is_dir():
            return regenerate_dir(source, out, formats)
        if not source.is_file():
            raise ConfigError(f"{source}: no such archive or directory")
        try:
            root = unpack(source, stack.enter_context(tempfile.TemporaryDirectory(prefix="medusa-archive-")))
        except IntegrityError as err:
            return Regenerated(rejected=[str(err)])
        return regenerate_dir(root, out, formats, every_file_listed=True)
