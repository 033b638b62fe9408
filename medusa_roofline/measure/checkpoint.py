"""Per-point checkpoints, so a long measuring job that is killed resumes instead of starting over.

A measuring job (one sweep mode, or one micro-benchmark) saves the rows of every point it has
measured as one small JSON file, written atomically, under its own checkpoint directory
(scripts use :func:`checkpoint_dir_for`: ``results/.checkpoints/<output path without suffix>``).
A rerun of the same job loads those points instead of measuring them again and logs how many
it resumed; after the job has written its table, the directory is removed.

Points are only reused when everything that determines their measurement is the same: the
directory holds one subdirectory per *key digest*, a hash of the model (config.json contents,
weight files' names, sizes and mtimes), mode(s), dtype, device and its name, instantiated
layers, reps, warm-up, seed, L2 flush, memory cap, CPU threads, acceptance-table contents,
torch/transformers versions and the source of the measuring code. A rerun with any of these
changed measures from scratch (and removes the stale subdirectory). The grid is deliberately
not part of the key: growing the grid after a kill reuses the points already measured.

A point file read back is untrusted: it carries an integrity record (the key digest, code digest
and device that produced it, and a sha256 over its point, rows and that fingerprint), and a file
whose record is missing or does not verify is removed with a warning naming it and measured
again. This catches corruption, hand edits and files from other code, settings or devices; it is
not a signature (whoever can write the file can recompute the sha256).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np

from ..core.io import atomic_write_bytes, sha256_file
from ..decoding.tree import acceptance_array
from ..models.source import checkpoint_weights, is_preset, resolve_source

log = logging.getLogger("medusa_roofline.checkpoint")

KEY_FILE = "key.json"
CHECKPOINTS = ".checkpoints"


def model_fingerprint(source: str) -> dict:
    """What identifies a model source: its config.json contents and its weight files (by stat)."""
    directory = resolve_source(source)
    weights = checkpoint_weights(source)
    return {
        "source": source if is_preset(source) else str(directory),
        "config_sha256": sha256_file(directory / "config.json"),
        "weights": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in weights],
    }


def acceptance_fingerprint(table) -> str:
    """Hash of an acceptance table's values (given as a path, None for the default table, or an array)."""
    arr = np.ascontiguousarray(acceptance_array(table))
    return hashlib.sha256(repr(arr.shape).encode() + arr.tobytes()).hexdigest()


def key_digest(key: dict) -> str:
    text = json.dumps(key, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def content_digest(point, rows, produced_by: dict) -> str:
    """sha256 over a point's rows and the fingerprint of what produced them (canonical JSON)."""
    text = json.dumps({"point": point, "rows": rows, "produced_by": produced_by}, sort_keys=True,
                      separators=(",", ":"), default=_json_default)
    return hashlib.sha256(text.encode()).hexdigest()


def checkpoint_dir_for(output: str | Path) -> Path:
    """The checkpoint directory of the job writing ``output``.

    ``results/measured/tiny/cpu/ar.csv`` -> ``results/.checkpoints/measured/tiny/cpu/ar``; an
    output outside a ``results`` directory gets ``<its directory>/.checkpoints/<its stem>``.
    """
    output = Path(output)
    parts = output.parts
    if "results" in parts[:-1]:
        i = parts.index("results")
        rest = Path(*parts[i + 1:])
        return Path(*parts[: i + 1]) / CHECKPOINTS / rest.with_suffix("")
    return output.parent / CHECKPOINTS / output.stem


def _json_default(obj):
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    return str(obj)


def _point_name(point) -> str:
    return "point-" + "_".join(str(p) for p in point) + ".json"


class Checkpoint:
    """The saved points of one job under one key. Use :func:`open_checkpoint`."""

    def __init__(self, root: str | Path, key: dict):
        self.root = Path(root)
        self.key = key
        self.digest = key_digest(key)
        self.dir = self.root / self.digest
        self.produced_by = {"key": self.digest, **{k: str(key.get(k)) for k in ("code", "device", "device_name")}}
        self.resumed = 0
        if self.root.is_dir():
            for stale in self.root.iterdir():
                if stale.name != self.digest:
                    log.info("checkpoint: removing %s (saved under other settings or code)", stale)
                    _remove(stale)
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.dir / KEY_FILE,
                           (json.dumps(key, indent=2, sort_keys=True, default=str) + "\n").encode())

    def load(self, point) -> list[dict] | None:
        """The rows saved for ``point``, or None: not measured yet, or a file that does not verify
        (unreadable, another point's, no or a wrong integrity record), which is removed with a
        warning naming it and never used."""
        path = self.dir / _point_name(point)
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
            if data["point"] != [_plain(p) for p in point] or not isinstance(data["rows"], list):
                raise ValueError(f"holds point {data['point']}")
            self._verify(data)
            rows = data["rows"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("checkpoint: %s does not verify (%s); measuring the point again", path, exc)
            path.unlink(missing_ok=True)
            return None
        for row in rows:  # JSON has no NaN for None; keep NaN times NaN
            for col, value in row.items():
                if value is None and col.startswith("time_s_"):
                    row[col] = math.nan
        self.resumed += 1
        return rows

    def _verify(self, data: dict) -> None:
        """The file's integrity record: written under this key, by this code and device, content unchanged."""
        record = data.get("integrity")
        if not isinstance(record, dict):
            raise ValueError("no integrity record")
        if record.get("produced_by") != self.produced_by:
            raise ValueError(f"produced by {record.get('produced_by')}, not by {self.produced_by}")
        if record.get("sha256") != content_digest(data["point"], data["rows"], self.produced_by):
            raise ValueError("its content does not match its sha256 (edited or corrupted)")

    def save(self, point, rows: list[dict]) -> None:
        body = json.loads(json.dumps({"point": [_plain(p) for p in point], "rows": rows}, default=_json_default))
        body["integrity"] = {"produced_by": self.produced_by,
                             "sha256": content_digest(body["point"], body["rows"], self.produced_by)}
        atomic_write_bytes(self.dir / _point_name(point), json.dumps(body).encode())

    def points(self) -> list[Path]:
        return sorted(self.dir.glob("point-*.json"))

    def log_resumed(self, total: int, what: str) -> None:
        if self.resumed:
            log.info("%s: resumed %d of %d points from checkpoint %s", what, self.resumed, total, self.dir)
        else:
            log.info("%s: no points to resume; checkpointing %d points under %s", what, total, self.dir)


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def open_checkpoint(checkpoint_dir: str | Path | None, key: dict) -> Checkpoint | None:
    return None if checkpoint_dir is None else Checkpoint(checkpoint_dir, key)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove(checkpoint_dir: str | Path | None) -> None:
    """Remove a job's checkpoint directory after its output is written, and empty parents up to ``.checkpoints``."""
    if checkpoint_dir is None:
        return
    path = Path(checkpoint_dir)
    if path.exists():
        _remove(path)
        log.info("checkpoint: removed %s", path)
    parent = path.parent
    while parent.name and CHECKPOINTS in parent.parts:
        try:
            parent.rmdir()
        except OSError:
            break
        if parent.name == CHECKPOINTS:
            break
        parent = parent.parent
