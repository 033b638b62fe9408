"""Figure recipes, the run archive and regenerating every figure from an archive alone.

The first tests render every figure kind in-process (no workflow, a few seconds); the last runs the
real workflow (tiny preset, micro-benchmark only), its `archive` rule, and
`python -m medusa_roofline regenerate` on the tar.gz in a fresh directory.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tarfile
from pathlib import Path

import pandas as pd
import pytest
from conftest import copy_run

from medusa_roofline.analytic.hardware import load_table
from medusa_roofline.analytic.predict import datasheet_calibration, measured_calibration
from medusa_roofline.analytic.table import analytic_table
from medusa_roofline.cli import main
from medusa_roofline.core.errors import ConfigError
from medusa_roofline.core.io import write_csv, write_json
from medusa_roofline.decoding.tree import load_acceptance_table, tree_paths_for
from medusa_roofline.models.source import model_dims
from medusa_roofline.repro import archive
from medusa_roofline.results import render
from medusa_roofline.results.best_tree import best_tree_table
from medusa_roofline.results.metrics import compute_metrics
from medusa_roofline.results.prediction import prediction_table

REPO = Path(__file__).resolve().parent.parent
HARDWARE_TABLE = REPO / "config" / "hardware.yaml"
ACCEPTANCE = REPO / "config" / "acceptance" / "default.csv"
TINY_CONFIG = REPO / "config" / "models" / "tiny" / "config.json"
PAPER_TABLE = REPO / "config" / "paper" / "qkpv_llama-33b_a100-80gb-pcie.yaml"
LAYER = ["q_proj", "k_proj", "v_proj", "o_proj", "qk", "softmax", "pv", "gate_proj", "up_proj", "down_proj"]
CEILINGS = {"device": "cpu", "device_name": "Test CPU", "bandwidth_bytes_per_s": 3e10, "peak_flops_per_s": 1.5e11,
            "bandwidth_kind": "read", "matmul": {"float32": {"median": 1.5e11}}, "per_launch_s": 2e-6}
PLOT = {"formats": ["svg"], "dpi": 50, "width": 4.0, "height": 3.0}


def measured_rows() -> pd.DataFrame:
    rows = []
    for mode, phase, q in (("ar", "ar", 1), ("medusa-16", "medusa", 16)):
        ops = LAYER + ["lm_head"] + (["medusa_heads"] if phase == "medusa" else []) + ["step"]
        for bench in ("sweep", "microbench"):
            for s in (64, 128):
                for op in ops if bench == "sweep" else ["qk", "softmax", "pv"]:
                    rows.append({
                        "bench": bench, "model": "tiny", "device": "cpu", "device_name": "Test CPU", "mode": mode,
                        "phase": phase, "op": op, "candidates": q, "batch": 1, "kv_len": s, "q_len": q,
                        "keys": s + q, "layers": 2 if bench == "sweep" else 0, "dtype": "float32",
                        "time_s_median": 1e-5 * (1 + len(rows) % 7) * q, "status": "ok", "torch": "2.x",
                        "transformers": "5.x", "cuda": "", "git_commit": "0123456789abcdef",
                    })
    return pd.DataFrame(rows)


def figure_jobs() -> list[tuple[str, dict, dict, str]]:
    """(kind, inputs, params, stem) of every figure kind, as the workflow's rules give them."""
    hw = load_table(HARDWARE_TABLE)["a100-80gb-pcie"]
    entry = {"key": hw.key, "display_name": hw.display_name, "bandwidth": hw.bandwidth,
             "peak_flops": hw.peak_flops, "source": hw.source}
    title = "Tiny Llama, A100 80GB PCIe"
    table = {"table": "results/analytic/tiny/a100-80gb-pcie.csv"}
    fused_table = {"table": "results/analytic/tiny-fused/a100-80gb-pcie.csv"}
    measured = {"metrics": "results/metrics/tiny/cpu.csv", "ceilings": "results/ceilings/cpu.json",
                "hardware_table": str(HARDWARE_TABLE)}
    analytic = {"hardware": entry, "title": title, "dtype": "float16", "attention": "unfused", "plot": PLOT}
    fused = dict(analytic, attention="fused")
    speedup_inputs = {"model_config": str(TINY_CONFIG), "acceptance": str(ACCEPTANCE)}
    speedup = {"model": "tiny", "speedup": {"batch": 1, "kv_len": [128, 256], "max_candidates": 8},
               "medusa_heads": "tree", "per_launch_s": 3e-6}
    a, m = "results/figures/tiny/a100-80gb-pcie", "results/figures/tiny/cpu"
    return [
        ("qkpv_medusa", dict(table, paper=str(PAPER_TABLE)), analytic, f"{a}/qkpv_medusa"),
        ("qkpv_medusa_fused", fused_table, fused, f"{a}/qkpv_medusa_fused"),
        ("all_ops", table, analytic, f"{a}/all_ops"),
        ("all_ops_fused", fused_table, fused, f"{a}/all_ops_fused"),
        ("mlp_spec", table, analytic, f"{a}/mlp_spec"),
        ("speedup", speedup_inputs, dict(analytic, **speedup), f"{a}/speedup"),
        ("speedup_fused", speedup_inputs, dict(fused, **speedup), f"{a}/speedup_fused"),
        ("qkpv_medusa_measured", measured, {"model_display": "Tiny Llama", "plot": PLOT},
         f"{m}/qkpv_medusa_measured"),
        ("measured_vs_analytic", measured, {"model_display": "Tiny Llama", "plot": PLOT},
         f"{m}/measured_vs_analytic"),
        ("speedup_measured", dict(measured, acceptance=str(ACCEPTANCE), model_config=str(TINY_CONFIG)),
         {"model": "tiny", "model_display": "Tiny Llama", "batch": 1, "medusa_heads": "tree", "plot": PLOT},
         f"{m}/speedup_measured"),
        ("qkpv_backends", measured, {"model_display": "Tiny Llama", "plot": PLOT}, f"{m}/qkpv_backends"),
        ("prediction", dict(measured, prediction="results/prediction/tiny/cpu.csv"),
         {"model_display": "Tiny Llama", "plot": PLOT}, f"{m}/prediction"),
        ("best_tree", {"best_tree": "results/best_tree/tiny.csv"}, {"model_display": "Tiny Llama", "plot": PLOT},
         "results/figures/tiny/all-gpus/best_tree"),
    ]


