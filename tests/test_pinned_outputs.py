"""The default config's analytic tables and analytic figure CSVs, byte for byte.

These files are the reproduction of the paper's charts; a refactoring must not change a byte of
them. A change that is meant to change them (a new column, a renamed series) updates the pins here
in the same commit, and says why in its message.
"""

from __future__ import annotations

import hashlib

import pytest
import yaml
from conftest import REPO, run_snakemake

PINNED = {
    "results/analytic/llama-33b/a100-80gb-pcie.csv": "199896f5eab318be673165a49edf60f73b7af53434ca59d4c075b0da78b3940d",
    "results/analytic/llama-33b/a40.csv": "249634fdc9ab36bc4902e985e3c7913d253d4f9491b619f35ed566db375fc44e",
    "results/figures/llama-33b/a100-80gb-pcie/qkpv_medusa.csv": "4173f5a18b41c072924ce74e64055570e083bbe7bc43afa56ee93a983c43125b",
    "results/figures/llama-33b/a40/qkpv_medusa.csv": "676042a5aae213ea0e20c7f56253ebd03a6145cd45fe95e0c830815ba2373291",
    "results/figures/llama-33b/a100-80gb-pcie/all_ops.csv": "62742977b927fe2d26daed89e351f22230b72f558844c9c312314c258b93a9f2",
    "results/figures/llama-33b/a40/all_ops.csv": "3610bd0422e5c977bf149f16ffe334fe7ac3dc4f4ab39e858b9f03ead87bb870",
    "results/figures/llama-33b/a100-80gb-pcie/mlp_spec.csv": "9fcc3e290ce52308a03804d5b04dd5414328b93001b8585f1a03b890906507b4",
    "results/figures/llama-33b/a40/mlp_spec.csv": "d687ef7c7fe72855ac1b2b976b76a6f8bcd9cabb22bbdb14980a5f7b15751cf9",
    "results/figures/llama-7b/a100-80gb-pcie/speedup.csv": "c55064505e274be4289f77e7d9bc7fdf6e992931b91900d094279c8d4b0f9912",
}


@pytest.mark.workflow
def test_default_analytic_outputs_are_pinned(tmp_path):
    """The shipped default config builds the pinned bytes (only these targets: nothing is measured)."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert config["analytic"]["models"] == ["llama-33b"], "the pins are for the shipped default config"
    run = run_snakemake(tmp_path, None, *PINNED, "--configfile", str(REPO / "config" / "config.yaml"))
    assert run.returncode == 0, run.stderr[-3000:]
    got = {path: hashlib.sha256((tmp_path / path).read_bytes()).hexdigest() for path in PINNED}
    changed = sorted(path for path in PINNED if got[path] != PINNED[path])
    assert not changed, f"changed bytes: {changed}"
