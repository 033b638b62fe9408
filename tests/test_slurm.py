"""The Slurm and local workflow profiles, and the Slurm end-to-end check (tests/slurm/run.sh).

The profile and comparison tests are fast and always run. The end-to-end test installs and
starts a single-node Slurm cluster (root, Debian, ~1.5-3 min), so it only runs when asked:

    MEDUSA_SLURM_TEST=1 pytest tests/test_slurm.py
    MEDUSA_SLURM_TEST=1 MEDUSA_SLURM_TEST_CONFIG=tests/slurm/real-tiny.yaml pytest tests/test_slurm.py -k real
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SLURM_PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
DEFAULT_PROFILE = REPO / "profiles" / "default" / "config.yaml"
RUN_SH = REPO / "tests" / "slurm" / "run.sh"
COMPARE = REPO / "tests" / "slurm" / "compare.py"
FIXTURE = REPO / "tests" / "slurm" / "fixture"
SITE_VARS = (
    "MEDUSA_SLURM_PARTITION", "MEDUSA_SLURM_GPU_PARTITION", "MEDUSA_SLURM_ACCOUNT",
    "MEDUSA_SLURM_GPU_MODEL", "MEDUSA_SLURM_EXTRA", "MEDUSA_SLURM_GPU_EXTRA",
)


def parse_profile(path: Path, monkeypatch, **env) -> dict:
    """The profile as Snakemake reads it (YTE evaluated, resources flattened to CLI strings)."""
    from snakemake.profiles import ProfileConfigFileParser

    for name in SITE_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with path.open() as fh:
        return dict(ProfileConfigFileParser().parse(fh))


def test_default_profile_is_local_only(monkeypatch):
    prof = parse_profile(DEFAULT_PROFILE, monkeypatch)
    assert prof["cores"] == "all"
    assert "executor" not in prof and "default-resources" not in prof
    assert prof["resources"] == ["gpu=1"]


def test_slurm_profile_without_site_variables(monkeypatch):
    prof = parse_profile(SLURM_PROFILE, monkeypatch)
    assert prof["executor"] == "slurm"
    assert int(prof["jobs"]) >= 1
    assert prof["default-resources"] == ["mem_mb=4000", "runtime=60"]
    # no partition/account/gpu_model unless the site sets them
    assert not any("slurm_partition" in r or "slurm_account" in r or "gpu_model" in r for r in prof["set-resources"])
    measuring = ("ceilings", "microbench", "sweep")
    assert sorted(r for r in prof["set-resources"] if "runtime" in r) == [f"{m}:runtime=240" for m in measuring]
    extra = dict(r.split("=", 1) for r in prof["set-resources"] if "slurm_extra" in r)
    for rule in measuring:  # a measuring job never shares its node: exclusive on GPU and CPU
        assert evaluate(extra[f"{rule}:slurm_extra"], "cuda") == evaluate(extra[f"{rule}:slurm_extra"], "cpu") == (
            "--exclusive")


def test_slurm_profile_site_variables(monkeypatch):
    prof = parse_profile(
        SLURM_PROFILE, monkeypatch,
        MEDUSA_SLURM_PARTITION="all", MEDUSA_SLURM_GPU_PARTITION="gpu", MEDUSA_SLURM_ACCOUNT="123456",
        MEDUSA_SLURM_GPU_MODEL="h100", MEDUSA_SLURM_GPU_EXTRA="--exclusive --nice=5",
    )
    # string literals, so Snakemake's eval() keeps them strings ("all" is a builtin, 123456 an int)
    assert "slurm_partition='all'" in prof["default-resources"]
    assert "slurm_account='123456'" in prof["default-resources"]
    gpu = dict(r.split("=", 1) for r in prof["set-resources"])
    for rule in ("sweep", "microbench", "ceilings"):
        assert evaluate(gpu[f"{rule}:slurm_partition"], "cuda") == "gpu"
        assert evaluate(gpu[f"{rule}:slurm_partition"], "cpu") == "all"
        assert evaluate(gpu[f"{rule}:gpu_model"], "cuda") == "h100"
        assert evaluate(gpu[f"{rule}:gpu_model"], "cpu") == ""
        assert evaluate(gpu[f"{rule}:slurm_extra"], "cuda") == "--exclusive --nice=5"
        assert evaluate(gpu[f"{rule}:slurm_extra"], "cpu") == "--exclusive"


def test_measuring_jobs_keep_the_site_flags_and_stay_exclusive(monkeypatch):
    prof = parse_profile(SLURM_PROFILE, monkeypatch, MEDUSA_SLURM_EXTRA="--mail-type=FAIL")
    extra = dict(r.split("=", 1) for r in prof["set-resources"] if "slurm_extra" in r)
    assert evaluate(extra["sweep:slurm_extra"], "cuda") == "--exclusive --mail-type=FAIL"
    assert evaluate(extra["sweep:slurm_extra"], "cpu") == "--exclusive --mail-type=FAIL"


def evaluate(expression: str, device: str):
    """A set-resources value as Snakemake evaluates it for a job with this device wildcard."""
    from snakemake.iocontainers import Wildcards
    from snakemake.resources import Resource

    wildcards = Wildcards(fromdict={"model": "tiny", "device": device, "mode": "ar"})
    return Resource.cli_evaluator(
        "x", expression, wildcards=wildcards, input=[], attempt=1, async_run=None)


def test_gpu_settings_need_a_gpu_partition_variable(monkeypatch):
    prof = parse_profile(SLURM_PROFILE, monkeypatch, MEDUSA_SLURM_PARTITION="batch")
    assert "slurm_partition='batch'" in prof["default-resources"]
    assert not any("slurm_partition" in r for r in prof["set-resources"])


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def results(root: Path, analytic: str, measured: str) -> Path:
    write(root / "analytic" / "m" / "x.csv", analytic)
    write(root / "measured" / "m" / "ar.csv", measured)
    return root


def compare(a: Path, b: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(COMPARE), str(a), str(b)], capture_output=True, text=True)


def test_compare_ignores_timings(tmp_path):
    a = results(tmp_path / "a", "model,flops\nm,1\n", "model,mode,op,batch,kv_len,time_ms\nm,ar,qk,1,128,0.5\n")
    b = results(tmp_path / "b", "model,flops\nm,1\n", "model,mode,op,batch,kv_len,time_ms\nm,ar,qk,1,128,0.9\n")
    out = compare(a, b)
    assert out.returncode == 0, out.stdout
    assert "compare: OK" in out.stdout


@pytest.mark.parametrize("which", ["analytic", "key", "header", "missing"])
def test_compare_detects_differences(tmp_path, which):
    head = "model,mode,op,batch,kv_len,time_ms\n"
    a = results(tmp_path / "a", "model,flops\nm,1\n", head + "m,ar,qk,1,128,0.5\n")
    b = results(
        tmp_path / "b",
        "model,flops\nm,2\n" if which == "analytic" else "model,flops\nm,1\n",
        {"key": head + "m,ar,qk,2,128,0.5\n",
         "header": "model,mode,op,batch,kv_len,t\nm,ar,qk,1,128,0.5\n"}.get(which, head + "m,ar,qk,1,128,0.5\n"),
    )
    if which == "missing":
        write(b / "measured" / "m" / "medusa.csv", head)
    out = compare(a, b)
    assert out.returncode == 1, out.stdout


def run_sh(*args: str, **env: str) -> subprocess.CompletedProcess:
    out = subprocess.run(["bash", str(RUN_SH), *args], cwd=REPO, capture_output=True, text=True, timeout=7200,
                         env=dict(os.environ, **env))
    sys.stdout.write(out.stdout[-6000:])
    sys.stderr.write(out.stderr[-3000:])
    return out


slurm_e2e = pytest.mark.skipif(
    os.environ.get("MEDUSA_SLURM_TEST") != "1",
    reason="starts a Slurm cluster as root; set MEDUSA_SLURM_TEST=1 to run",
)


def last_word(out: subprocess.CompletedProcess) -> str:
    lines = out.stdout.strip().splitlines()
    return lines[-1] if lines else ""


@slurm_e2e
def test_slurm_fixture_end_to_end():
    out = run_sh(str(FIXTURE / "config.yaml"), str(FIXTURE), SLURM_TEST_MIN_GPU_JOBS="2")
    if last_word(out) == "SKIPPED":
        pytest.skip("run.sh skipped: " + out.stdout.strip().splitlines()[-2])
    assert out.returncode == 0 and last_word(out) == "PASS"


@slurm_e2e
def test_slurm_fixture_failure_is_reported():
    out = run_sh(str(FIXTURE / "config_fail.yaml"), str(FIXTURE))
    if last_word(out) == "SKIPPED":
        pytest.skip("run.sh skipped")
    assert out.returncode == 1 and last_word(out) == "FAIL"
    assert "slurm run exited with 1" in out.stdout  # the local run passed; Slurm's failed
    kept = re.search(r"work directory kept: (/tmp/medusa-slurm-test\.\w+)", out.stdout)
    if kept:  # expected failure: nothing to debug
        shutil.rmtree(kept.group(1), ignore_errors=True)


@slurm_e2e
@pytest.mark.skipif(not os.environ.get("MEDUSA_SLURM_TEST_CONFIG"), reason="set MEDUSA_SLURM_TEST_CONFIG")
def test_slurm_real_workflow_end_to_end():
    out = run_sh(os.environ["MEDUSA_SLURM_TEST_CONFIG"])
    if last_word(out) == "SKIPPED":
        pytest.skip("run.sh skipped")
    assert out.returncode == 0 and last_word(out) == "PASS"