_PACKED: dict[str, tuple] = {}
"""`packed`'s value, built once per session: test_archive_integrity imports the fixture too, and a fixture
imported into a second module is set up again there. No test changes these files: they copy first."""


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """A working directory with every figure kind rendered (figure, points, recipe), and its archive."""
    if "run" not in _PACKED:
        _PACKED["run"] = pack_every_kind(tmp_path_factory.mktemp("run"))
    return _PACKED["run"]


def pack_every_kind(work: Path) -> tuple[Path, Path, list[str]]:
    dims = model_dims("tiny")
    with contextlib.chdir(work):
        a100 = load_table(HARDWARE_TABLE)["a100-80gb-pcie"]
        for name, attention in (("tiny", "unfused"), ("tiny-fused", "fused")):
            write_csv(analytic_table("tiny", dims, a100, "float16", [16, 32], [1, 2], [128, 256], attention),
                      f"results/analytic/{name}/a100-80gb-pcie.csv")
        metrics = compute_metrics(measured_rows(), {"tiny": dims}, CEILINGS, None)
        write_csv(metrics, "results/metrics/tiny/cpu.csv")
        write_json(CEILINGS, "results/ceilings/cpu.json")
        write_csv(prediction_table(metrics, dims, [measured_calibration(CEILINGS, "float32")], 4),
                  "results/prediction/tiny/cpu.csv")
        acceptance = load_acceptance_table(ACCEPTANCE)
        write_csv(best_tree_table("tiny", dims, acceptance, datasheet_calibration(a100), "float16", [1, 2], [128], 16,
                                  tree_paths_for(8, acceptance), a100.key, a100.display_name),
                  "results/best_tree/tiny.csv")
        for kind, inputs, params, stem in figure_jobs():
            params = render.plain(params)
            fig, points = render.render(kind, inputs, params)
            render.save(fig, points, kind, inputs, params, f"{stem}.csv", f"{stem}{render.RECIPE_SUFFIX}")
        results = sorted(str(p.relative_to(work)) for p in (work / "results").rglob("*") if p.is_file())
        tarball = work / "results/archive/test.tar.gz"
        archive.pack_run(tarball, results, [str(HARDWARE_TABLE), str(ACCEPTANCE), str(TINY_CONFIG), str(PAPER_TABLE)],
                         {"run_name": "test"}, {"device": "cpu"})
    return work, tarball, results


@pytest.mark.slow  # packs a run's figures (seconds)
def test_every_kind_has_a_recipe_with_relative_inputs(packed):
    work, _, results = packed
    recipes = [p for p in results if p.endswith(render.RECIPE_SUFFIX)]
    kinds = {json.loads((work / p).read_text())["kind"]: p for p in recipes}
    assert set(kinds) == set(render.KINDS)
    recipe = json.loads((work / kinds["qkpv_medusa"]).read_text())
    assert recipe["inputs"] == {"table": "results/analytic/tiny/a100-80gb-pcie.csv",
                                "paper": PAPER_TABLE.as_posix()}  # outside the workdir: absolute
    assert recipe["params"]["attention"] == "unfused" and recipe["params"]["plot"] == PLOT
    assert recipe["outputs"] == {"figures": ["results/figures/tiny/a100-80gb-pcie/qkpv_medusa.svg"],
                                 "points": "results/figures/tiny/a100-80gb-pcie/qkpv_medusa.csv"}
    speedup = json.loads((work / kinds["speedup_measured"]).read_text())
    assert speedup["inputs"]["model_config"] == TINY_CONFIG.as_posix()  # outside the workdir: absolute


@pytest.mark.slow  # packs a run's figures (seconds)
def test_archive_holds_results_config_files_provenance_and_manifest(packed):
    work, tarball, results = packed
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
        assert all(m.mtime == 0 and m.uid == 0 for m in tar.getmembers())
        inputs = json.load(tar.extractfile(archive.INPUTS))
        prov = json.load(tar.extractfile(archive.PROVENANCE))
    assert set(results) <= names
    assert {"repo/config/hardware.yaml", "repo/config/acceptance/default.csv",
            "repo/config/models/tiny/config.json", *archive.META} <= names
    assert inputs["files"][TINY_CONFIG.as_posix()] == "repo/config/models/tiny/config.json"
    assert {"git", "packages", "hostnames", "created_utc", "file_mtimes_utc", "measured_devices"} <= set(prov)
    assert any(p.startswith("pandas==") for p in prov["packages"])


@pytest.mark.slow
def test_regenerate_from_the_tarball_alone(packed, tmp_path):
    _, tarball, _ = packed
    copy = tmp_path / "elsewhere.tar.gz"
    shutil.copy(tarball, copy)
    result = archive.regenerate(copy, tmp_path / "out")
    assert result.ok, (result.manifest_errors, result.mismatches, result.errors)
    assert {f["kind"] for f in result.figures} == set(render.KINDS)
    assert all(f["identical"] for f in result.figures)
    for fig in result.figures:  # every input came from the archive, none from the repo or the workdir
        assert not any(p.startswith(str(REPO)) for p in fig["inputs"].values()), fig["inputs"]
        assert len(pd.read_csv(tmp_path / "out" / fig["points"])) > 0, fig["points"]
        assert all(Path(p).is_file() for p in fig["written"])


@pytest.mark.slow  # packs a run's figures (seconds)
def test_tampered_files_are_reported_and_nothing_is_written(packed, tmp_path, capsys):
    _, tarball, _ = packed
    root = archive.unpack(tarball, tmp_path / "unpacked")
    points = root / "results/figures/tiny/a100-80gb-pcie/qkpv_medusa.csv"
    points.write_text(points.read_text().replace("analytic", "measured", 1))
    table = root / "results/analytic/tiny/a100-80gb-pcie.csv"
    table.write_text(table.read_text() + "\n")
    assert set(archive.verify_manifest(root)) == {str(points.relative_to(root)), str(table.relative_to(root))}
    assert main(["regenerate", str(root), "--out", str(tmp_path / "out")]) == 3  # tampered
    out, err = capsys.readouterr()
    assert "manifest: results/figures/tiny/a100-80gb-pcie/qkpv_medusa.csv" in err
    assert "manifest: results/analytic/tiny/a100-80gb-pcie.csv" in err
    assert "nothing was written" in err and not out and not (tmp_path / "out").exists()


@pytest.mark.slow  # packs a run's figures (seconds)
def test_archive_refuses_a_recipe_input_it_would_not_hold(packed, tmp_path):
    work, _, results = packed
    with contextlib.chdir(work), pytest.raises(ConfigError, match="config.json"):
        archive.pack_run(tmp_path / "x.tar.gz", results, [str(HARDWARE_TABLE), str(ACCEPTANCE)], {})


def test_member_names():
    cwd, repo = Path("/w/run"), Path("/repo")
    assert archive.member_name("results/a.csv", cwd, repo) == "results/a.csv"
    assert archive.member_name("/w/run/x/../acc.csv", cwd, repo) == "acc.csv"
    assert archive.member_name("/repo/config/hardware.yaml", cwd, repo) == "repo/config/hardware.yaml"
    assert archive.member_name("/data/m/config.json", cwd, repo) == "external/data/m/config.json"
    assert render.recorded_path("/w/run/results/a.csv", cwd) == "results/a.csv"
    assert render.recorded_path("/data/m/config.json", cwd) == "/data/m/config.json"


# ------------------------------------------------------------------------------- real workflow


@pytest.mark.workflow
def test_workflow_archive_round_trip(tmp_path, snakemake_here, shared_run, capsys):
    """A copy of the session's shared run (conftest.shared_run) is archived."""
    work, fresh = tmp_path / "work", tmp_path / "fresh"
    copy_run(shared_run, work)
    fresh.mkdir()
    config = shared_run.config
    assert config["run_name"] == "default"
    assert not (work / "results/archive").exists()  # not part of `rule all`
    figures = sorted((work / "results/figures").rglob("*.svg"))
    # qkpv_medusa, all_ops, mlp_spec on 2 GPUs; the simulated speedup; the sweep's 4 measured kinds, the
    # micro-benchmark's 3; best_tree (every GPU) of 4 models
    assert len(figures) == 3 * 2 + 1 + 4 + 3 + 4
    for fig in figures:
        assert fig.with_suffix(".csv").is_file() and fig.with_suffix(render.RECIPE_SUFFIX).is_file(), fig

    # "--": --configfile takes several values
    run = snakemake_here(work, config, "--", "archive", repo=shared_run.repo)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    tarball = work / "results/archive/default.tar.gz"
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
    for must in ("results/analytic/llama-33b/a100-80gb-pcie.csv", "results/ceilings/cpu.json",
                 "results/microbench/llama-33b/cpu.csv", "results/metrics/tiny/cpu.csv",
                 "results/figures/tiny/cpu/qkpv_medusa_measured.recipe.json",
                 "results/prediction/tiny/cpu.csv", "results/best_tree/tiny.csv",
                 "results/figures/tiny/all-gpus/best_tree.recipe.json", "repo/config/trees/mc_sim_7b_63.yaml",
                 "repo/config/hardware.yaml", "repo/config/acceptance/default.csv",
                 "repo/config/models/tiny/config.json", "repo/config/paper/qkpv_llama-33b_a100-80gb-pcie.yaml",
                 *archive.META):
        assert must in names, must

    shutil.copy(tarball, fresh / "run.tar.gz")
    with contextlib.chdir(fresh):  # in-process `python -m medusa_roofline regenerate` (no second interpreter)
        status = main(["regenerate", "run.tar.gz", "--out", "out"])
    out, err = capsys.readouterr()
    assert status == 0, out + err
    assert f"{len(figures)} of {len(figures)} points CSVs byte-identical" in out and "manifest intact" in out
    for csv in (work / "results/figures").rglob("*.csv"):
        rel = csv.relative_to(work)
        assert (fresh / "out" / rel).read_bytes() == csv.read_bytes(), rel
